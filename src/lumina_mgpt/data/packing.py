"""Packing: several samples end to end in one row, kept apart by document masks, so that a batch of mixed
lengths (a 60-token question beside a 1,100-token edit) wastes almost nothing on padding.

A packed row's tokens carry their document's index and a position that restarts at 0 in every document; the
model's attention then sees only earlier tokens of the same document (`model.transformer.Documents`: causal
attention run by run, no compute spent on pairs across documents), so each sample's loss
and gradient are what it gets alone. A document's first token is never a target (its BOS, or the first code of a
context-dropped image block, which the sample alone does not predict either), so no loss crosses a boundary.
"""

from typing import NamedTuple

import numpy as np
import torch

from lumina_mgpt.data.batch import PAD_ID
from lumina_mgpt.data.shards import Sample
from lumina_mgpt.text import IGNORE_INDEX

PAD_DOCUMENT = -1  # padding after a row's last document: its own document, so no real token sees it


class PackedBatch(NamedTuple):
    """int64 `[B, T]` tensors of packed rows, right-padded to the longest row."""

    ids: torch.Tensor
    labels: torch.Tensor
    positions: torch.Tensor  # restarting at 0 in each document
    documents: torch.Tensor  # document index within the row; PAD_DOCUMENT on padding


def pack_rows(samples: list[Sample], row_length: int) -> list[list[Sample]]:
    """Samples grouped into rows of at most `row_length` tokens, first fit by decreasing length (a sample longer
    than `row_length` has a row of its own); rows come out longest first, samples in a row by decreasing
    length. Deterministic in the samples' order."""
    order = sorted(range(len(samples)), key=lambda i: -len(samples[i]))  # stable: ties keep their order
    rows: list[list[Sample]] = []
    room: list[int] = []
    for i in order:
        sample = samples[i]
        fit = next((r for r, free in enumerate(room) if free >= len(sample)), None)
        if fit is None:
            rows.append([sample])
            room.append(row_length - len(sample))
        else:
            rows[fit].append(sample)
            room[fit] -= len(sample)
    return sorted(rows, key=lambda row: -sum(len(s) for s in row))


def collate_packed(rows: list[list[Sample]]) -> PackedBatch:
    """The tensors of packed rows (see `PackedBatch`)."""
    length = max(sum(len(s) for s in row) for row in rows)
    shape = (len(rows), length)
    ids = np.full(shape, PAD_ID, dtype=np.int64)
    labels = np.full(shape, IGNORE_INDEX, dtype=np.int64)
    positions = np.zeros(shape, dtype=np.int64)
    documents = np.full(shape, PAD_DOCUMENT, dtype=np.int64)
    for r, row in enumerate(rows):
        at = 0
        for d, sample in enumerate(row):
            end = at + len(sample)
            ids[r, at:end] = sample.ids
            labels[r, at:end] = sample.labels
            labels[r, at] = IGNORE_INDEX  # predicted from the previous document's last token: never a target
            positions[r, at:end] = np.arange(len(sample))
            documents[r, at:end] = d
            at = end
        positions[r, at:] = np.arange(length - at)
    return PackedBatch(*(torch.from_numpy(a) for a in (ids, labels, positions, documents)))


def padding_fraction(rows: list[list[Sample]], micro_batch_size: int) -> float:
    """Share of the tokens in micro-batches of `micro_batch_size` rows (in order) that are padding."""
    lengths = [sum(len(s) for s in row) for row in rows]
    padded = sum(
        len(group) * max(group)
        for group in (lengths[i : i + micro_batch_size] for i in range(0, len(lengths), micro_batch_size))
    )
    return 1 - sum(lengths) / padded


def packed_micro_batches(samples: list[Sample], row_length: int, rows_per_batch: int) -> list[PackedBatch]:
    """A step's samples packed into rows of `row_length` tokens, in micro-batches of `rows_per_batch` rows of
    like lengths."""
    rows = pack_rows(samples, row_length)
    return [collate_packed(rows[i : i + rows_per_batch]) for i in range(0, len(rows), rows_per_batch)]


def idle_batch() -> PackedBatch:
    """One padding token and no target: the forward and backward a rank runs to keep step with ranks that have
    more micro-batches (FSDP gathers every layer's weights on all ranks at every forward)."""
    one = torch.zeros(1, 1, dtype=torch.long)
    return PackedBatch(one + PAD_ID, one + IGNORE_INDEX, one, one + PAD_DOCUMENT)
