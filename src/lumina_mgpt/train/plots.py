"""The loss curve of a run as a PNG (matplotlib, no display needed)."""

import json
import os
from pathlib import Path

LOSS_CURVE = "loss.png"


def save_loss_curve(run: Path) -> Path:
    """Plot `run/metrics.jsonl`'s training loss and, where logged, validation loss against the step into
    `run/loss.png` (written atomically)."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot as plt

    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    figure, axes = plt.subplots(figsize=(6, 4), dpi=100)
    for key, label in (("loss", "training"), ("val_loss", "validation")):
        points = [(row["step"], row[key]) for row in rows if key in row]
        if points:
            axes.plot(*zip(*points, strict=True), label=label, marker="o" if key == "val_loss" else None)
    axes.set(xlabel="step", ylabel="cross-entropy (nats/token)", title=run.name)
    axes.grid(alpha=0.3)
    if rows:
        axes.legend()
    path, tmp = run / LOSS_CURVE, run / f".{LOSS_CURVE}.tmp.png"
    figure.savefig(tmp)
    plt.close(figure)
    os.replace(tmp, path)
    return path
