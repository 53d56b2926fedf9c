"""Speculative Jacobi decoding and best-of-N on the shapes-world benchmark, in one run.

    python bench/speculative.py [--model PATH] [--n-prompts 4 --images-per-prompt 2 --window 16 --best-of 4 --batch 1]

Runs the benchmark's text-to-image half (`lumina_mgpt.world.run_benchmark`) three times on the same prompts and
seeds: plain decoding, exact speculative decoding (coupled drafts), and best-of-N with the model's own verifier
(candidates drawn by exact speculative decoding: the same law as plain decoding, faster). Prints tokens per
forward, decode wall time of each run and the overall scores; the last line is
`tokens_per_forward: <x> speedup: <plain decode seconds / speculative decode seconds>`. Exact decoding draws
from the same distribution as plain decoding, so their overall scores differ only by sampling noise.
`--batch` prompts go into each pipeline call: on a CPU a window forward costs about its token count, so
speculative decoding pays off at small batches (rows x window within what one forward does at the same
cost) and not for large ones.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.unirep import parse_t2i_prompt


class Recorder:
    """A `generate_fn` for `run_benchmark` over pipeline calls of `batch` prompts with fixed extra options,
    summing the decode statistics of every call (image k of a call still uses seed + k overall)."""

    def __init__(self, pipe, batch: int, **options) -> None:
        self.pipe, self.batch, self.options = pipe, batch, options
        self.seconds = self.tokens = self.row_forwards = 0.0
        self.wall = 0.0

    def __call__(self, prompts: list[str], width: int, height: int, per_prompt: int, seed: int) -> list[list]:
        descriptions = [parse_t2i_prompt(p).description for p in prompts]
        images = []
        for first in range(0, len(descriptions), self.batch):
            chunk = descriptions[first : first + self.batch]
            began = time.perf_counter()
            out = self.pipe(
                chunk,
                width,
                height,
                per_prompt,
                seed=seed + first * per_prompt,
                progress=False,
                **self.options,
            )
            self.wall += time.perf_counter() - began
            self.seconds += out.stats["seconds"]
            self.tokens += out.stats["generated_tokens"]
            self.row_forwards += out.stats["generated_tokens"] / out.stats["accepted_per_forward"]
            images += out.images
        return [images[i * per_prompt : (i + 1) * per_prompt] for i in range(len(prompts))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=None, help="model folder or hub id (default: the shipped model)")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--n-prompts", type=int, default=4, help="prompts per category")
    parser.add_argument("--images-per-prompt", type=int, default=2)
    parser.add_argument("--window", type=int, default=16)
    parser.add_argument(
        "--batch", type=int, default=1, help="prompts per pipeline call (rows: batch x images per prompt)"
    )
    parser.add_argument("--best-of", type=int, default=4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None, help="CPU threads (default: torch's)")
    parser.add_argument("--out", type=Path, default=None, help="keep the benchmark images here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from lumina_mgpt.pipeline import LuminaMGPTPipeline
    from lumina_mgpt.world import run_benchmark

    try:
        pipe = LuminaMGPTPipeline.from_pretrained(args.model, device=args.device)
    except LuminaError as error:
        sys.exit(f"error: {error}")
    runs = {
        "plain": Recorder(pipe, args.batch, speculative="off"),
        "speculative": Recorder(pipe, args.batch, speculative="exact", window=args.window),
        f"best-of-{args.best_of}": Recorder(
            pipe, args.batch, speculative="exact", window=args.window, best_of=args.best_of
        ),
    }
    overall = {}
    with tempfile.TemporaryDirectory() as scratch:
        for name, recorder in runs.items():
            summary = run_benchmark(
                recorder,
                None,
                seed=args.seed,
                n_prompts=args.n_prompts,
                images_per_prompt=args.images_per_prompt,
                out_dir=(args.out or Path(scratch)) / name,
                progress=False,
            )
            overall[name] = summary["t2i"]["all"]["overall"]
            print(
                f"{name:<14} overall {overall[name]:.3f}   decode {recorder.seconds:7.1f} s"
                f"   tokens/forward {recorder.tokens / recorder.row_forwards:.2f}   wall {recorder.wall:7.1f} s",
                flush=True,
            )
    plain, fast = runs["plain"], runs["speculative"]
    print(
        f"model {args.model or 'shipped'} on {args.device}; {args.n_prompts} prompts per category x "
        f"{args.images_per_prompt} images x 3 canvases, window {args.window}, {args.batch} prompts per call"
    )
    print(
        f"best-of-1 overall: {overall['plain']:.3f}   best-of-{args.best_of} overall: "
        f"{overall[f'best-of-{args.best_of}']:.3f} (self-verifier)"
    )
    print(
        f"tokens_per_forward: {fast.tokens / fast.row_forwards:.2f} speedup: {plain.seconds / fast.seconds:.2f}"
    )


if __name__ == "__main__":
    main()
