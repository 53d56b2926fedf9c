"""Train a tokenizer with `train-vq --images` on synthetic pictures (gradients, discs, bars in arbitrary colours)
and report its PSNR on held-out pictures of the same kind, and the training time.

    python bench/vq_images.py --out runs/bench-vq [--train 250] [--held-out 50] [--minutes 10] [--preset small]
        [--steps N]

The last line is the held-out PSNR and the training minutes (with the steps run and steps/s measured, which
depend on what else the CPU is running).
"""

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw


def picture(rng: np.random.Generator, width: int = 128, height: int = 128) -> Image.Image:
    """A linear gradient between two random colours, with a few discs and bars in random colours."""
    a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
    angle = rng.uniform(0, 2 * np.pi)
    y, x = np.mgrid[0:height, 0:width] / max(width, height)
    t = np.clip((np.cos(angle) * x + np.sin(angle) * y + 1) / 2, 0, 1)[..., None]
    image = Image.fromarray(((1 - t) * a + t * b).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    for _ in range(rng.integers(1, 4)):
        colour = tuple(int(c) for c in rng.integers(0, 256, 3))
        cx, cy, r = rng.uniform(0, width), rng.uniform(0, height), rng.uniform(8, 32)
        if rng.random() < 0.5:
            draw.ellipse((cx - r, cy - r, cx + r, cy + r), fill=colour)
        else:
            draw.rectangle((cx - r, cy - r / 3, cx + r, cy + r / 3), fill=colour)
    return image


def write_pictures(folder: Path, n: int, seed: int) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    for i in range(n):
        picture(rng).save(folder / f"{i:04d}.png")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", type=Path, default=Path("runs/bench-vq"))
    parser.add_argument("--train", type=int, default=250)
    parser.add_argument("--held-out", type=int, default=50)
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--preset", default="small")
    parser.add_argument("--steps", type=int, help="override the preset's optim.steps")
    args = parser.parse_args()
    write_pictures(args.out / "train", args.train, seed=0)
    write_pictures(args.out / "held-out", args.held_out, seed=1)
    started = time.time()
    command = ["lumina-mgpt", "train-vq", "--images", str(args.out / "train"), "--out", str(args.out / "vq")]
    command += ["--preset", args.preset, "--minutes", str(args.minutes)]
    if args.steps is not None:
        command += ["--steps", str(args.steps)]
    subprocess.run(command, check=True)
    seconds = time.time() - started

    from lumina_mgpt.vq import load_image_tokenizer
    from lumina_mgpt.vq.evaluate import psnr, reconstruct

    tokenizer = load_image_tokenizer(args.out / "vq" / "tokenizer")
    held_out = np.stack([np.asarray(Image.open(p)) for p in sorted((args.out / "held-out").glob("*.png"))])
    recon, used = reconstruct(tokenizer, held_out)
    metrics = json.loads((args.out / "vq" / "metrics.json").read_text())
    steps, train_seconds = metrics["steps"], metrics["train_seconds"]
    print(f"{used} codes used on {len(held_out)} held-out 128x128 pictures")
    print(
        f"held-out PSNR {psnr(held_out, recon):.2f} dB after {train_seconds / 60:.1f} min of training "
        f"({steps} steps, {steps / train_seconds:.2f} steps/s; {seconds / 60:.1f} min wall with start-up and eval)"
    )
    sys.exit(0)


if __name__ == "__main__":
    main()
