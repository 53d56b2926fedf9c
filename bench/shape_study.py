"""Which model shape learns the shapes world fastest per CPU-second: learning curves of a few shapes on equal
training time, on one stage's mix (default: the omni stage of configs/train/shapes.yaml), in one run.

Each shape is `HIDDENxLAYERS` (heads of 64 dims, SwiGLU width 2.75 x hidden rounded to 32), randomly
initialised and trained with the trainer's own step (`train.trainer.train_step`, packed rows as the config says)
at a constant learning rate after a short warm-up. Shapes take turns, the one with the fewest training seconds
stepping next, so a busy machine slows them alike. Every `--eval-every` training seconds each is scored on the
same held-out samples (another seed of the same mix): cross-entropy per target token, overall and per task.

    nice -n 5 python bench/shape_study.py --out runs/shape-study [--seconds 420] [--shapes 128x4,256x6,...]
        [--threads 2] [--reference MODEL_FOLDER]

`--reference` scores a trained model (e.g. the shipped one, with a config of its tokenizer) on the same held-out
samples, a line to read the curves against.

Writes OUT/results.json (rewritten atomically after every eval) and OUT/curves.png; the last line is the shape
with the lowest held-out loss at the end.
"""

import argparse
import dataclasses
import json
import os
import time
from collections import defaultdict
from pathlib import Path

import torch

from lumina_mgpt.data.batch import collate, micro_batches
from lumina_mgpt.model.checkpoint import load_transformer
from lumina_mgpt.train.config import load_config
from lumina_mgpt.train.distributed import init_distributed
from lumina_mgpt.train.losses import lm_losses
from lumina_mgpt.train.trainer import build_model, make_source, train_step

ROOT = Path(__file__).resolve().parents[1]
SHAPES = "128x4,192x4,256x3,256x6,384x4,512x8"  # 256x6: the shipped model; 512x8: configs/train/shapes.yaml's


def model_fields(shape: str) -> dict[str, int]:
    """Config fields of `HIDDENxLAYERS`."""
    hidden, layers = (int(x) for x in shape.split("x"))
    return {
        "hidden_size": hidden,
        "num_hidden_layers": layers,
        "num_attention_heads": max(1, hidden // 64),
        "intermediate_size": 32 * round(2.75 * hidden / 32),
    }


@torch.no_grad()
def held_out_losses(model, held_out: list, device: torch.device) -> dict:
    """Cross-entropy per target token of `model` on `held_out`: {"loss": overall, "tasks": {task: loss}}."""
    sums, counts = defaultdict(float), defaultdict(int)
    by_task = defaultdict(list)
    for sample in held_out:
        by_task[sample.task].append(sample)
    for task, samples in by_task.items():
        for group in micro_batches(samples, 8):
            ids, labels = collate(group)
            logits = model(ids.to(device))
            total, _ = lm_losses(logits, labels.to(device), 1)
            sums[task] += float(total)
            counts[task] += int((labels[:, 1:] != -100).sum())
    per_task = {task: sums[task] / counts[task] for task in sorted(sums)}
    return {"loss": sum(sums.values()) / sum(counts.values()), "tasks": per_task}


class Curve:
    """One shape's model, optimiser, training time and held-out losses."""

    def __init__(self, shape: str, config, runtime, lr: float, warmup: int) -> None:
        self.shape, self.runtime, self.lr, self.warmup = shape, runtime, lr, warmup
        self.config = dataclasses.replace(
            config, model={**(config.model or {}), **model_fields(shape)}, dropout=0.0
        )
        self.model = build_model(self.config, None, runtime, bf16=False, activation_checkpointing=False)
        self.parameters = sum(p.numel() for p in self.model.parameters())
        self.optimizer = torch.optim.AdamW(
            self.model.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.1
        )
        self.steps, self.seconds, self.tokens, self.points = 0, 0.0, 0, []

    def step(self, samples: list) -> float:
        lr = self.lr * min(1.0, (self.steps + 1) / self.warmup)
        start = time.perf_counter()
        scalars, tokens = train_step(
            self.model, self.optimizer, samples, self.config, self.runtime, self.steps, lr
        )
        self.seconds += time.perf_counter() - start
        self.steps, self.tokens = self.steps + 1, self.tokens + tokens
        return scalars["loss"]

    def evaluate(self, held_out: list) -> None:
        """The held-out losses (`held_out_losses`) as a point of the curve."""
        losses = held_out_losses(self.model, held_out, self.runtime.device)
        self.points.append({"seconds": round(self.seconds, 1), "steps": self.steps, **losses})

    def summary(self) -> dict:
        return {
            "shape": self.shape,
            "parameters": self.parameters,
            "steps": self.steps,
            "train_seconds": round(self.seconds, 1),
            "tokens_per_s": round(self.tokens / max(self.seconds, 1e-9)),
            "points": self.points,
        }


def write_results(out: Path, args, curves: list[Curve], reference: dict | None) -> None:
    results = {"settings": vars(args) | {"out": str(args.out)}, "curves": [c.summary() for c in curves]}
    results["reference"] = reference
    tmp = out / ".results.json.tmp"
    tmp.write_text(json.dumps(results, indent=1) + "\n")
    os.replace(tmp, out / "results.json")


def plot(out: Path, curves: list[Curve], reference: dict | None) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(6, 4))
    for curve in curves:
        xs = [p["seconds"] / 60 for p in curve.points]
        axis.plot(
            xs,
            [p["loss"] for p in curve.points],
            marker="o",
            label=f"{curve.shape} ({curve.parameters / 1e6:.1f}M)",
        )
    if reference is not None:
        axis.axhline(reference["loss"], color="grey", linestyle="--", label=Path(reference["model"]).name)
    axis.set_xlabel("training minutes")
    axis.set_ylabel("held-out cross-entropy per target token")
    axis.legend()
    figure.tight_layout()
    figure.savefig(out / "curves.png", dpi=100)
    plt.close(figure)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("runs/shape-study"))
    parser.add_argument("--config", default=str(ROOT / "configs" / "train" / "shapes.yaml"))
    parser.add_argument("--stage", help="stage name (default: the last stage drawn from the world)")
    parser.add_argument("--shapes", default=SHAPES, help="HIDDENxLAYERS, comma-separated")
    parser.add_argument("--seconds", type=float, default=420, help="training seconds per shape")
    parser.add_argument("--eval-every", type=float, default=105, help="training seconds between evals")
    parser.add_argument("--batch", type=int, default=16, help="samples per step")
    parser.add_argument("--held-out", type=int, default=160, help="held-out samples")
    parser.add_argument("--lr", type=float, default=1e-3)
    parser.add_argument("--warmup", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1, help="torch threads")
    parser.add_argument(
        "--reference",
        help="a trained model folder scored on the same held-out samples (the config's tokenizer)",
    )
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    torch.set_num_threads(args.threads)
    runtime = init_distributed("cpu")
    config = dataclasses.replace(load_config(args.config), global_batch_size=args.batch)
    names = [s.name for s in config.stages]
    world = [i for i, s in enumerate(config.stages) if s.data.world is not None]
    index = names.index(args.stage) if args.stage else max(world)
    train_source = make_source(config, index, runtime)
    held_source = make_source(dataclasses.replace(config, seed=config.seed + 7919), index, runtime)
    held_out = []
    while len(held_out) < args.held_out:
        held_out += next(held_source)
    held_out = held_out[: args.held_out]
    print(f"stage {names[index]}: {len(held_out)} held-out samples, shapes {args.shapes}")

    reference = None
    if args.reference:
        model = load_transformer(args.reference, device=runtime.device)
        reference = {"model": args.reference, **held_out_losses(model, held_out, runtime.device)}
        print(f"reference {args.reference}: held-out {reference['loss']:.3f}")
        del model
    curves = [Curve(shape, config, runtime, args.lr, args.warmup) for shape in args.shapes.split(",")]
    for curve in curves:
        curve.evaluate(held_out)
    batches = []  # every shape trains on the same sequence of batches
    while (curve := min(curves, key=lambda c: c.seconds)).seconds < args.seconds:
        while len(batches) <= curve.steps:
            batches.append(next(train_source))
        loss = curve.step(batches[curve.steps])
        if curve.seconds >= len(curve.points) * args.eval_every or curve.seconds >= args.seconds:
            curve.evaluate(held_out)
            point = curve.points[-1]
            print(
                f"{curve.shape:>7} {point['seconds']:>6.0f} s {point['steps']:>5} steps  train {loss:.3f}  "
                f"held-out {point['loss']:.3f}"
            )
            write_results(args.out, args, curves, reference)
    write_results(args.out, args, curves, reference)
    plot(args.out, curves, reference)
    for curve in sorted(curves, key=lambda c: c.points[-1]["loss"]):
        print(
            f"{curve.shape:>7} {curve.parameters / 1e6:5.2f}M  {curve.summary()['tokens_per_s']:>6} tok/s  "
            f"{curve.steps:>5} steps  held-out {curve.points[-1]['loss']:.4f}"
        )
    best = min(curves, key=lambda c: c.points[-1]["loss"])
    print(f"best: {best.shape} (held-out {best.points[-1]['loss']:.4f} after {best.seconds:.0f} s)")


if __name__ == "__main__":
    main()
