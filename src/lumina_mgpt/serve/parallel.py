"""Tensor-parallel serving: rank 0 answers HTTP, the other ranks follow its decode batches.

    torchrun --nproc-per-node 2 lumina-mgpt serve --tensor-parallel 2 --device cuda

Rank 0's batcher decodes through a `Leader`: before each decode call (`pipe(...)`, `pipe.chat_many(...)`) it
broadcasts the call, its arguments without the callbacks, to the other ranks, which run the same call on their
shards (`follow`), so every collective of the decode lines up. Every `CANCEL_EVERY` steps rank 0 broadcasts
whether the batch was cancelled, so all ranks stop at the same step. While idle, rank 0 sends a heartbeat every
few seconds. A rank that dies fails the next collective (gloo sees the closed connection at once); a rank that
hangs trips the watchdog after `timeout` seconds without progress. Either way rank 0 answers the running and
waiting requests 503 and stops the server, and the followers exit.
"""

import contextlib
import logging
import os
import sys
import threading
import time
from collections.abc import Callable
from typing import Any

import torch
import torch.distributed as dist

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.generate.engine import Step
from lumina_mgpt.pipeline import LuminaMGPTPipeline
from lumina_mgpt.serve.jobs import APIError

logger = logging.getLogger(__name__)
LOST_GRACE_S = 8.0  # after losing a rank: time for uvicorn to send the 503s before the process ends
CANCEL_EVERY = 8  # decode steps between the ranks' agreements on cancellation (each is a small broadcast)
DECODE_CALLS = ("__call__", "chat_many")
LOCAL_ONLY = ("callback", "on_preview", "preview_rows")  # rank 0's own watchers: never sent


class _Stopped(Exception):
    """Rank 0 cancelled the running decode; a follower stops it at the same step."""


class Watchdog:
    """Calls `on_timeout` once when `timeout` seconds pass without `touch()` while armed."""

    def __init__(self, timeout: float, on_timeout: Callable[[], None]) -> None:
        self.timeout, self._on_timeout = timeout, on_timeout
        self._last: float | None = None  # None: not armed yet (the ranks may still be loading)
        self._done = threading.Event()
        threading.Thread(target=self._watch, name="lumina-rank-watchdog", daemon=True).start()

    def touch(self) -> None:
        self._last = time.monotonic()

    def close(self) -> None:
        self._done.set()

    def _watch(self) -> None:
        while not self._done.wait(min(0.5, self.timeout / 4)):
            last = self._last
            if last is not None and time.monotonic() - last > self.timeout:
                self._done.set()
                self._on_timeout()


class Leader:
    """Rank 0's pipeline: `pipe` whose decode calls run on every rank (other attributes are `pipe`'s own).

    `on_lost(reason)` is called once when a rank is lost; the decode call that noticed raises APIError 503."""

    def __init__(self, pipe: LuminaMGPTPipeline, timeout: float) -> None:
        self._pipe = pipe
        self.on_lost: Callable[[str], None] = lambda reason: None  # see stop_when_lost
        self._flag = _flag(pipe)
        self._lock = threading.Lock()  # one thread issues collectives at a time, in one order on every rank
        self.lost: str | None = None
        self._watchdog = Watchdog(timeout, lambda: self._lose(f"a rank made no progress for {timeout:g} s"))
        self._beat = min(5.0, timeout / 4)
        try:  # a first beat before serving arms the watchdog, so a rank that hangs from the start is noticed
            self._send(("beat",))
        except RuntimeError as error:
            self._watchdog.close()
            raise LuminaError(
                f"a tensor-parallel rank was lost while starting ({str(error).splitlines()[0][:200]})"
            ) from None
        threading.Thread(target=self._heartbeat, name="lumina-rank-heartbeat", daemon=True).start()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._pipe, name)

    def __call__(self, *args: Any, **kwargs: Any):
        return self._everywhere("__call__", args, kwargs)

    def chat_many(self, *args: Any, **kwargs: Any):
        return self._everywhere("chat_many", args, kwargs)

    def stop_when_lost(self, server, batcher) -> None:
        """When a rank is lost: fail the requests with 503 `rank_lost`, stop the uvicorn `server`, and end the
        process (status 1) at the latest LOST_GRACE_S later: a decode may be stuck in a collective for good."""

        def shut_down(reason: str) -> None:
            batcher.stop(1.0, _lost_error(reason))
            server.should_exit = True
            time.sleep(LOST_GRACE_S)
            _exit_lost(reason)

        self.on_lost = lambda reason: threading.Thread(target=shut_down, args=(reason,), daemon=True).start()

    def finish(self) -> None:
        """After the server has stopped: tell the followers to exit, or end the process if a rank was lost."""
        self._watchdog.close()
        if self.lost is not None:
            _exit_lost(self.lost)
        # the followers may have gone already (torchrun stops them together with rank 0)
        with self._lock, contextlib.suppress(RuntimeError):
            self._send(None)
        dist.destroy_process_group()

    def _everywhere(self, method: str, args: tuple, kwargs: dict):
        watchers = {k: v for k, v in kwargs.items() if k in LOCAL_ONLY}
        shared = {k: v for k, v in kwargs.items() if k not in LOCAL_ONLY}
        with self._lock:
            if self.lost is not None:
                raise _lost_error(self.lost)
            self._send(("call", method, args, shared))
            steps = _LeaderSteps(self._flag, watchers.pop("callback", None), self._watchdog.touch)
            try:
                return getattr(self._pipe, method)(*args, **shared, **watchers, callback=steps)
            except LuminaError:  # bad input: every rank refused it at the same point
                raise
            except Exception as error:
                if steps.cancelled is not None and error is steps.cancelled:
                    raise
                # a collective failed, or the ranks are out of step: this job cannot be served any more
                self._lose(f"{type(error).__name__}: {str(error).splitlines()[0][:200]}")
                raise _lost_error(self.lost) from None
            finally:
                self._watchdog.touch()

    def _send(self, message: tuple | None) -> None:
        dist.broadcast_object_list([message], src=0)
        self._watchdog.touch()

    def _heartbeat(self) -> None:
        while self.lost is None:
            time.sleep(self._beat)
            with self._lock:
                if self.lost is not None:
                    return
                try:
                    self._send(("beat",))
                except Exception as error:
                    self._lose(f"{type(error).__name__}: {str(error).splitlines()[0][:200]}")

    def _lose(self, reason: str) -> None:
        if self.lost is not None:
            return
        self.lost = f"a tensor-parallel rank was lost ({reason})"
        logger.error(self.lost)
        self.on_lost(self.lost)


class _LeaderSteps:
    """Rank 0's step callback: its batcher's callback, and every CANCEL_EVERY steps the broadcast of whether
    that callback asked to stop (then re-raised on every rank at that step)."""

    def __init__(self, flag: torch.Tensor, callback, touch: Callable[[], None]) -> None:
        self.flag, self.callback, self.touch = flag, callback, touch
        self.cancelled: BaseException | None = None

    def __call__(self, step: Step) -> None:
        self.touch()
        if self.callback is not None and self.cancelled is None:
            try:
                self.callback(step)
            except Exception as error:
                self.cancelled = error
        if step.index % CANCEL_EVERY == 0:
            self.flag.fill_(self.cancelled is not None)
            dist.broadcast(self.flag, src=0)
            if self.cancelled is not None:
                raise self.cancelled


def follow(pipe: LuminaMGPTPipeline, timeout: float) -> None:
    """A follower rank's loop: run rank 0's decode calls until it says stop; a one-line LuminaError when rank 0
    is lost (the watchdog ends the process when rank 0 hangs)."""
    flag = _flag(pipe)

    def hung() -> None:
        print(
            f"error: rank 0 of the tensor-parallel server made no progress for {timeout:g} s", file=sys.stderr
        )
        os._exit(1)  # the main thread is stuck in a collective

    watchdog = Watchdog(timeout, hung)

    def steps(step: Step) -> None:
        watchdog.touch()
        if step.index % CANCEL_EVERY == 0:
            dist.broadcast(flag, src=0)
            if flag.item():
                raise _Stopped

    try:
        while (message := _receive()) is not None:
            watchdog.touch()
            if message[0] == "call":
                _, method, args, kwargs = message
                # rank 0 refuses (bad input) or cancels the same batch at the same point
                with contextlib.suppress(LuminaError, _Stopped):
                    getattr(pipe, method)(*args, **kwargs, callback=steps)
                watchdog.touch()
        dist.destroy_process_group()
    except RuntimeError as error:
        raise LuminaError(
            f"rank 0 of the tensor-parallel server was lost ({str(error).splitlines()[0][:200]})"
        ) from None
    finally:
        watchdog.close()


def _receive() -> tuple | None:
    box = [None]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def _exit_lost(reason: str) -> None:
    """End rank 0 after a lost rank: a one-line error, status 1, without waiting on any collective."""
    print(f"error: {reason}", file=sys.stderr, flush=True)
    sys.stdout.flush()
    os._exit(1)


def _lost_error(reason: str) -> APIError:
    """The 503 the requests of a server that lost a rank get."""
    return APIError(503, f"{reason}; the server is shutting down", code="rank_lost")


def _flag(pipe: LuminaMGPTPipeline) -> torch.Tensor:
    """The one-element tensor the cancellation agreements are broadcast in (on the model's device)."""
    return torch.zeros(1, dtype=torch.int32, device=next(pipe.transformer.parameters()).device)
