"""Input images: any PIL image (or uint8 array) to 8-bit RGB, covering a canvas or fitted to an aspect-ratio
bucket as the releases' item processors do."""

import math
import random
from typing import Literal

import numpy as np
from PIL import Image, ImageOps

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.unirep import buckets, nearest_bucket

Crop = Literal["centre", "random"]
ImageInput = Image.Image | np.ndarray  # PIL, or uint8 [H, W, 3|4]
FULL_SCALE = {"I": 65535.0, "F": 1.0}  # white in wide single-channel modes ("I;16*" too); "I" is 16-bit PNG's


def to_rgb(image: Image.Image) -> Image.Image:
    """An 8-bit RGB copy of any PIL image: transparency composited onto white, 16-bit and float grey scaled to
    0..255 (PIL's own conversion would clip them to white)."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (255, 255, 255, 255)), rgba)
    full = FULL_SCALE.get(image.mode[:1] if image.mode.startswith("I;16") else image.mode)
    if full is not None:
        grey = np.asarray(image, dtype=np.float64) * (255 / full)
        image = Image.fromarray(np.clip(np.rint(grey), 0, 255).astype(np.uint8))
    return image.convert("RGB")


def fit_to_bucket(
    image: Image.Image,
    area_side: int,
    crop: Crop = "centre",
    rng: random.Random | None = None,
) -> Image.Image:
    """Resize and crop `image` to the bucket of area about `area_side`² whose aspect ratio fits it best.

    Steps of both releases: pick the bucket (`lumina_mgpt.unirep.nearest_bucket`), halve with a box filter while
    both sides are at least twice the bucket's, resize (bicubic) so the image just covers the bucket, then crop.
    v2 crops at the centre (our default); v1 crops at a random offset (`crop="random"`, drawn from `rng`).
    """
    if crop not in ("centre", "random"):
        raise LuminaError(f"crop must be 'centre' or 'random', not {crop!r}")
    width, height = nearest_bucket(image.width, image.height, buckets(area_side))
    while image.width >= 2 * width and image.height >= 2 * height:
        image = image.resize((image.width // 2, image.height // 2), resample=Image.Resampling.BOX)
    scale = max(width / image.width, height / image.height)
    size = (max(width, round(image.width * scale)), max(height, round(image.height * scale)))
    if size != image.size:
        image = image.resize(size, resample=Image.Resampling.BICUBIC)
    if crop == "random":
        if rng is None:
            raise LuminaError("crop='random' needs an explicit rng (random.Random)")
        left, top = rng.randint(0, image.width - width), rng.randint(0, image.height - height)
    else:
        left, top = (image.width - width) // 2, (image.height - height) // 2
    return image.crop((left, top, left + width, top + height))


def as_rgb_image(image: ImageInput) -> Image.Image:
    """The 8-bit RGB PIL image of an input image (`to_rgb`: transparency onto white, wide grey scaled)."""
    if isinstance(image, Image.Image):
        return to_rgb(image)
    if (
        isinstance(image, np.ndarray)
        and image.dtype == np.uint8
        and image.ndim == 3
        and image.shape[2] in (3, 4)
    ):
        return to_rgb(Image.fromarray(image))
    raise LuminaError(
        f"an image must be a PIL image or a uint8 array [H, W, 3], got {type(image).__name__}"
        + (f" {image.dtype} {list(image.shape)}" if isinstance(image, np.ndarray) else "")
    )


def cover(image: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Resize to cover `size` and crop the centre (v2's preparation of the i2i reference)."""
    return image if image.size == size else ImageOps.fit(image, size, Image.Resampling.BICUBIC)


def prepare_image(
    image: ImageInput, canvas: tuple[int, int] | None, area: tuple[int, int], unit: int = 32
) -> Image.Image:
    """An input image as the releases prepare it: on `canvas` (covered, centre crop) if given, else kept if its
    size is a bucket of `area`'s area, else fitted to the nearest such bucket."""
    image = as_rgb_image(image)
    if canvas is not None:
        return cover(image, canvas)
    side = round(math.sqrt(area[0] * area[1]) / unit) * unit
    return image if image.size in buckets(side, unit) else fit_to_bucket(image, side)
