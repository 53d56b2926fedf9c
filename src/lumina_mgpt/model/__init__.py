"""The Chameleon transformer, its KV cache, and HF-folder checkpoint loading/saving."""

from lumina_mgpt.model.checkpoint import load_transformer, resolve_folder, save_transformer
from lumina_mgpt.model.config import ChameleonConfig
from lumina_mgpt.model.kv_cache import KVCache
from lumina_mgpt.model.transformer import ChameleonTransformer

__all__ = [
    "ChameleonConfig",
    "ChameleonTransformer",
    "KVCache",
    "load_transformer",
    "resolve_folder",
    "save_transformer",
]
