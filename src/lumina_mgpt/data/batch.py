"""Turn samples into padded tensors (grouped by length), with the context drop that teaches classifier-free
guidance."""

import numpy as np
import torch

from lumina_mgpt.data.shards import Sample
from lumina_mgpt.text import IGNORE_INDEX

PAD_ID = 0  # right padding; causal attention never lets a real position see it


def context_drop_flags(seed: int, step: int, batch_size: int, probability: float) -> np.ndarray:
    """Which samples of global batch `step` lose their context: a pure function of (seed, step), so a resumed
    run, or one on another number of ranks, drops the same samples."""
    return np.random.default_rng([seed, step]).random(batch_size) < probability


def drop_context(samples: list[Sample], flags: np.ndarray) -> list[Sample]:
    """Replace each flagged sample that has a single target image block by that block alone."""
    return [s.image_only() if flag and s.droppable else s for s, flag in zip(samples, flags, strict=True)]


def micro_batches(samples: list[Sample], size: int) -> list[list[Sample]]:
    """Groups of `size` samples (the last may be smaller) taken in order of length, so that each group pads
    only to lengths like its own: a batch that mixes 300- and 1,100-token tasks wastes little compute."""
    ordered = sorted(samples, key=len)  # stable: equal lengths keep their order
    return [ordered[i : i + size] for i in range(0, len(ordered), size)]


def collate(samples: list[Sample]) -> tuple[torch.Tensor, torch.Tensor]:
    """`(input_ids, labels)` int64 `[B, T]`, right-padded to the longest sample with `PAD_ID` / -100."""
    length = max(len(s) for s in samples)
    ids = np.full((len(samples), length), PAD_ID, dtype=np.int64)
    labels = np.full((len(samples), length), IGNORE_INDEX, dtype=np.int64)
    for row, sample in enumerate(samples):
        ids[row, : len(sample)] = sample.ids
        labels[row, : len(sample)] = sample.labels
    return torch.from_numpy(ids), torch.from_numpy(labels)
