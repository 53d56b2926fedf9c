"""The node classes, written to ComfyUI's conventions: `INPUT_TYPES` (a classmethod), `RETURN_TYPES`,
`RETURN_NAMES`, `FUNCTION` (the method ComfyUI calls with the inputs as keyword arguments) and `CATEGORY`.
Images are ComfyUI IMAGE tensors: float32 [B, H, W, C] in 0..1 on the CPU."""

import numpy as np
import torch
from PIL import Image

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.generate.sampling import MAX_SEED
from lumina_mgpt.generate.tasks import TASK_NAMES, TASKS, resolve_task, task_message
from lumina_mgpt.model.quantize import QUANT_MODES
from lumina_mgpt.pipeline import LuminaMGPTPipeline

CATEGORY = "Lumina-mGPT"
PIPELINE = "LUMINA_MGPT"  # the type of the loaded model between nodes
DTYPES = {"auto": None, "float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
SPECULATIVE = ("preset", "off", "exact", "reference")
MAPS = ("segmentation map", "edge map")
SIDE = {"default": 0, "min": 0, "max": 4096, "step": 16}  # 0: the model's default canvas


def to_comfy(images: list[Image.Image]) -> torch.Tensor:
    """PIL images of one size as a ComfyUI IMAGE batch [B, H, W, 3], float 0..1."""
    return torch.from_numpy(np.stack([np.asarray(image.convert("RGB")) for image in images])).float() / 255


def from_comfy(images: torch.Tensor) -> list[Image.Image]:
    """The PIL images of a ComfyUI IMAGE batch [B, H, W, C] (C = 3 or 4), values clamped to 0..1."""
    pixels = (images.detach().cpu().float().clamp(0, 1) * 255).round().to(torch.uint8).numpy()
    return [Image.fromarray(frame[..., :3]) for frame in pixels]


class LoadLuminaMGPT:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "model": (
                    "STRING",
                    {"default": "", "tooltip": "A model folder or hub repo id; empty: shipped"},
                ),
                "device": ("STRING", {"default": "auto", "tooltip": "auto, cpu, cuda, cuda:N or mps"}),
                "dtype": (list(DTYPES), {"default": "auto"}),
                "quantize": (["none", *QUANT_MODES], {"default": "none"}),
            }
        }

    RETURN_TYPES = (PIPELINE,)
    RETURN_NAMES = ("model",)
    FUNCTION = "load"
    CATEGORY = CATEGORY

    def load(self, model: str, device: str, dtype: str, quantize: str) -> tuple[LuminaMGPTPipeline]:
        pipe = LuminaMGPTPipeline.from_pretrained(
            model.strip() or None,
            device=device,
            dtype=DTYPES[dtype],
            quantize=None if quantize == "none" else quantize,
        )
        return (pipe,)


class LuminaTextToImage:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "model": (PIPELINE,),
                "prompt": ("STRING", {"multiline": True, "default": "a photo of a red star"}),
                "width": ("INT", SIDE),
                "height": ("INT", SIDE),
                "batch_size": ("INT", {"default": 1, "min": 1, "max": 64}),
                "cfg": (
                    "FLOAT",
                    {"default": -1.0, "min": -1.0, "max": 100.0, "step": 0.1, "tooltip": "-1: preset"},
                ),
                "seed": (
                    "INT",
                    {"default": 0, "min": 0, "max": MAX_SEED, "tooltip": "image k uses seed + k"},
                ),
                "speculative": (list(SPECULATIVE), {"default": "preset"}),
            }
        }

    RETURN_TYPES = ("IMAGE",)
    RETURN_NAMES = ("images",)
    FUNCTION = "generate"
    CATEGORY = CATEGORY

    def generate(
        self,
        model: LuminaMGPTPipeline,
        prompt: str,
        width: int,
        height: int,
        batch_size: int,
        cfg: float,
        seed: int,
        speculative: str,
    ) -> tuple[torch.Tensor]:
        result = model(
            prompt,
            width or None,
            height or None,
            batch_size,
            cfg_scale=None if cfg < 0 else cfg,
            seed=seed,
            progress=False,
            speculative=None if speculative == "preset" else speculative,
        )
        return (to_comfy(result.images),)


class LuminaOmniTask:
    @classmethod
    def INPUT_TYPES(cls) -> dict:
        return {
            "required": {
                "model": (PIPELINE,),
                "task": (list(TASK_NAMES), {"default": "editing"}),
                "text": ("STRING", {"multiline": True, "default": ""}),
                "seed": ("INT", {"default": 0, "min": 0, "max": MAX_SEED}),
                "width": ("INT", SIDE),
                "height": ("INT", SIDE),
                "map": (list(MAPS), {"default": MAPS[0]}),
                "frames": ("INT", {"default": 2, "min": 2, "max": 16}),
                "max_new_tokens": ("INT", {"default": 0, "min": 0, "max": 1 << 20, "tooltip": "0: default"}),
            },
            "optional": {"image": ("IMAGE",)},
        }

    RETURN_TYPES = ("IMAGE", "STRING")
    RETURN_NAMES = ("images", "text")
    FUNCTION = "run"
    CATEGORY = CATEGORY

    def run(
        self,
        model: LuminaMGPTPipeline,
        task: str,
        text: str,
        seed: int,
        width: int,
        height: int,
        map: str,
        frames: int,
        max_new_tokens: int,
        image: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, str]:
        """The reply's images (a black canvas when it drew none) and its text (`<|image|>` where each image
        was). Tasks on an image take the first of the IMAGE batch."""
        name, _ = resolve_task(task)
        spec = TASKS[name]
        images = from_comfy(image)[:1] if image is not None and spec.images != 0 else []
        if spec.images > 0 and not images:
            raise LuminaError(f"task {task!r} needs an image: connect one to the node's image input")
        prefix = images.pop() if spec.prefix and images else None
        canvas = (width or None, height or None)
        shown = (
            (canvas[0] or prefix.width, canvas[1] or 2 * prefix.height)
            if prefix is not None
            else (canvas[0] or model.preset.canvas[0], canvas[1] or model.preset.canvas[1])
        )
        content = task_message(task, text, *shown, map_name=map, frames=frames)
        reply = model.chat(
            [{"role": "user", "content": content, "images": images}],
            *canvas,
            image_prefix=prefix,
            seed=seed,
            max_new_tokens=max_new_tokens or None,
        )
        drawn = reply.images or [Image.new("RGB", shown)]
        return to_comfy(drawn), reply.text
