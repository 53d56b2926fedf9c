"""`ImageTokenizer`: pixels <-> grids of VQ codes, on top of diffusers' `VQModel`."""

from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import torch
from PIL import Image
from torch import nn

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.vq.images import to_rgb
from lumina_mgpt.vq.patch import ARCHITECTURE as PATCH_PALETTE
from lumina_mgpt.vq.patch import PatchPaletteVQ

if TYPE_CHECKING:
    from diffusers import VQModel

Rounding = Literal["round", "truncate"]

# Bound on the [positions x codes] distance matrix built per chunk while encoding (elements).
_DISTANCE_CHUNK = 1 << 24


class ImageTokenizer(nn.Module):
    """A VQ image tokenizer: `encode` pixels in [-1, 1] to codes `[B, h, w]`, `decode` codes to pixels.

    `rounding` is the release's uint8 conversion of decoded pixels: v2 (and ours) round, v1 truncates.
    """

    def __init__(
        self, vq: "VQModel | PatchPaletteVQ", rounding: Rounding = "round", name: str = "vq"
    ) -> None:
        super().__init__()
        if rounding not in ("round", "truncate"):
            raise LuminaError(f"rounding must be 'round' or 'truncate', not {rounding!r}")
        self.vq = vq
        self.rounding: Rounding = rounding
        self.name = name

    @classmethod
    def from_config(
        cls, vqmodel_kwargs: dict[str, Any], architecture: str = "vqmodel", **kwargs: Any
    ) -> "ImageTokenizer":
        """A new tokenizer: diffusers' `VQModel(**vqmodel_kwargs)`, or our `PatchPaletteVQ` ("patch-palette")."""
        if architecture == PATCH_PALETTE:
            return cls(PatchPaletteVQ(**vqmodel_kwargs), **kwargs)
        if architecture != "vqmodel":
            raise LuminaError(f"unknown tokenizer architecture {architecture!r} (vqmodel or {PATCH_PALETTE})")
        from diffusers import VQModel  # slow to import: only for the release architectures

        return cls(VQModel(**vqmodel_kwargs), **kwargs)

    @property
    def architecture(self) -> str:
        return PATCH_PALETTE if isinstance(self.vq, PatchPaletteVQ) else "vqmodel"

    @property
    def factor(self) -> int:
        """Pixels per latent cell along each side."""
        if isinstance(self.vq, PatchPaletteVQ):
            return self.vq.config.patch_size
        return 2 ** (len(self.vq.config.block_out_channels) - 1)

    @property
    def codebook_size(self) -> int:
        return self.vq.config.num_vq_embeddings

    @property
    def codebook(self) -> torch.Tensor:
        return self.vq.quantize.embedding.weight

    def latent_shape(self, width: int, height: int) -> tuple[int, int]:
        """Grid `(h, w)` of an image of `width x height` pixels."""
        if width % self.factor or height % self.factor or width <= 0 or height <= 0:
            raise LuminaError(
                f"image size {width}x{height} is not a positive multiple of {self.factor} pixels"
            )
        return height // self.factor, width // self.factor

    def nearest_codes(self, latents: torch.Tensor) -> torch.Tensor:
        """Index of the nearest codebook vector (L2) for each cell of `latents[B, C, h, w]`."""
        b, c, h, w = latents.shape
        flat = latents.permute(0, 2, 3, 1).reshape(-1, c)
        return nearest_rows(flat, self.codebook.to(flat.dtype)).view(b, h, w)

    @torch.no_grad()
    def encode(self, pixels: torch.Tensor) -> torch.Tensor:
        """Codes `[B, h, w]` (long) of pixels `[B, 3, H, W]` in [-1, 1]; H and W multiples of `factor`."""
        if pixels.ndim != 4 or pixels.shape[1] != self.vq.config.in_channels:
            raise LuminaError(f"pixels must be [B, 3, H, W], got {list(pixels.shape)}")
        self.latent_shape(pixels.shape[3], pixels.shape[2])
        pixels = pixels.to(device=self.codebook.device, dtype=self.codebook.dtype)
        return self.nearest_codes(self.vq.encode(pixels).latents)

    def embed(self, codes: torch.Tensor) -> torch.Tensor:
        """Codebook vectors of `codes[B, h, w]` as a latent `[B, C, h, w]`."""
        if codes.ndim != 3:
            raise LuminaError(f"codes must be [B, h, w], got {list(codes.shape)}")
        in_range = codes.numel() == 0 or 0 <= codes.min() <= codes.max() < self.codebook_size
        if codes.dtype.is_floating_point or not in_range:
            raise LuminaError(f"codes must be integers in [0, {self.codebook_size})")
        return self.vq.quantize.embedding(codes.to(self.codebook.device)).permute(0, 3, 1, 2)

    @torch.no_grad()
    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        """Pixels `[B, 3, h*factor, w*factor]` (about [-1, 1], unclamped) of codes `[B, h, w]`."""
        return self.vq.decode(self.embed(codes), force_not_quantize=True).sample

    def to_pixels(self, image: Image.Image) -> torch.Tensor:
        """A PIL image as pixels `[1, 3, H, W]` in [-1, 1] (RGBA blended onto white, as both releases do)."""
        return pil_to_pixels(image).to(device=self.codebook.device, dtype=self.codebook.dtype)

    def to_image(self, pixels: torch.Tensor) -> Image.Image | list[Image.Image]:
        """Pixels `[3, H, W]` (one image) or `[B, 3, H, W]` (a list) as PIL images, with this release's rounding."""
        images = [
            Image.fromarray(a) for a in pixels_to_uint8(pixels.reshape(-1, *pixels.shape[-3:]), self.rounding)
        ]
        return images[0] if pixels.ndim == 3 else images

    def encode_image(self, image: Image.Image) -> torch.Tensor:
        """Codes `[h, w]` of one PIL image whose sides are multiples of `factor`."""
        return self.encode(self.to_pixels(image))[0]

    def decode_image(self, codes: torch.Tensor) -> Image.Image:
        """The PIL image of one code grid `[h, w]`."""
        return self.to_image(self.decode(codes[None])[0])


def nearest_rows(vectors: torch.Tensor, codebook: torch.Tensor) -> torch.Tensor:
    """Index of the nearest row (L2) of `codebook[K, C]` for each row of `vectors[N, C]`."""
    half_sq_norms = 0.5 * codebook.square().sum(1)
    rows = max(1, _DISTANCE_CHUNK // codebook.shape[0])
    # argmin |z - e|^2 = argmin (|e|^2 / 2 - z.e), computed in bounded chunks of rows.
    return torch.cat([(half_sq_norms - chunk @ codebook.T).argmin(1) for chunk in vectors.split(rows)])


def pil_to_pixels(image: Image.Image) -> torch.Tensor:
    """`[1, 3, H, W]` float32 in [-1, 1]: `x / 255 * 2 - 1` of the image's 8-bit RGB (`to_rgb`)."""
    array = np.asarray(to_rgb(image), dtype=np.float32)
    return torch.from_numpy(array / 255 * 2 - 1).permute(2, 0, 1)[None].contiguous()


def pixels_to_uint8(pixels: torch.Tensor, rounding: Rounding = "round") -> np.ndarray:
    """Pixels `[B, 3, H, W]` in [-1, 1] to `uint8[B, H, W, 3]`: clamp, `(y + 1) / 2 * 255`, round or truncate."""
    values = (pixels.detach().float().clamp(-1, 1) + 1) / 2 * 255
    values = values.round() if rounding == "round" else values.floor()
    return values.to(torch.uint8).permute(0, 2, 3, 1).cpu().numpy()
