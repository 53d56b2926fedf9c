"""Lumina-mGPT: multimodal autoregressive image generation, understanding and omni tasks."""

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.lazy import lazy_exports

__version__ = "0.1.0"

_LAZY = {  # public name -> module; imported on first use, so `import lumina_mgpt` stays light
    "LuminaMGPTPipeline": ".pipeline",
    "GenerationConfig": ".generate.config",
    "load_transformer": ".model",
    "save_transformer": ".model",
    "load_image_tokenizer": ".vq",
    "TokenLayout": ".vocab",
}
__all__ = ["LuminaError", *_LAZY]
__getattr__ = lazy_exports(__name__, _LAZY)
