"""Training throughput on the shapes world's omni mix: the trainer's own step (`train.trainer.train_step`) under
each lever, on the same batches, in one run; the last line is `train_speedup: <x>` (best variant over the
current settings).

Samples come from the omni stage of configs/train/shapes.yaml (its task weights, area and max_length), the model
has the shipped model's shape, randomly initialised. Each variant builds the model afresh, runs one warm-up step
(torch.compile compiles there) and then times `--steps` steps; variants take turns step by step (round robin),
so that a busy shared machine slows them alike.

    nice -n 5 python bench/train.py [--batch 32] [--steps 3] [--variants current,packed,...]
"""

import argparse
import dataclasses
import json
import time
from pathlib import Path

import torch

from lumina_mgpt.data.batch import micro_batches
from lumina_mgpt.data.packing import pack_rows, padding_fraction
from lumina_mgpt.train.config import load_config
from lumina_mgpt.train.distributed import init_distributed
from lumina_mgpt.train.trainer import build_model, make_source, train_step

ROOT = Path(__file__).resolve().parents[1]
SHIPPED = ROOT / "src" / "lumina_mgpt" / "models" / "shapes"


@dataclasses.dataclass(frozen=True)
class Variant:
    """One setting of the levers: config fields, torch threads, torch.compile of the model."""

    micro_batch_size: int
    pack_length: int | None = None
    bf16: bool = False
    threads: int = 1
    compile: bool = False


VARIANTS = {
    "current": Variant(
        micro_batch_size=32
    ),  # configs/train/shapes.yaml as it was: padded micro-batches of 32
    "padded-mb8": Variant(micro_batch_size=8),
    "packed-2048x1": Variant(micro_batch_size=1, pack_length=2048),
    "packed-4096x1": Variant(micro_batch_size=1, pack_length=4096),
    "packed-4096x1-bf16": Variant(micro_batch_size=1, pack_length=4096, bf16=True),
    "packed-4096x1-2threads": Variant(micro_batch_size=1, pack_length=4096, threads=2),
    "packed-4096x1-compile": Variant(micro_batch_size=1, pack_length=4096, compile=True),
}


def omni_batches(config, runtime, batch: int, count: int) -> list[list]:
    """`count` global batches of `batch` samples of the omni stage (the last world stage), as the trainer draws
    them."""
    index = max(i for i, s in enumerate(config.stages) if s.data.world is not None)
    source = make_source(dataclasses.replace(config, global_batch_size=batch), index, runtime)
    return [next(source) for _ in range(count)]


class Run:
    """A variant's model, optimiser and config, stepping through the batches."""

    def __init__(self, name: str, variant: Variant, config, runtime, batch: int):
        self.name, self.variant, self.runtime = name, variant, runtime
        self.config = dataclasses.replace(
            config,
            global_batch_size=batch,
            micro_batch_size=variant.micro_batch_size,
            pack_length=variant.pack_length,
            dropout=0.0,
        )
        self.model = build_model(
            self.config, None, runtime, bf16=variant.bf16, activation_checkpointing=False
        )
        if variant.compile:
            self.model.compile(dynamic=True)
        self.optimizer = torch.optim.AdamW(self.model.parameters(), lr=1e-4)
        self.seconds, self.samples, self.tokens, self.losses = 0.0, 0, 0, []

    def step(self, samples: list, step: int, timed: bool) -> None:
        torch.set_num_threads(self.variant.threads)
        start = time.perf_counter()
        scalars, tokens = train_step(
            self.model, self.optimizer, samples, self.config, self.runtime, step, 1e-4
        )
        if timed:
            self.seconds += time.perf_counter() - start
            self.samples, self.tokens = self.samples + len(samples), self.tokens + tokens
            self.losses.append(scalars["loss"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default=str(ROOT / "configs" / "train" / "shapes.yaml"))
    parser.add_argument("--batch", type=int, default=32, help="samples per step (the global batch)")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per variant (after one warm-up)")
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"some of {', '.join(VARIANTS)}")
    args = parser.parse_args()
    names = args.variants.split(",")
    shipped = json.loads((SHIPPED / "config.json").read_text())
    model = {
        k: shipped[k]
        for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")
    }
    config = dataclasses.replace(load_config(args.config), model=model | {"max_position_embeddings": 4096})
    runtime = init_distributed("cpu")
    torch.set_num_threads(1)
    batches = omni_batches(config, runtime, args.batch, args.steps + 1)
    samples = [s for b in batches for s in b]
    tokens = sum(len(s) for s in samples)
    print(f"omni mix: {len(samples)} samples, {tokens / len(samples):.0f} tokens on average")
    for size in (16, 64):
        groups = micro_batches(samples, size)
        padded = sum(len(g) * max(len(s) for s in g) for g in groups)
        print(f"  padding at micro-batch {size}: {1 - tokens / padded:.1%}")
    for length in (2048, 4096):
        rows = pack_rows(samples, length)
        print(
            f"  packed into rows of {length}: {len(rows)} rows, {padding_fraction(rows, 2):.1%} padding "
            f"at 2 rows per micro-batch, none at 1"
        )

    runs = [Run(name, VARIANTS[name], config, runtime, args.batch) for name in names]
    for step, batch in enumerate(batches):
        for run in list(runs):
            try:
                run.step(batch, step, timed=step > 0)
            except Exception as error:  # e.g. torch.compile failing here: report it and go on
                print(f"{run.name}: failed at step {step}: {type(error).__name__}: {str(error)[:200]}")
                runs.remove(run)
    base = runs[0]
    print(f"{'variant':<26}{'samples/s':>10}{'tokens/s':>10}{'ratio':>8}  first loss")
    for run in runs:
        ratio = base.seconds / run.seconds
        print(
            f"{run.name:<26}{run.samples / run.seconds:>10.2f}{run.tokens / run.seconds:>10.0f}{ratio:>8.2f}"
            f"  {run.losses[0]:.4f}"
        )
    best = min(runs, key=lambda run: run.seconds)
    print(f"best: {best.name}")
    print(f"train_speedup: {base.seconds / best.seconds:.2f}")


if __name__ == "__main__":
    main()
