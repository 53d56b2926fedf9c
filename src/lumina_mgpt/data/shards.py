"""Token shards: tokenised samples stored as concatenated arrays in one safetensors file per shard.

A shard holds `ids` (int32) and `target` (bool) for all its samples end to end, plus an index:
`offsets` [n+1], `canvas` [n, 2] (width, height of the sample's first image; 0, 0 without one),
`image_span` [n, 2] (the sample's one target image block, (0, 0) if it has none or several), `task` [n]
(index into the metadata's task names) and `record` [n] (the record number in the source file). Samples
are read lazily, one slice at a time, so a set of shards larger than memory is fine.
"""

import json
import os
from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
from safetensors import SafetensorError, safe_open
from safetensors.numpy import save_file

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.text import IGNORE_INDEX

SHARD_FORMAT = "lumina-mgpt-shard/1"
SHARD_GLOB = "shard-*.safetensors"


@dataclass(frozen=True)
class Sample:
    """One tokenised training sample: token ids and which of them are targets."""

    ids: np.ndarray  # int32 [n]
    target: np.ndarray  # bool [n]: True where the model learns to predict the token
    canvas: tuple[int, int] = (0, 0)  # (width, height) of its first image; (0, 0) without images
    image_span: tuple[int, int] = (0, 0)  # [start, end) of its single target image block; empty if none
    task: str = ""
    record: int = -1

    def __len__(self) -> int:
        return len(self.ids)

    @property
    def labels(self) -> np.ndarray:
        """int64 labels: the token id where it is a target, -100 elsewhere."""
        return np.where(self.target, self.ids, IGNORE_INDEX).astype(np.int64)

    @property
    def droppable(self) -> bool:
        return self.image_span[1] > self.image_span[0]

    def image_only(self) -> "Sample":
        """The context-dropped form used to teach CFG's unconditional branch: the image block alone, all
        targets (no BOS, no prompt)."""
        start, end = self.image_span
        if end <= start:
            raise LuminaError(f"record {self.record}: has no single target image block to keep")
        return replace(
            self,
            ids=self.ids[start:end],
            target=np.ones(end - start, dtype=bool),
            image_span=(0, end - start),
        )


def write_shard(
    path: str | os.PathLike, samples: list[Sample], tasks: list[str], metadata: dict[str, str]
) -> None:
    """Write `samples` to `path` atomically (a temporary file renamed into place)."""
    path = Path(path)
    task_index = {name: i for i, name in enumerate(tasks)}
    lengths = np.array([len(s) for s in samples], dtype=np.int64)
    tensors = {
        "ids": np.concatenate([s.ids for s in samples]).astype(np.int32)
        if samples
        else np.zeros(0, np.int32),
        "target": np.concatenate([s.target for s in samples]).astype(bool) if samples else np.zeros(0, bool),
        "offsets": np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64),
        "canvas": np.array([s.canvas for s in samples], dtype=np.int32).reshape(-1, 2),
        "image_span": np.array([s.image_span for s in samples], dtype=np.int32).reshape(-1, 2),
        "task": np.array([task_index[s.task] for s in samples], dtype=np.int32),
        "record": np.array([s.record for s in samples], dtype=np.int64),
    }
    meta = {**metadata, "format": SHARD_FORMAT, "tasks": json.dumps(tasks)}
    tmp = path.with_name(path.name + ".tmp")
    save_file(tensors, str(tmp), metadata=meta)
    os.replace(tmp, path)


class Shard:
    """One shard file: its index in memory, its tokens read on demand."""

    def __init__(self, path: str | os.PathLike):
        self.path = Path(path)
        try:
            self._file = safe_open(str(self.path), framework="np")
        except (SafetensorError, OSError) as err:
            raise LuminaError(f"{self.path}: not a readable shard ({err})") from None
        self.metadata = self._file.metadata() or {}
        if self.metadata.get("format") != SHARD_FORMAT:
            raise LuminaError(
                f"{self.path}: not a {SHARD_FORMAT} file (format {self.metadata.get('format')!r})"
            )
        self.tasks: list[str] = json.loads(self.metadata["tasks"])
        self.offsets = self._file.get_tensor("offsets")
        self.canvas = self._file.get_tensor("canvas")
        self.image_span = self._file.get_tensor("image_span")
        self.task = self._file.get_tensor("task")
        self.record = self._file.get_tensor("record")
        self._ids = self._file.get_slice("ids")
        self._target = self._file.get_slice("target")

    def __len__(self) -> int:
        return len(self.offsets) - 1

    @property
    def lengths(self) -> np.ndarray:
        return np.diff(self.offsets)

    def __getitem__(self, i: int) -> Sample:
        start, end = int(self.offsets[i]), int(self.offsets[i + 1])
        return Sample(
            ids=self._ids[start:end],
            target=self._target[start:end],
            canvas=(int(self.canvas[i, 0]), int(self.canvas[i, 1])),
            image_span=(int(self.image_span[i, 0]), int(self.image_span[i, 1])),
            task=self.tasks[int(self.task[i])],
            record=int(self.record[i]),
        )


def shard_paths(folder: str | os.PathLike) -> list[Path]:
    """The complete shards of a folder, in name order (temporary files of an unfinished run are ignored)."""
    folder = Path(folder)
    if not folder.is_dir():
        raise LuminaError(f"{folder}: shard folder not found")
    return sorted(folder.glob(SHARD_GLOB))


class ShardSet:
    """All samples of several shard folders as one indexable collection."""

    def __init__(self, folders: list[str | os.PathLike]):
        self.shards = [Shard(p) for folder in folders for p in shard_paths(folder)]
        if not self.shards:
            raise LuminaError(f"no shards ({SHARD_GLOB}) in {', '.join(map(str, folders))}")
        sizes = np.array([len(s) for s in self.shards], dtype=np.int64)
        self._starts = np.concatenate([[0], np.cumsum(sizes)])
        self.lengths = np.concatenate([s.lengths for s in self.shards])
        self.canvas = np.concatenate([s.canvas for s in self.shards])
        self.tasks = np.concatenate([np.asarray(s.tasks, dtype=object)[s.task] for s in self.shards])

    def __len__(self) -> int:
        return int(self._starts[-1])

    def __getitem__(self, i: int) -> Sample:
        shard = int(np.searchsorted(self._starts, i, side="right")) - 1
        return self.shards[shard][i - int(self._starts[shard])]
