"""Encode a conversation and its images into a training `Sample` (shared by pre-tokenisation and the world)."""

from collections import defaultdict
from collections.abc import Sequence

import numpy as np
import torch
from PIL import Image

from lumina_mgpt.data.shards import Sample
from lumina_mgpt.errors import LuminaError
from lumina_mgpt.text import IGNORE_INDEX, Message, TextTokenizer, serialize
from lumina_mgpt.unirep import encode_image_block, find_image_blocks
from lumina_mgpt.vocab import TokenLayout
from lumina_mgpt.vq import ImageTokenizer, pil_to_pixels


def check_factor(image_tokenizer: ImageTokenizer, layout: TokenLayout) -> None:
    if image_tokenizer.factor != layout.latent_factor:
        raise LuminaError(
            f"image tokenizer downsamples by {image_tokenizer.factor} but layout {layout.name} "
            f"expects latent factor {layout.latent_factor}"
        )


@torch.no_grad()
def encode_images(
    images: Sequence[Image.Image], image_tokenizer: ImageTokenizer, batch_size: int = 16
) -> list[torch.Tensor]:
    """VQ codes `[h, w]` (CPU) of each image, encoded in batches of equal size."""
    by_size: dict[tuple[int, int], list[int]] = defaultdict(list)
    for index, image in enumerate(images):
        by_size[image.size].append(index)
    codes: list[torch.Tensor | None] = [None] * len(images)
    for indices in by_size.values():
        for start in range(0, len(indices), batch_size):
            chunk = indices[start : start + batch_size]
            pixels = torch.cat([pil_to_pixels(images[i]) for i in chunk])
            for i, grid in zip(chunk, image_tokenizer.encode(pixels).cpu(), strict=True):
                codes[i] = grid
    return codes


def conversation_sample(
    messages: Sequence[Message],
    codes: Sequence[torch.Tensor],
    tokenizer: TextTokenizer,
    layout: TokenLayout,
    task: str = "",
    record: int = -1,
) -> Sample:
    """The sample of a conversation whose `<|image|>` placeholders stand, in order, for the code grids `codes`.

    Targets are the assistant turns; the sample's canvas is its first image's; its image span is its
    assistant image block when there is exactly one (the CFG context-drop form).
    """
    blocks = [encode_image_block(grid, layout) for grid in codes]
    ids, labels = serialize(messages, tokenizer, layout, blocks)
    target = (labels != IGNORE_INDEX).numpy()
    spans = [span for span in find_image_blocks(ids, layout) if target[span[0]]]
    canvas = (0, 0)
    if codes:
        height, width = codes[0].shape
        canvas = (width * layout.latent_factor, height * layout.latent_factor)
    return Sample(
        ids=ids.numpy().astype(np.int32),
        target=target,
        canvas=canvas,
        image_span=spans[0] if len(spans) == 1 else (0, 0),
        task=task,
        record=record,
    )
