"""How well an image tokenizer carries every omni task's target images: the true replies of benchmark items,
encoded and decoded, scored by each task's own scorer; dual-panel canvases also decoded half by half. Given
several tokenizers (e.g. before and after a retraining), their figures side by side.

    python bench/vq_targets.py [--tokenizer FOLDER ...] [--items 20]
"""

import argparse

import torch

from lumina_mgpt.vq import load_image_tokenizer
from lumina_mgpt.vq.loading import SHAPES_TOKENIZER
from lumina_mgpt.world.evaluate import DEFAULT_CANVASES
from lumina_mgpt.world.roundtrip import IMAGE_KINDS, target_pass_rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--tokenizer", action="append", help="tokenizer folder (repeatable); default: the shipped one"
    )
    parser.add_argument("--items", type=int, default=20, help="benchmark items per task and canvas")
    parser.add_argument("--seed", type=int, default=7)
    args = parser.parse_args()
    torch.set_num_threads(1)
    folders = args.tokenizer or [str(SHAPES_TOKENIZER)]
    tokenizers = [load_image_tokenizer(folder) for folder in folders]
    names = [f"{w}x{h}" for w, h in DEFAULT_CANVASES]
    print(f"pass rate of reconstructed targets, {args.items} items per canvas")
    for k, folder in enumerate(folders):
        print(f"  [{k}] {folder}")
    print(f"{'task':<24}" + " |".join("".join(f"{n:>10}" for n in names) for _ in folders))
    for kind in IMAGE_KINDS:
        for by_panel in (False, True) if kind.startswith("dual_") else (False,):
            row = []
            for tokenizer in tokenizers:
                rates = target_pass_rates(tokenizer, kind, args.items, DEFAULT_CANVASES, args.seed, by_panel)
                row.append("".join(f"{rates[n]:>10.2f}" for n in names))
            label = kind + (" (by half)" if by_panel else "")
            print(f"{label:<24}" + " |".join(row), flush=True)


if __name__ == "__main__":
    main()
