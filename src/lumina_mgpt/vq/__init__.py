"""Image tokenizers: MoVQGAN (v2), Chameleon VQGAN (v1) and our small trained VQ, on diffusers' `VQModel`."""

from lumina_mgpt.vq.config import CHAMELEON_VQGAN, MOVQGAN, TamingConfig, config_from_taming_yaml
from lumina_mgpt.vq.images import fit_to_bucket
from lumina_mgpt.vq.loading import SHAPES_TOKENIZER, load_image_tokenizer, save_image_tokenizer
from lumina_mgpt.vq.tokenizer import ImageTokenizer, pil_to_pixels, pixels_to_uint8

__all__ = [
    "CHAMELEON_VQGAN",
    "MOVQGAN",
    "SHAPES_TOKENIZER",
    "ImageTokenizer",
    "TamingConfig",
    "config_from_taming_yaml",
    "fit_to_bucket",
    "load_image_tokenizer",
    "pil_to_pixels",
    "pixels_to_uint8",
    "save_image_tokenizer",
]
