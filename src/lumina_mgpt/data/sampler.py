"""Length-grouped global batches within aspect-ratio buckets, mixed by task ratios; resumable mid-epoch.

Each epoch's batch order is a pure function of (seed, epoch): the epoch's pool (each task's samples
repeated or subsampled by its ratio) is shuffled, split by canvas, sorted by length inside windows of
`window` batches and cut into batches; leftovers of all canvases are pooled, length-sorted and cut; then the
batch order is shuffled. The position is just (epoch, batch), so resuming needs no replay.
"""

from collections.abc import Iterator, Mapping

import numpy as np

from lumina_mgpt.errors import LuminaError


class LengthGroupedSampler:
    """An endless stream of global batches (arrays of sample indices) with a `state_dict`."""

    def __init__(
        self,
        lengths: np.ndarray,
        canvas: np.ndarray,
        batch_size: int,
        seed: int,
        tasks: np.ndarray | None = None,
        task_ratios: Mapping[str, float] | None = None,
        max_length: int | None = None,
        window: int = 64,
    ):
        self.lengths = np.asarray(lengths, dtype=np.int64)
        canvas = np.asarray(canvas, dtype=np.int64).reshape(-1, 2)
        self.group = canvas[:, 0] * (1 << 20) + canvas[:, 1]
        self.batch_size, self.seed, self.window = batch_size, seed, window
        eligible = np.ones(len(self.lengths), dtype=bool)
        if max_length is not None:
            eligible &= self.lengths <= max_length
        self.too_long = int((~eligible).sum())
        self._pools = _task_pools(np.flatnonzero(eligible), tasks, task_ratios or {})
        if sum(len(ix) * r for ix, r in self._pools) < batch_size:
            raise LuminaError(f"the data has fewer usable samples than one global batch ({batch_size})")
        self.epoch, self.batch = 0, 0
        self._cache: tuple[int, list[np.ndarray]] | None = None

    def epoch_batches(self, epoch: int) -> list[np.ndarray]:
        """All global batches of `epoch`, in order."""
        if self._cache is not None and self._cache[0] == epoch:
            return self._cache[1]
        rng = np.random.default_rng([self.seed, epoch])
        pool = np.concatenate([_repeat(ix, ratio, rng) for ix, ratio in self._pools])
        pool = pool[rng.permutation(len(pool))]
        pool = pool[np.argsort(self.group[pool], kind="stable")]  # by canvas; shuffled within
        size, span = self.batch_size, self.batch_size * self.window
        batches, leftovers = [], []
        for members in np.split(pool, np.flatnonzero(np.diff(self.group[pool])) + 1):
            for start in range(0, len(members), span):
                chunk = self._by_length(members[start : start + span])
                full = len(chunk) - len(chunk) % size
                batches += _cut(chunk[:full], size)
                leftovers.append(chunk[full:])
        batches += _cut(self._by_length(np.concatenate(leftovers)), size)  # a partial last batch is dropped
        batches = [batches[i] for i in rng.permutation(len(batches))]
        self._cache = (epoch, batches)
        return batches

    def _by_length(self, indices: np.ndarray) -> np.ndarray:
        return indices[np.argsort(self.lengths[indices], kind="stable")]

    def __iter__(self) -> Iterator[np.ndarray]:
        return self

    def __next__(self) -> np.ndarray:
        batches = self.epoch_batches(self.epoch)
        while self.batch >= len(batches):
            self.epoch, self.batch = self.epoch + 1, 0
            batches = self.epoch_batches(self.epoch)
        self.batch += 1
        return batches[self.batch - 1]

    def state_dict(self) -> dict[str, int]:
        return {"epoch": self.epoch, "batch": self.batch}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])


def rank_share(batch: np.ndarray | list, rank: int, world_size: int) -> np.ndarray | list:
    """This rank's contiguous slice of a global batch (the batch size must divide by the world size)."""
    if len(batch) % world_size:
        raise LuminaError(f"global batch of {len(batch)} does not split over {world_size} ranks")
    n = len(batch) // world_size
    return batch[rank * n : (rank + 1) * n]


def _cut(indices: np.ndarray, size: int) -> list[np.ndarray]:
    return [indices[i : i + size] for i in range(0, len(indices) - size + 1, size)]


def _task_pools(
    indices: np.ndarray, tasks: np.ndarray | None, ratios: Mapping[str, float]
) -> list[tuple[np.ndarray, float]]:
    """(indices, ratio) per task; tasks without a ratio count once per epoch."""
    if tasks is None:
        if ratios:
            raise LuminaError("task ratios given but the samples carry no task names")
        return [(indices, 1.0)]
    tasks = np.asarray(tasks, dtype=object)[indices]
    names = sorted(set(tasks.tolist()))
    unknown = sorted(set(ratios) - set(names))
    if unknown:
        raise LuminaError(f"task ratio for {unknown[0]!r}, but the data has only tasks {names}")
    for name, ratio in ratios.items():
        if not ratio >= 0:
            raise LuminaError(f"task ratio for {name!r} must be >= 0, got {ratio}")
    return [(indices[tasks == name], float(ratios.get(name, 1.0))) for name in names]


def _repeat(indices: np.ndarray, ratio: float, rng: np.random.Generator) -> np.ndarray:
    """`ratio` copies of `indices`: whole repeats, then a random subset for the fraction."""
    whole = int(ratio)
    extra = rng.choice(indices, size=round((ratio - whole) * len(indices)), replace=False)
    return np.concatenate([np.tile(indices, whole), extra]).astype(np.int64)
