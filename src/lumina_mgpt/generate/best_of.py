"""Best-of-N: draw N candidates for every image and keep the one a verifier scores highest.

A verifier is any callable `(images, prompts) -> scores`: one float per image, higher is better, `prompts[i]`
being the description image i was drawn for (a CLIP or VQA model, a detector, ...). `SelfVerifier` needs no
other model: the generating model scores the images itself.
"""

import time
from collections.abc import Callable, Sequence
from dataclasses import replace
from typing import Any

import torch
from PIL import Image

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.generate.config import VERIFIER_METHODS
from lumina_mgpt.model import ChameleonTransformer
from lumina_mgpt.text import IGNORE_INDEX, IMAGE_PLACEHOLDER, serialize
from lumina_mgpt.unirep import t2i_prompt

Verifier = Callable[[list[Image.Image], list[str]], "Sequence[float] | torch.Tensor"]


class SelfVerifier:
    """How well images show their descriptions, in the eyes of the model that drew them.

    `method="pmi"` (default): log p(image | prompt) − log p(image | no prompt), summed over the image codes. By
    Bayes' rule this is log p(prompt | image) up to a constant per prompt: how much the description explains
    the image beyond how likely the image is anyway. It reads the image in the direction the model was trained
    to draw, with the exact text-to-image template and CFG's unconditional context (the image block alone),
    so it needs no skill the model may lack, and it does not favour plain, likely images.
    `method="caption"`: log p(description | image) in the understanding direction, the conversation
    "<|image|> Describe the image." answered by the description. It fits models whose captions are worded like
    the descriptions; the shapes world's captions list every object ("a red star and a blue circle."), unlike
    its benchmark descriptions ("a photo of two stars"), which is why "pmi" is the default.

    Images are re-encoded by the pipeline's image tokenizer (a verifier sees pixels, as any other would);
    sequences are scored in batches of `batch_size`.
    """

    def __init__(
        self, pipe: Any, method: str = "pmi", question: str = "Describe the image.", batch_size: int = 8
    ):
        if method not in VERIFIER_METHODS:
            raise LuminaError(f"verifier method must be one of {', '.join(VERIFIER_METHODS)}, got {method!r}")
        self.pipe, self.method, self.question, self.batch_size = pipe, method, question, batch_size

    def __call__(self, images: list[Image.Image], prompts: list[str]) -> torch.Tensor:
        blocks = [self.pipe.encode_image(image, image.size) for image in images]
        return self.score_blocks(blocks, prompts)

    def score_blocks(self, blocks: Sequence[torch.Tensor], prompts: Sequence[str]) -> torch.Tensor:
        """Scores `[N]` (float64) of Uni-Rep image blocks and their descriptions."""
        if len(blocks) != len(prompts):
            raise LuminaError(f"got {len(blocks)} images and {len(prompts)} prompts to score")
        pipe, layout = self.pipe, self.pipe.layout
        rows, targets = [], []
        for block, prompt in zip(blocks, prompts, strict=True):
            block = torch.as_tensor(block, dtype=torch.long)
            if self.method == "caption":
                messages = [
                    {"role": "user", "content": f"{IMAGE_PLACEHOLDER} {self.question}", "images": [block]},
                    {"role": "assistant", "content": prompt},
                ]
                ids, labels = serialize(messages, pipe.text_tokenizer, layout)
                rows.append(ids)
                targets.append(labels != IGNORE_INDEX)
                continue
            height, width = (layout.size_of_token(int(t)) * layout.size_unit_px for t in block[1:3])
            user = [{"role": "user", "content": t2i_prompt(prompt, width, height)}]
            ids, _ = serialize(user, pipe.text_tokenizer, layout, response_prefix=block)
            codes = layout.code_of(block) >= 0
            rows += [ids, block]  # conditional, unconditional
            targets += [torch.cat([torch.zeros(len(ids) - len(block), dtype=torch.bool), codes]), codes]
        scores = sequence_logprobs(pipe.transformer, rows, targets, self.batch_size)
        return scores if self.method == "caption" else scores[0::2] - scores[1::2]


@torch.inference_mode()
def sequence_logprobs(
    model: ChameleonTransformer,
    rows: Sequence[torch.Tensor],
    targets: Sequence[torch.Tensor],
    batch_size: int = 8,
    chunk: int = 1024,
) -> torch.Tensor:
    """Σ log p(ids[t] | ids[<t]) over the positions t where `targets[r]` is True, per row r (float64); one
    causal forward per `batch_size` rows (right-padded), the output head only at target positions, `chunk` at
    a time."""
    device = next(model.parameters()).device
    totals = torch.zeros(len(rows), dtype=torch.float64)
    for first in range(0, len(rows), batch_size):
        group = range(first, min(first + batch_size, len(rows)))
        length = max(len(rows[r]) for r in group)
        ids = torch.zeros(len(group), length, dtype=torch.long)
        wanted = torch.zeros(len(group), length, dtype=torch.bool)
        for i, r in enumerate(group):
            ids[i, : len(rows[r])], wanted[i, : len(rows[r])] = rows[r], targets[r]
        wanted[:, 0] = False  # the first token has no context
        row, position = wanted.nonzero(as_tuple=True)
        hidden = model.model(ids.to(device))[row.to(device), position.to(device) - 1]
        tokens = ids[row, position].to(device)
        logprobs = torch.cat(
            [
                model.logits(hidden[c : c + chunk])
                .log_softmax(-1)
                .gather(-1, tokens[c : c + chunk, None])[:, 0]
                for c in range(0, len(tokens), chunk)
            ]
        )
        totals.index_add_(0, row + first, logprobs.double().cpu())
    return totals


def select_best(
    generate: Callable[[int], Any], prompts: list[str], per_prompt: int, n: int, verifier: Verifier
) -> Any:
    """Best-of-`n` over a pipeline call: `generate(k)` draws k images per prompt (a `GenerationOutput`,
    prompt-major); candidates `c = 0..n-1` of image j of prompt p are its images `j*n + c`. Returns the
    output with the best candidate of each image, its score in `scores` and the candidate count in stats."""
    if n < 1:
        raise LuminaError(f"best_of must be >= 1, got {n}")
    began = time.perf_counter()
    out = generate(per_prompt * n)
    scoring = time.perf_counter()
    descriptions = [p for p in prompts for _ in range(per_prompt * n)]
    scores = torch.as_tensor(verifier(out.images, descriptions), dtype=torch.float64).flatten()
    if scores.shape != (len(out.images),) or not scores.isfinite().all():
        raise LuminaError(f"the verifier must return {len(out.images)} finite scores, got {scores.tolist()}")
    per_image = scores.view(-1, n)
    best = per_image.argmax(-1)
    chosen = (best + n * torch.arange(len(best))).tolist()
    stats = out.stats | {
        "candidates": n,
        "verifier_seconds": time.perf_counter() - scoring,
        "seconds": time.perf_counter() - began,
    }
    return replace(
        out,
        images=[out.images[i] for i in chosen],
        tokens=[out.tokens[i] for i in chosen],
        stats=stats,
        scores=per_image[torch.arange(len(best)), best].tolist(),
    )
