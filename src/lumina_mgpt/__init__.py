"""Lumina-mGPT: multimodal autoregressive image generation, understanding and omni tasks."""

from lumina_mgpt.errors import LuminaError

__all__ = ["LuminaError"]
__version__ = "0.1.0"
