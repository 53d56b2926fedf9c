"""Progress and metrics of the main rank: a tqdm bar, TensorBoard scalars and `metrics.jsonl`."""

import json
import os
import time
from pathlib import Path

from tqdm import tqdm

from lumina_mgpt.errors import LuminaError


class MetricsLog:
    """Writes scalars every `every` steps; tokens/s is measured over the steps since the last write."""

    def __init__(self, folder: Path, *, total_steps: int, start_step: int, every: int, enabled: bool):
        self.enabled, self.every = enabled, every
        self.tokens, self.since = 0, time.perf_counter()
        if not enabled:
            return
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise LuminaError("training logs need tensorboard: pip install 'lumina-mgpt[train]'") from None
        folder.mkdir(parents=True, exist_ok=True)
        self.writer = SummaryWriter(str(folder / "tensorboard"), purge_step=start_step + 1)
        _drop_rows_after(folder / "metrics.jsonl", start_step)  # a resumed run logs those steps again
        self.jsonl = (folder / "metrics.jsonl").open("a", encoding="utf-8")
        self.bar = tqdm(total=total_steps, initial=start_step, unit="step", dynamic_ncols=True)

    def step(self, step: int, tokens: int, scalars: dict[str, float]) -> None:
        """Record 1-based `step`, which trained on `tokens` tokens (all ranks)."""
        self.tokens += tokens
        if not self.enabled:
            return
        self.bar.update(1)
        if step % self.every and "val_loss" not in scalars:  # validation losses are always written
            return
        now = time.perf_counter()
        scalars = {**scalars, "tokens_per_s": self.tokens / (now - self.since)}
        self.tokens, self.since = 0, now
        for name, value in scalars.items():
            self.writer.add_scalar("val/loss" if name == "val_loss" else f"train/{name}", value, step)
        self.jsonl.write(json.dumps({"step": step, **scalars}) + "\n")
        self.jsonl.flush()
        shown = {"val_loss": f"{scalars['val_loss']:.4f}"} if "val_loss" in scalars else {}
        self.bar.set_postfix(loss=f"{scalars['loss']:.4f}", lr=f"{scalars['lr']:.2e}", **shown)

    def write(self, message: str) -> None:
        if self.enabled:
            self.bar.write(message)

    def close(self) -> None:
        if self.enabled:
            self.writer.close()
            self.jsonl.close()
            self.bar.close()


def _drop_rows_after(path: Path, step: int) -> None:
    """Rewrite `path` (atomically) without the rows of steps after `step`: those of a run killed after its
    last checkpoint, which the resumed run trains and logs again."""
    if not path.exists():
        return
    lines = path.read_text(encoding="utf-8").splitlines(keepends=True)
    kept = [line for line in lines if _step_of(line) is not None and _step_of(line) <= step]
    if len(kept) < len(lines):
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text("".join(kept), encoding="utf-8")
        os.replace(tmp, path)


def _step_of(line: str) -> int | None:
    """The step of a metrics row; None for a line a killed run left half-written."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return None
