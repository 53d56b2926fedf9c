"""ComfyUI custom nodes for Lumina-mGPT: load a model, draw from text, run an omni task.

ComfyUI finds them through the `comfyui.custom_nodes` entry point (pyproject.toml) or a custom_nodes folder
that imports this package; both read `NODE_CLASS_MAPPINGS` and `NODE_DISPLAY_NAME_MAPPINGS`.
"""

from lumina_mgpt.comfy.nodes import LoadLuminaMGPT, LuminaOmniTask, LuminaTextToImage

NODE_CLASS_MAPPINGS = {
    "LoadLuminaMGPT": LoadLuminaMGPT,
    "LuminaTextToImage": LuminaTextToImage,
    "LuminaOmniTask": LuminaOmniTask,
}
NODE_DISPLAY_NAME_MAPPINGS = {
    "LoadLuminaMGPT": "Load Lumina-mGPT",
    "LuminaTextToImage": "Lumina-mGPT Text to Image",
    "LuminaOmniTask": "Lumina-mGPT Omni Task",
}
__all__ = ["NODE_CLASS_MAPPINGS", "NODE_DISPLAY_NAME_MAPPINGS"]
