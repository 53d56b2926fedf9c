"""Image tokenizers: MoVQGAN (v2), Chameleon VQGAN (v1) and our small trained VQ, on diffusers' `VQModel`."""

from lumina_mgpt.lazy import lazy_exports

_LAZY = {  # public name -> module, imported on first use
    **dict.fromkeys(["CHAMELEON_VQGAN", "MOVQGAN", "TamingConfig", "config_from_taming_yaml"], ".config"),
    **dict.fromkeys(["fit_to_bucket", "to_rgb"], ".images"),
    **dict.fromkeys(["SHAPES_TOKENIZER", "load_image_tokenizer", "save_image_tokenizer"], ".loading"),
    **dict.fromkeys(["ImageTokenizer", "pil_to_pixels", "pixels_to_uint8"], ".tokenizer"),
}
__all__ = sorted(_LAZY)
__getattr__ = lazy_exports(__name__, _LAZY)
