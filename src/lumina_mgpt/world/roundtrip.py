"""How well an image tokenizer carries the tasks' target images: the true replies, encoded and decoded, scored by
each task's own scorer (a model that reproduced the training targets' codes exactly would score this)."""

from collections.abc import Sequence

import numpy as np
import torch

from lumina_mgpt.vq import ImageTokenizer
from lumina_mgpt.vq.evaluate import reconstruct
from lumina_mgpt.world.score import score_task
from lumina_mgpt.world.tasks import OMNI_KINDS, Task, benchmark_tasks

TEXT_ONLY_KINDS = ("detection", "count_qa", "color_qa", "yesno_qa", "captioning")
IMAGE_KINDS = tuple(k for k in OMNI_KINDS if k not in TEXT_ONLY_KINDS)


def _roundtrip(tokenizer: ImageTokenizer, image: np.ndarray, by_panel: bool) -> np.ndarray:
    if not by_panel:
        return reconstruct(tokenizer, image[None])[0][0]
    half = image.shape[0] // 2  # each half decoded apart (the same codes when the encoder is patch-local)
    return np.concatenate([reconstruct(tokenizer, part[None])[0][0] for part in (image[:half], image[half:])])


def reconstructed_replies(tokenizer: ImageTokenizer, task: Task, by_panel: bool = False) -> list[dict]:
    """The task's true replies, one per turn, with every image encoded and decoded (`by_panel`: a dual-panel
    canvas half by half)."""
    panels = by_panel and task.kind.startswith("dual_")
    return [
        {
            "text": m["content"].replace("<|image|>", ""),
            "images": [_roundtrip(tokenizer, image, panels) for image in m["images"]],
        }
        for m in task.messages
        if m["role"] == "assistant"
    ]


@torch.inference_mode()
def target_pass_rates(
    tokenizer: ImageTokenizer,
    kind: str,
    items: int,
    canvases: Sequence[tuple[int, int]],
    seed: int = 11,
    by_panel: bool = False,
) -> dict[str, float]:
    """Per canvas ("WxH"), the fraction of `items` benchmark items of `kind` whose reconstructed true replies
    pass."""
    rates = {}
    for width, height in canvases:
        tasks = benchmark_tasks(seed, items, width, height, [kind])
        passed = [score_task(t, reconstructed_replies(tokenizer, t, by_panel)).passed for t in tasks]
        rates[f"{width}x{height}"] = float(np.mean(passed))
    return rates
