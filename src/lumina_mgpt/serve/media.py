"""Images over JSON: PNG as base64 (`b64_json`) and data URLs (`image_url` content parts)."""

import base64
import binascii
import io
import re

from PIL import Image, UnidentifiedImageError

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.vq.images import to_rgb

_DATA_URL = re.compile(
    r"data:(?P<mime>image/[\w.+-]+)?(?P<params>(;[\w-]+=[^;,]*)*)(?P<b64>;base64)?,(?P<data>.*)", re.DOTALL
)


def encoded_base64(image: Image.Image, output_format: str = "png", compression: int | None = None) -> str:
    """The image as base64 PNG, JPEG or WebP (`compression`: JPEG/WebP quality 0..100, default 95)."""
    buffer = io.BytesIO()
    options = {} if output_format == "png" else {"quality": 95 if compression is None else compression}
    image.save(buffer, format=output_format.upper(), **options)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def png_data_url(image: Image.Image) -> str:
    return "data:image/png;base64," + encoded_base64(image)


def image_from_data_url(url: str, max_pixels: int) -> Image.Image:
    """An RGB image from a base64 `data:image/...;base64,...` URL of at most `max_pixels` pixels."""
    match = _DATA_URL.fullmatch(url)
    if match is None:
        if url.startswith(("http://", "https://")):
            what = "http(s) URLs are not fetched"
        elif url.startswith("data:"):
            what = "a data URL of an image type is needed (data:image/...)"
        else:
            what = "not a data URL"
        raise LuminaError(f"{what}: send the image inline as data:image/png;base64,...")
    if not match["b64"]:
        raise LuminaError("the image data URL is not base64-encoded (expected ';base64,')")
    try:
        data = base64.b64decode(re.sub(r"\s+", "", match["data"]), validate=True)  # MIME wraps lines
    except (binascii.Error, ValueError):
        raise LuminaError("the image data URL holds invalid base64") from None
    return to_rgb(image_from_bytes(data, max_pixels, "the image data URL"))


def image_from_bytes(data: bytes, max_pixels: int, what: str = "the image file") -> Image.Image:
    """The decoded image (its own mode, alpha kept) of an image file's bytes of at most `max_pixels` pixels."""
    try:
        image = Image.open(io.BytesIO(data))
        if image.width * image.height > max_pixels:
            raise LuminaError(
                f"the image is {image.width}x{image.height}; this server takes at most "
                f"{max_pixels} pixels per input image"
            )
        image.load()
        return image
    except (UnidentifiedImageError, OSError, Image.DecompressionBombError):
        raise LuminaError(f"{what} does not hold a readable image (PNG, JPEG, WebP, ...)") from None
