"""Training images from a folder: loading with one-line errors, random crops/resizes to the buckets, and
random patches of those (the f8 convolutions do not care about the image size, so small patches train as well
per pixel and many more images fit in a step)."""

from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError
from torch.utils.data import Dataset

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.vq.images import to_rgb

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp", ".gif", ".tif", ".tiff"}


def image_files(folder: str | Path) -> list[Path]:
    """The image files under `folder` (recursively, sorted); refuses a missing or image-less folder."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LuminaError(f"{folder}: not a folder; give --images a folder of images")
    files = sorted(p for p in folder.rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
    if not files:
        raise LuminaError(f"{folder}: no images found (suffixes {', '.join(sorted(IMAGE_SUFFIXES))})")
    return files


def load_images(folder: str | Path, min_side: int) -> list[np.ndarray]:
    """Every image of `folder` as RGB `uint8[H, W, 3]`; an unreadable one or one under `min_side` px is refused."""
    images = []
    for path in image_files(folder):
        try:
            with Image.open(path) as picture:
                picture.load()
                rgb = to_rgb(picture)
        except (OSError, UnidentifiedImageError, Image.DecompressionBombError) as e:
            raise LuminaError(
                f"{path}: cannot read the image ({type(e).__name__}); remove or fix it"
            ) from None
        if min(rgb.size) < min_side:
            raise LuminaError(
                f"{path}: {rgb.width}x{rgb.height} is smaller than one {min_side}x{min_side} grid cell; "
                "remove it or upscale it"
            )
        images.append(np.asarray(rgb))
    return images


def random_crop(
    image: np.ndarray,
    width: int,
    height: int,
    rng: np.random.Generator,
    fraction: tuple[float, float] = (0.3, 1.0),
) -> np.ndarray:
    """A random crop of `image` with the aspect ratio of `width`x`height` (a `fraction` of the largest such
    crop, side, drawn uniformly), resized to that size, flipped left-right half the time."""
    h, w = image.shape[:2]
    scale = min(w / width, h / height) * rng.uniform(*fraction)
    cw, ch = max(1, round(width * scale)), max(1, round(height * scale))
    left, top = rng.integers(w - cw + 1), rng.integers(h - ch + 1)
    crop = Image.fromarray(image[top : top + ch, left : left + cw]).resize((width, height), Image.BICUBIC)
    out = np.asarray(crop)
    return out[:, ::-1] if rng.random() < 0.5 else out


def centre_crop(image: np.ndarray, width: int, height: int) -> np.ndarray:
    """The largest centred crop of `width`x`height`'s aspect ratio, resized to it."""
    h, w = image.shape[:2]
    scale = min(w / width, h / height)
    cw, ch = round(width * scale), round(height * scale)
    left, top = (w - cw) // 2, (h - ch) // 2
    crop = Image.fromarray(image[top : top + ch, left : left + cw])
    return np.asarray(crop.resize((width, height), Image.BICUBIC))


def random_patch(image: np.ndarray, side: int, rng: np.random.Generator) -> np.ndarray:
    """A random `side`x`side` window of `image` (at most its own size)."""
    h, w = image.shape[:2]
    ph, pw = min(side, h), min(side, w)
    top, left = rng.integers(h - ph + 1), rng.integers(w - pw + 1)
    return image[top : top + ph, left : left + pw]


class FolderBatches(Dataset):
    """Item `t` is step t's batch, `uint8[B, H, W, 3]`: one canvas, random crops of random images resized to
    it (`crop_fraction`: see `random_crop`), or, with `patch`, a random `patch`-pixel window of each such crop
    (`patch` at most the canvases' shorter sides); all from the seed `(seed, t)` (so a resumed run sees the
    same batches)."""

    def __init__(
        self,
        images: list[np.ndarray],
        canvases: list[tuple[int, int]],
        batch_size: int,
        seed: int,
        patch: int | None = None,
        crop_fraction: tuple[float, float] = (0.3, 1.0),
    ):
        self.images, self.canvases, self.batch_size, self.seed = images, canvases, batch_size, seed
        self.patch, self.crop_fraction = patch, crop_fraction

    def __len__(self) -> int:
        return 1 << 62

    def __getitem__(self, step: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, step])
        width, height = self.canvases[rng.integers(len(self.canvases))]
        picks = rng.integers(len(self.images), size=self.batch_size)
        crops = [random_crop(self.images[i], width, height, rng, self.crop_fraction) for i in picks]
        if self.patch:
            crops = [random_patch(crop, self.patch, rng) for crop in crops]
        return torch.from_numpy(np.stack(crops))
