"""The decode worker: one thread owns the model and serves a bounded queue of jobs.

Jobs of one kind with equal settings that are waiting together run as one decode batch, each image or reply
with its own seed, so it is the same whether its request was batched or not: text-to-image jobs of equal
`ImageSettings` (size and generation config) as one pipeline call over all their prompts, chats of equal
`GenerationConfig` (each on its own canvas) as one `chat_many` call. An idle worker waits `batch_window_s` after a
new request for companions. A job whose client has gone leaves the queue; a running decode stops at the next
token once every job in it has gone.
"""

import logging
import threading
import time
from collections import deque

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.generate.engine import Step
from lumina_mgpt.pipeline import LuminaMGPTPipeline
from lumina_mgpt.serve.jobs import (
    APIError,
    ChatJob,
    ChatResult,
    EditJob,
    ImageJob,
    ImageResult,
    Job,
    Metrics,
    Partial,
)
from lumina_mgpt.serve.limits import Limits
from lumina_mgpt.unirep import block_length

logger = logging.getLogger(__name__)
PROGRESS_EVENTS = 20  # progress events per image decode; chats report every CHAT_PROGRESS_STEPS tokens
CHAT_PROGRESS_STEPS = 16


class Cancelled(Exception):
    """Every job of the running decode has been cancelled."""


class Batcher:
    def __init__(self, pipe: LuminaMGPTPipeline, limits: Limits) -> None:
        self.pipe, self.limits = pipe, limits
        self.counters = dict(
            decodes=0, batched_requests=0, images=0, chats=0, cancelled=0, aborted_decodes=0, failed_decodes=0
        )
        self._queue: deque[Job] = deque()
        self._running: list[Job] = []
        self._cond = threading.Condition()
        self._stopping = False
        self._thread = threading.Thread(target=self._work, name="lumina-decode", daemon=True)
        layout = pipe.layout
        self._stop_ids = {*layout.stop_ids, layout.turn_sep_id}

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float = 30.0, error: APIError | None = None) -> None:
        """Refuse new jobs, fail the queued and running ones with `error` (default 503 `shutting_down`), cancel
        the decode and wait for the worker."""
        error = error or APIError(503, "the server is shutting down", code="shutting_down")
        with self._cond:
            self._stopping = True
            waiting, running = list(self._queue), list(self._running)
            self._queue.clear()
            self._cond.notify_all()
        for job in waiting + running:  # a running job's client hears this before any late result
            job.emit("error", error)
        for job in running:
            job.cancelled.set()
        if self._thread.is_alive():
            self._thread.join(timeout)

    def submit(self, job: Job) -> None:
        """Queue a job; raises APIError 429 when the queue is full (503 while stopping)."""
        with self._cond:
            if self._stopping:
                raise APIError(503, "the server is shutting down", code="shutting_down")
            if len(self._queue) >= self.limits.max_queue:
                raise APIError(
                    429,
                    f"the server is busy ({len(self._queue)} requests queued); retry later",
                    code="queue_full",
                    kind="rate_limit_exceeded",
                )
            self._queue.append(job)
            self._cond.notify_all()

    def cancel(self, job: Job) -> None:
        """The job's client has gone: drop it from the queue, or mark it so its decode can stop."""
        if job.finished or job.cancelled.is_set():
            return
        job.cancelled.set()
        with self._cond:
            if job in self._queue:
                self._queue.remove(job)
            self.counters["cancelled"] += 1

    def health(self) -> dict[str, int]:
        with self._cond:
            return {"queued": len(self._queue), "running": len(self._running), **self.counters}

    # ------------------------------------------------------------------------------------------- worker

    def _take(self) -> list[Job] | None:
        """The next batch: the oldest job plus queued jobs of its kind and settings, up to the row limit."""
        limit, window = self.limits.max_batch_images, self.limits.batch_window_s
        with self._cond:
            while True:
                self._cond.wait_for(lambda: self._queue or self._stopping)
                if self._stopping:
                    return None
                head = self._queue[0]
                wait = head.submitted + window - time.perf_counter()
                if wait > 0:
                    self._cond.wait_for(
                        lambda h=head: self._stopping or self._rows_like(h) >= limit, timeout=wait
                    )
                if self._stopping:
                    return None
                if self._queue and self._queue[0] is head:  # else it was cancelled meanwhile: start over
                    break
            batch, rows = [self._queue.popleft()], head.rows
            for job in list(self._queue):
                if _alike(job, head) and rows + job.rows <= limit:
                    self._queue.remove(job)
                    batch.append(job)
                    rows += job.rows
            self._running = batch
            self.counters["decodes"] += 1
            self.counters["batched_requests"] += len(batch) if len(batch) > 1 else 0
            return batch

    def _rows_like(self, head: Job) -> int:
        return sum(job.rows for job in self._queue if _alike(job, head))

    def _work(self) -> None:
        while (batch := self._take()) is not None:
            decode_id, started = self.counters["decodes"], time.perf_counter()
            try:
                if isinstance(batch[0], ChatJob):
                    self._chats(batch, decode_id, started)
                elif isinstance(batch[0], EditJob):
                    self._edits(batch, decode_id, started)
                else:
                    self._images(batch, decode_id, started)
            except Cancelled:
                self._count("aborted_decodes")
            except APIError as error:  # e.g. a tensor-parallel rank was lost (503)
                self._fail(batch, error)
            except LuminaError as error:
                self._fail(batch, APIError(400, str(error)))
            except Exception as error:
                logger.exception("decode %d failed", decode_id)
                self._fail(batch, APIError(500, f"the decode failed ({type(error).__name__}: {error})"))
            finally:
                with self._cond:
                    self._running = []

    def _images(self, jobs: list[ImageJob], decode_id: int, started: float) -> None:
        settings, layout = jobs[0].settings, self.pipe.layout
        width, height = settings.width, settings.height
        prompts = [job.prompt for job in jobs for _ in range(job.n)]
        seeds = [job.seed + k for job in jobs for k in range(job.n)]
        watch = _Watch(jobs, block_length(width, height, layout) - 1, height // layout.latent_factor)
        extra: dict = {}
        if any(job.stream for job in jobs):
            extra |= dict(preview_rows=1, on_preview=watch.preview)
        out = self.pipe(
            prompts,
            width,
            height,
            1,
            seed=seeds,
            config=settings.config,
            callback=watch.step,
            progress=False,
            **extra,
        )
        self._count("images", len(prompts))
        offset = 0
        for job in jobs:
            rows = slice(offset, offset + job.n)
            metrics = self._metrics(job, decode_id, jobs, started)
            job.emit(
                "done",
                ImageResult(out.images[rows], seeds[rows], sum(len(t) for t in out.tokens[rows]), metrics),
            )
            offset += job.n

    def _chats(self, jobs: list[ChatJob], decode_id: int, started: float) -> None:
        """One decode batch of chats; a chat the model cannot take (e.g. too long) fails alone."""
        ready, requests = [], []
        for job in jobs:
            try:
                requests.append(self.pipe.prepare_chat(job.messages, *job.canvas, job.image_prefix))
                ready.append(job)
            except LuminaError as error:
                job.emit("error", APIError(400, str(error)))
        if not ready:
            return
        watch = _Watch(ready, None, None)
        outputs = self.pipe.chat_many(
            requests,
            seed=[job.seed for job in ready],
            callback=watch.step,
            progress=False,
            config=ready[0].settings,
        )
        self._count("chats", len(ready))
        for job, out in zip(ready, outputs, strict=True):
            stopped = (
                bool(out.tokens)
                and out.tokens[-1] in self._stop_ids
                and not out.stats.get("unfinished_images")
            )
            metrics = self._metrics(job, decode_id, ready, started)
            job.emit("done", ChatResult(out, "stop" if stopped else "length", metrics))

    def _edits(self, jobs: list[EditJob], decode_id: int, started: float) -> None:
        """One decode batch of image edits: each reply is one image (edit k of a job uses seed + k)."""
        requests = [job.request for job in jobs for _ in range(job.n)]
        seeds = [job.seed + k for job in jobs for k in range(job.n)]
        watch = _Watch(jobs, jobs[0].settings.max_new_tokens, None)
        outputs = self.pipe.chat_many(
            requests, seed=seeds, callback=watch.step, progress=False, config=jobs[0].settings
        )
        self._count("images", len(requests))
        offset = 0
        for job in jobs:
            rows = outputs[offset : offset + job.n]
            images = [job.finish(out.images[0]) for out in rows]
            tokens = sum(len(out.tokens) for out in rows)
            metrics = self._metrics(job, decode_id, jobs, started)
            job.emit("done", ImageResult(images, seeds[offset : offset + job.n], tokens, metrics))
            offset += job.n

    def _metrics(self, job: Job, decode_id: int, jobs: list[Job], started: float) -> Metrics:
        return Metrics(
            decode_id,
            len(jobs),
            sum(j.rows for j in jobs),
            started - job.submitted,
            time.perf_counter() - started,
        )

    def _count(self, name: str, amount: int = 1) -> None:
        with self._cond:
            self.counters[name] += amount

    def _fail(self, jobs: list[Job], error: APIError) -> None:
        self._count("failed_decodes")
        for job in jobs:
            job.emit("error", error)


def _alike(job: Job, head: Job) -> bool:
    """Whether `job` can share `head`'s decode batch: the same kind and settings."""
    return type(job) is type(head) and job.settings == head.settings


class _Watch:
    """The callbacks of one decode: stop when every job has gone; progress and partial images for streams."""

    def __init__(self, jobs: list[Job], total_steps: int | None, total_rows: int | None) -> None:
        self.jobs, self.total_steps, self.total_rows = jobs, total_steps, total_rows
        self.every = max(1, total_steps // PROGRESS_EVENTS) if total_steps else CHAT_PROGRESS_STEPS
        self.rows = 0

    def step(self, step: Step) -> None:
        if all(job.cancelled.is_set() for job in self.jobs):
            raise Cancelled
        done = step.index + 1
        if done % self.every == 0 or done == self.total_steps:
            for job in self.jobs:
                if job.stream:
                    job.emit("progress", {"step": done, "total": self.total_steps})

    def preview(self, images: list) -> None:
        """The pipeline's preview callback: one partial image per finished latent row, for every image."""
        self.rows += 1
        offset = 0
        for job in self.jobs:
            if job.stream and not job.cancelled.is_set():
                for k in range(job.rows):
                    job.emit(
                        "partial", Partial(k, self.rows - 1, images[offset + k], self.rows, self.total_rows)
                    )
            offset += job.rows
