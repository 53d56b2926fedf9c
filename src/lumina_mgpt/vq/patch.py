"""`PatchPaletteVQ`: a patch-local encoder and a small conv decoder that paints with a fixed colour palette.

Made for flat-colour worlds (the shapes world). The encoder sees one `patch_size`² patch at a time (pixel
unshuffle, then 1×1 convolutions), so a patch's code depends only on its pixels: every pure-background patch
gets the same code, and re-encoding a faithful reconstruction gives back its codes. The decoder looks at the
code grid with 3×3 convolutions (context for the boundaries), upsamples by pixel shuffles and predicts, per
pixel, logits over `output_palette`; decoding paints each pixel in its most likely palette colour (crisp flat
colours, no stray in-between shades). It has the duck-typed interface of diffusers' `VQModel` that
`ImageTokenizer` uses: `config`, `encode(x).latents`, `decode(z, force_not_quantize=True).sample`,
`quantize.embedding`.
"""

from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from lumina_mgpt.embedding import Embedding
from lumina_mgpt.errors import LuminaError
from lumina_mgpt.world.palette import BACKGROUND, COLORS, EDGE_COLOR, SEG_COLORS

ARCHITECTURE = "patch-palette"
# Every colour the shapes world paints: scene background and objects, segmentation classes, edge white.
SHAPES_PALETTE: tuple[tuple[int, int, int], ...] = tuple(
    dict.fromkeys([BACKGROUND, *COLORS.values(), *SEG_COLORS.values(), EDGE_COLOR])
)


class PatchConfig(dict):
    """The constructor's arguments, read as keys or as attributes (as diffusers' model configs are)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError:
            raise AttributeError(name) from None


@dataclass
class EncoderOutput:
    latents: torch.Tensor  # as diffusers' `VQEncoderOutput`


@dataclass
class DecoderOutput:
    sample: torch.Tensor  # as diffusers' `DecoderOutput`


class ResBlock(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.GroupNorm(8, channels)
        self.conv1 = nn.Conv2d(channels, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.conv2(F.silu(self.conv1(F.silu(self.norm(x)))))


class Quantizer(nn.Module):
    """Holds the codebook (`embedding`), under the same name as diffusers' `VectorQuantizer`."""

    def __init__(self, size: int, dim: int) -> None:
        super().__init__()
        self.embedding = Embedding(size, dim)


class PatchPaletteVQ(nn.Module):
    """Patch-local encoder -> codes -> conv decoder with palette logits (see the module docstring)."""

    def __init__(
        self,
        output_palette: list[list[int]],
        patch_size: int = 8,
        in_channels: int = 3,
        encoder_hidden: int = 256,
        vq_embed_dim: int = 8,
        num_vq_embeddings: int = 1024,
        decoder_channels: int = 128,
        decoder_blocks: int = 3,
        upsample_channels: int = 32,
        min_colour_pixels: int = 0,
    ) -> None:
        super().__init__()
        if patch_size not in (4, 8, 16):
            raise LuminaError(f"patch_size must be 4, 8 or 16, not {patch_size}")
        if len(output_palette) < 2 or any(len(c) != 3 for c in output_palette):
            raise LuminaError("output_palette must list at least two RGB colours")
        self.config = PatchConfig(
            output_palette=[list(map(int, c)) for c in output_palette],
            patch_size=patch_size,
            in_channels=in_channels,
            encoder_hidden=encoder_hidden,
            vq_embed_dim=vq_embed_dim,
            num_vq_embeddings=num_vq_embeddings,
            decoder_channels=decoder_channels,
            decoder_blocks=decoder_blocks,
            upsample_channels=upsample_channels,
            min_colour_pixels=min_colour_pixels,
        )
        n_colours, area = len(output_palette), patch_size * patch_size
        self.encoder = nn.Sequential(
            nn.PixelUnshuffle(patch_size),
            nn.Conv2d(in_channels * area, encoder_hidden, 1),
            nn.SiLU(),
            nn.Conv2d(encoder_hidden, encoder_hidden, 1),
            nn.SiLU(),
            nn.Conv2d(encoder_hidden, vq_embed_dim, 1),
        )
        self.quantize = Quantizer(num_vq_embeddings, vq_embed_dim)
        fine = 2 if patch_size > 4 else 1  # last upsampling factor, after the convolutions at fine resolution
        coarse = patch_size // fine
        self.decoder = nn.Sequential(
            nn.Conv2d(vq_embed_dim, decoder_channels, 3, padding=1),
            *[ResBlock(decoder_channels) for _ in range(decoder_blocks)],
            nn.GroupNorm(8, decoder_channels),
            nn.SiLU(),
            nn.Conv2d(decoder_channels, upsample_channels * coarse * coarse, 1),
            nn.PixelShuffle(coarse),
            nn.Conv2d(upsample_channels, upsample_channels, 3, padding=1),
            nn.SiLU(),
            nn.Conv2d(upsample_channels, n_colours * fine * fine, 1),
            nn.PixelShuffle(fine),
        )
        # computed on the CPU even when building on the meta device (where the division would import dynamo)
        palette = torch.tensor(output_palette, dtype=torch.float32, device="cpu") / 127.5 - 1
        self.register_buffer("palette", palette.to(torch.get_default_device()))  # saved with the weights too

    def encode(self, x: torch.Tensor) -> EncoderOutput:
        return EncoderOutput(latents=self.encoder(x))

    def logits(self, latents: torch.Tensor) -> torch.Tensor:
        """Per-pixel palette logits `[B, P, H, W]` of (quantised) latents `[B, D, h, w]`."""
        return self.decoder(latents)

    def paint(self, logits: torch.Tensor) -> torch.Tensor:
        """Pixels `[B, 3, H, W]` in [-1, 1]: each pixel the palette colour of its largest logit.

        With `min_colour_pixels` = n > 0, a colour that would cover fewer than n pixels of an image is not
        used in it (its pixels take their next most likely colour): no stray pixels of a third colour where
        two flat regions meet.
        """
        best = logits.argmax(1)
        if self.config.min_colour_pixels:
            counts = F.one_hot(best, logits.shape[1]).flatten(1, 2).sum(1)  # [B, P]
            rare = (counts < self.config.min_colour_pixels) & (counts < counts.amax(1, keepdim=True))
            best = logits.masked_fill(rare[:, :, None, None], float("-inf")).argmax(1)
        return self.palette.to(logits.dtype)[best].permute(0, 3, 1, 2)

    def palette_index(self, pixels: torch.Tensor) -> torch.Tensor:
        """Index `[B, H, W]` of the nearest palette colour of each pixel of `pixels[B, 3, H, W]`."""
        palette = self.palette.to(pixels.dtype)
        distance = (pixels[:, None] - palette[None, :, :, None, None]).square().sum(2)
        return distance.argmin(1)

    def decode(self, latents: torch.Tensor, force_not_quantize: bool = True) -> DecoderOutput:
        """Painted pixels of latents that are already codebook vectors (as `ImageTokenizer.decode` passes)."""
        if not force_not_quantize:
            raise LuminaError("PatchPaletteVQ.decode takes codebook vectors (force_not_quantize=True)")
        return DecoderOutput(sample=self.paint(self.logits(latents)))
