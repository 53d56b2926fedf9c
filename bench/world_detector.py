"""The shapes-world detector on rendered ground truth: the fraction of scenes whose every object (shape, colour,
tight box) it recovers exactly, per canvas, and the time per image.

    python bench/world_detector.py --scenes 1000
"""

import argparse
import time

import numpy as np

from lumina_mgpt.world import detect, render, sample_scene

CANVASES = ((48, 48), (64, 64), (128, 128), (160, 96), (96, 160), (256, 128), (64, 256), (160, 48))


def exact(scene) -> bool:
    found = sorted((d.shape, d.color, tuple(d.box)) for d in detect(render(scene)))
    return found == sorted((o.shape, o.color, tuple(o.box)) for o in scene.objects)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenes", type=int, default=1000, help="scenes per canvas")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    print(f"{'canvas':>9} {'exact':>7} {'ms/image':>9}")
    for width, height in CANVASES:
        scenes = [sample_scene(rng, width, height) for _ in range(args.scenes)]
        start = time.perf_counter()
        hits = sum(exact(scene) for scene in scenes)
        ms = (time.perf_counter() - start) / len(scenes) * 1000
        print(f"{width:>4}x{height:<4} {hits / len(scenes):>7.3f} {ms:>9.2f}")


if __name__ == "__main__":
    main()
