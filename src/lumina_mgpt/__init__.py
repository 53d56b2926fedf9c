"""Lumina-mGPT: multimodal autoregressive image generation, understanding and omni tasks."""

import importlib

from lumina_mgpt.errors import LuminaError

__version__ = "0.1.0"

_LAZY = {  # public name -> module; imported on first use, so `import lumina_mgpt` stays light
    "LuminaMGPTPipeline": "lumina_mgpt.pipeline",
    "load_transformer": "lumina_mgpt.model",
    "save_transformer": "lumina_mgpt.model",
    "load_image_tokenizer": "lumina_mgpt.vq",
    "TokenLayout": "lumina_mgpt.vocab",
}
__all__ = ["LuminaError", *_LAZY]


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'lumina_mgpt' has no attribute {name!r}")
