"""The world's language: texts of every task kind, for training the text tokenizer of the shapes model."""

from collections.abc import Iterator

import numpy as np

from lumina_mgpt.text import IMAGE_PLACEHOLDER, TextTokenizer, build_text_tokenizer
from lumina_mgpt.vocab import SIZE_UNIT_PX
from lumina_mgpt.world.tasks import TASK_KINDS, sample_task

CANVASES = ((128, 128), (160, 96), (96, 160), (96, 96), (128, 96), (96, 128))


def world_texts(n_samples: int, seed: int = 0) -> Iterator[str]:
    """The message texts (placeholders removed) of `n_samples` random tasks of every kind and canvas."""
    rng = np.random.default_rng(seed)
    for i in range(n_samples):
        width, height = CANVASES[i % len(CANVASES)]
        if TASK_KINDS[i % len(TASK_KINDS)].startswith("dual") and height < 96:
            height = 96
        task = sample_task(TASK_KINDS[i % len(TASK_KINDS)], rng, width, height)
        for message in task.messages:
            for part in message["content"].split(IMAGE_PLACEHOLDER):
                if part.strip():
                    yield part


def coordinate_tokens(max_size_units: int) -> int:
    """How many whole numbers are one token each: every pixel coordinate of the largest image, 0 to its side
    (both edges of a box)."""
    return max_size_units * SIZE_UNIT_PX + 1


def train_world_tokenizer(
    vocab_size: int, codebook_size: int, max_size_units: int, n_samples: int = 20000, seed: int = 0
) -> TextTokenizer:
    """A byte-level BPE of `vocab_size` tokens (image codes and special tokens included) for the world, with
    one token per pixel coordinate (`coordinate_tokens`)."""
    texts = world_texts(n_samples, seed)
    return build_text_tokenizer(
        texts, vocab_size, codebook_size, max_size_units, coordinate_tokens(max_size_units)
    )
