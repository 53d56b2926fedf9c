"""Training checkpoints with torch.distributed.checkpoint (DCP), written atomically.

A checkpoint is the folder `step-N` holding the sharded model and optimiser, the step, the data position and
each rank's RNG states. It is written as `step-N.tmp` and renamed once every rank has finished, so a crash
mid-write leaves the previous checkpoint the latest complete one. The newest `keep` checkpoints are kept.
With `trainable_only` (LoRA) the model part holds only the trainable weights: the frozen ones are the base
model's, loaded again when the run resumes.
"""

import os
import pickle
import re
import shutil
import time
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
import torch.distributed.checkpoint as dcp
from torch import nn
from torch.distributed.checkpoint.default_planner import DefaultLoadPlanner
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_state_dict, set_state_dict

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.train.distributed import Runtime

STEP_DIR = re.compile(r"step-(\d+)")
# Test hook: "N:SECONDS" sleeps after step N's files are written but before they are committed, so a test
# can kill the process mid-write.
PAUSE_ENV = "LUMINA_MGPT_CHECKPOINT_PAUSE"


class Checkpointer:
    """Saves and restores model, optimiser, RNG states and extra values under `folder`."""

    def __init__(self, folder: str | os.PathLike, keep: int, runtime: Runtime, trainable_only: bool = False):
        self.folder, self.keep, self.runtime = Path(folder), keep, runtime
        self.options = StateDictOptions(ignore_frozen_params=trainable_only, strict=not trainable_only)

    def latest(self) -> Path | None:
        """The newest complete checkpoint, or None."""
        done = [
            p for p in self.folder.glob("step-*") if STEP_DIR.fullmatch(p.name) and (p / ".metadata").exists()
        ]
        return max(done, key=_step_of, default=None)

    def save(
        self, step: int, model: nn.Module, optimizer: torch.optim.Optimizer, extra: dict[str, Any]
    ) -> Path:
        final = self.folder / f"step-{step}"
        tmp = final.with_name(final.name + ".tmp")
        if self.runtime.is_main:
            shutil.rmtree(tmp, ignore_errors=True)
        dist.barrier()
        model_state, optimizer_state = get_state_dict(model, optimizer, options=self.options)
        state = {
            "model": model_state,
            "optimizer": optimizer_state,
            **extra,
            _rng_key(self.runtime.rank): _rng_states(self.runtime.device),
        }
        dcp.save(state, checkpoint_id=tmp)
        _pause_if_asked(step)
        dist.barrier()
        if self.runtime.is_main:
            tmp.rename(final)
            self._prune()
        dist.barrier()
        return final

    def load(
        self, path: Path, model: nn.Module, optimizer: torch.optim.Optimizer, extra: dict[str, Any]
    ) -> dict[str, Any]:
        """Restore model, optimiser and this rank's RNG states from `path`; return `extra` (a template of the
        saved extra values, e.g. `{"step": 0}`) filled with the saved ones."""
        model_state, optimizer_state = get_state_dict(model, optimizer, options=self.options)
        state = {"model": model_state, "optimizer": optimizer_state, **extra}
        rng_key = _rng_key(self.runtime.rank)
        try:
            saved_keys = dcp.FileSystemReader(path).read_metadata().state_dict_metadata
        except (OSError, EOFError, pickle.UnpicklingError) as error:
            raise unloadable_checkpoint(path, error) from None
        saved_weights = {k.removeprefix("model.") for k in saved_keys if k.startswith("model.")}
        if saved_weights != set(model_state):  # fewer layers would otherwise load silently
            name = min(saved_weights ^ set(model_state))
            raise unloadable_checkpoint(
                path, f"{'the model has no' if name in saved_weights else 'it lacks'} weight {name}"
            )
        has_rng = any(k.startswith(rng_key + ".") for k in saved_keys)  # absent if the world size grew
        if has_rng:
            state[rng_key] = _rng_states(self.runtime.device)
        try:
            dcp.load(state, checkpoint_id=path, planner=_WeightsOnlyLoadPlanner())
        except dcp.CheckpointException as error:  # every rank raises it: DCP gathers the failures
            raise unloadable_checkpoint(path, next(iter(error.failures.values()))[0]) from None
        set_state_dict(
            model,
            optimizer,
            model_state_dict=state["model"],
            optim_state_dict=state["optimizer"],
            options=self.options,
        )
        if has_rng:
            _set_rng_states(state[rng_key], self.runtime.device)
        return {key: state[key] for key in extra}

    def remove_unfinished(self) -> None:
        """Delete `step-N.tmp` folders left by a crash (main rank)."""
        if self.runtime.is_main:
            for tmp in self.folder.glob("step-*.tmp"):
                shutil.rmtree(tmp, ignore_errors=True)
        dist.barrier()

    def _prune(self) -> None:
        done = sorted((p for p in self.folder.glob("step-*") if STEP_DIR.fullmatch(p.name)), key=_step_of)
        for old in done[: -self.keep]:
            shutil.rmtree(old)


class _WeightsOnlyLoadPlanner(DefaultLoadPlanner):
    """DCP's planner unpickles non-tensor items with weights_only=False; refuse anything but plain data first."""

    def load_bytes(self, read_item, value) -> None:
        torch.load(value, weights_only=True)
        value.seek(0)
        super().load_bytes(read_item, value)


def load_state_file(path: Path, device: torch.device | str = "cpu") -> dict[str, Any]:
    """A single-file checkpoint (`torch.save` of plain data and tensors), loaded `weights_only`; a refused
    pickle or a damaged file is one LuminaError."""
    try:
        state = torch.load(path, map_location=device, weights_only=True)
    except (OSError, EOFError, RuntimeError, pickle.UnpicklingError) as error:
        raise unloadable_checkpoint(path, error) from None
    if not isinstance(state, dict):
        raise unloadable_checkpoint(path, f"it holds a {type(state).__name__}, not a mapping")
    return state


def unloadable_checkpoint(path: Path, cause: BaseException | str) -> LuminaError:
    """The one-line error for a checkpoint that cannot be resumed from, with its first line of `cause`."""
    if isinstance(cause, BaseException):
        cause = (str(cause).strip().splitlines() or [type(cause).__name__])[0]
    return LuminaError(
        f"cannot resume from checkpoint {path} ({cause}): it was written by a different model "
        f"config or is damaged; delete that {'folder' if path.is_dir() else 'file'} to resume from the previous checkpoint (if any), "
        "or use another --out"
    )


def _step_of(path: Path) -> int:
    return int(STEP_DIR.fullmatch(path.name).group(1))


def _rng_key(rank: int) -> str:
    return f"rng_rank{rank}"


def _rng_states(device: torch.device) -> dict[str, torch.Tensor]:
    states = {"cpu": torch.get_rng_state()}
    if device.type == "cuda":
        states["cuda"] = torch.cuda.get_rng_state(device)
    return states


def _set_rng_states(states: dict[str, torch.Tensor], device: torch.device) -> None:
    torch.set_rng_state(states["cpu"])
    if "cuda" in states:
        torch.cuda.set_rng_state(states["cuda"], device)


def _pause_if_asked(step: int) -> None:
    spec = os.environ.get(PAUSE_ENV, "")
    if spec and int(spec.split(":")[0]) == step:
        time.sleep(float(spec.split(":")[1]))
