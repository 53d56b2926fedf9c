"""Shapes-world samples made on the fly: tasks drawn by weight, rendered, VQ-encoded and serialised.

Global batch b uses one canvas, drawn from the area's buckets by `rng([seed, b])`; its sample g (0-based over
all ranks) is drawn by `rng([seed, b, g, attempt])` among the task kinds that fit the canvas, so every rank
makes only its own share, the stream is the same on any number of ranks or workers, and the position is
just the batch counter. A sample longer than `max_length` is redrawn with the next attempt. With `workers`,
processes make the next batches while the current one trains (their image tokenizer runs on the CPU).
"""

import multiprocessing
import weakref
from collections.abc import Mapping
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image

from lumina_mgpt.data.encode import check_factor, conversation_sample, encode_images
from lumina_mgpt.data.shards import Sample
from lumina_mgpt.errors import LuminaError
from lumina_mgpt.text import Message, TextTokenizer
from lumina_mgpt.unirep import buckets
from lumina_mgpt.vocab import TokenLayout
from lumina_mgpt.vq import load_image_tokenizer
from lumina_mgpt.world import TASK_KINDS, Task, sample_task
from lumina_mgpt.world.scene import MIN_SIDE

MAX_ATTEMPTS = 100


@dataclass(frozen=True)
class WorldSpec:
    """What a world sampler needs; plain data, so worker processes can rebuild the sampler."""

    tasks: dict[str, float]
    area: int
    tokenizer: str
    layout: str
    image_tokenizer: str
    seed: int
    max_length: int | None = None
    max_aspect: float | None = None  # keep only buckets with long side <= max_aspect x short side


class WorldSampler:
    """Makes the samples of given global indices of a batch (see the module docstring)."""

    def __init__(self, spec: WorldSpec, device: torch.device | str = "cpu"):
        unknown = sorted(set(spec.tasks) - set(TASK_KINDS))
        if unknown:
            raise LuminaError(f"unknown world task {unknown[0]!r}; expected some of {', '.join(TASK_KINDS)}")
        if not spec.tasks or any(not w >= 0 for w in spec.tasks.values()) or sum(spec.tasks.values()) <= 0:
            raise LuminaError("world task weights must be >= 0 with a positive sum")
        self.spec = spec
        self.kinds = sorted(spec.tasks)
        self.canvases, self.weights = self._canvases(
            np.array([spec.tasks[k] for k in self.kinds], dtype=float)
        )
        self.tokenizer = TextTokenizer.from_folder(spec.tokenizer)
        self.layout = TokenLayout.from_tokenizer(spec.tokenizer, spec.layout)
        self.image_tokenizer = load_image_tokenizer(spec.image_tokenizer, device=device)
        check_factor(self.image_tokenizer, self.layout)

    def _canvases(self, weights: np.ndarray) -> tuple[list[tuple[int, int]], list[np.ndarray]]:
        """The area's bucket canvases the world can draw on, each with the task weights of the kinds that fit
        it (dual-panel tasks need tall enough canvases): found now, not hours into a run."""
        canvases, canvas_weights = [], []
        drawable = np.zeros(len(self.kinds), dtype=bool)
        for width, height in buckets(self.spec.area, max_ratio=self.spec.max_aspect):
            if min(width, height) < MIN_SIDE:
                continue
            fits = np.array([_drawable(kind, width, height, self.spec.seed) for kind in self.kinds])
            drawable |= fits
            if (weights * fits).sum() > 0:
                canvases.append((width, height))
                canvas_weights.append(weights * fits / (weights * fits).sum())
        if not drawable.all():
            kind = self.kinds[int(np.flatnonzero(~drawable)[0])]
            raise LuminaError(f"world task {kind!r} cannot be drawn on any canvas of area {self.spec.area}")
        return canvases, canvas_weights

    def samples(self, batch: int, indices: range) -> list[Sample]:
        """The samples of global indices `indices` of `batch`."""
        canvas = int(np.random.default_rng([self.spec.seed, batch]).integers(len(self.canvases)))
        drafts = [self._draw(batch, index, canvas, 0) for index in indices]
        codes = encode_images([image for _, _, images in drafts for image in images], self.image_tokenizer)
        samples, used = [], 0
        for index, (kind, messages, images) in zip(indices, drafts, strict=True):
            grids, used = codes[used : used + len(images)], used + len(images)
            sample = conversation_sample(messages, grids, self.tokenizer, self.layout, kind)
            attempt = 0
            while not self._fits(sample):  # rare: redrawn and encoded alone
                attempt += 1
                if attempt == MAX_ATTEMPTS:
                    width, height = self.canvases[canvas]
                    raise LuminaError(
                        f"no world sample on a {width}x{height} canvas fits max_length {self.spec.max_length}"
                    )
                kind, messages, images = self._draw(batch, index, canvas, attempt)
                sample = conversation_sample(
                    messages, encode_images(images, self.image_tokenizer), self.tokenizer, self.layout, kind
                )
            samples.append(sample)
        return samples

    def _draw(
        self, batch: int, index: int, canvas: int, attempt: int
    ) -> tuple[str, list[Message], list[Image.Image]]:
        rng = np.random.default_rng([self.spec.seed, batch, index, attempt])
        kind = self.kinds[int(rng.choice(len(self.kinds), p=self.weights[canvas]))]
        return kind, *task_conversation(sample_task(kind, rng, *self.canvases[canvas]))

    def _fits(self, sample: Sample) -> bool:
        return self.spec.max_length is None or len(sample) <= self.spec.max_length


def task_conversation(task: Task) -> tuple[list[Message], list[Image.Image]]:
    """A task's true conversation as training messages, and its images in order of their placeholders."""
    messages = [Message(role=m["role"], content=m["content"]) for m in task.messages]
    return messages, [Image.fromarray(image) for m in task.messages for image in m["images"]]


class WorldSource:
    """This rank's share of each global batch of shapes-world task samples, made here or by `workers`
    processes `prefetch` batches ahead."""

    def __init__(
        self,
        spec: WorldSpec,
        *,
        batch_size: int,
        rank: int,
        world_size: int,
        device: torch.device | str = "cpu",
        workers: int = 0,
        prefetch: int = 2,
    ):
        if batch_size % world_size:
            raise LuminaError(f"global batch of {batch_size} does not split over {world_size} ranks")
        share = batch_size // world_size
        self.indices = range(rank * share, (rank + 1) * share)
        self.sampler = WorldSampler(spec, device)
        self.batch, self.prefetch = 0, prefetch
        self._pending: dict[int, list] = {}  # batch -> the workers' async results
        self._pool = None
        if workers:
            context = multiprocessing.get_context("spawn")  # safe after CUDA is initialised
            self._pool = context.Pool(workers, initializer=_start_worker, initargs=(spec,))
            weakref.finalize(self, self._pool.terminate)
            self._chunks = [c for c in np.array_split(np.asarray(self.indices), workers) if len(c)]

    def __iter__(self) -> "WorldSource":
        return self

    def __next__(self) -> list[Sample]:
        if self._pool is None:
            samples = self.sampler.samples(self.batch, self.indices)
        else:
            for batch in range(self.batch, self.batch + self.prefetch + 1):
                if batch not in self._pending:
                    self._pending[batch] = [
                        self._pool.apply_async(_worker_samples, (batch, range(c[0], c[-1] + 1)))
                        for c in self._chunks
                    ]
            samples = [s for result in self._pending.pop(self.batch) for s in result.get()]
        self.batch += 1
        return samples

    def state_dict(self) -> dict[str, int]:
        return {"batch": self.batch}

    def load_state_dict(self, state: Mapping[str, int]) -> None:
        self.batch = int(state["batch"])
        self._pending.clear()


_WORKER: WorldSampler | None = None


def _start_worker(spec: WorldSpec) -> None:
    global _WORKER
    torch.set_num_threads(1)
    _WORKER = WorldSampler(spec)


def _worker_samples(batch: int, indices: range) -> list[Sample]:
    return _WORKER.samples(batch, indices)


def _drawable(kind: str, width: int, height: int, seed: int) -> bool:
    try:
        sample_task(kind, np.random.default_rng(seed), width, height)
    except LuminaError:
        return False
    return True
