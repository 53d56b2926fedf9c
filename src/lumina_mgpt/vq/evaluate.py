"""How well an image tokenizer reconstructs the shapes world (WORLD.md): the detector's view, PSNR, maps."""

import math
from collections.abc import Sequence

import numpy as np
import torch

from lumina_mgpt.vq.tokenizer import ImageTokenizer, pixels_to_uint8
from lumina_mgpt.world.detect import Detection, detect
from lumina_mgpt.world.palette import BACKGROUND
from lumina_mgpt.world.render import edge_map, render, segmentation_map
from lumina_mgpt.world.scene import Scene, sample_scene
from lumina_mgpt.world.score import PASS_THRESHOLD, map_score, scene_masks
from lumina_mgpt.world.tasks import dual_panel, panel_fits

CENTRE_TOLERANCE_PX = 2.0
KINDS = {"scene": render, "segmentation map": segmentation_map, "edge map": edge_map}
# The dual-panel canvases of the omni tasks, drawn from a scene of half the canvas' height: (map, map above)
PANELS = {
    "scene over segmentation map": ("segmentation map", False),
    "scene over edge map": ("edge map", False),
    "segmentation map over scene": ("segmentation map", True),
    "edge map over scene": ("edge map", True),
}
IMAGE_KINDS = (*KINDS, *PANELS)


def kind_fits(kind: str, width: int, height: int) -> bool:
    """Whether an image of `kind` can be drawn on a W×H canvas (a panel needs two legal halves)."""
    return kind not in PANELS or panel_fits(width, height)


def scene_canvas(kind: str, width: int, height: int) -> tuple[int, int]:
    """The canvas of the scene a W×H image of `kind` is drawn from: a panel's half, else the whole."""
    return (width, height // 2) if kind in PANELS else (width, height)


def draw(kind: str, scene: Scene) -> np.ndarray:
    """The image of `kind` of `scene` (a panel: twice the scene's height)."""
    if kind in PANELS:
        return dual_panel(scene, *PANELS[kind])
    return KINDS[kind](scene)


def same_objects(
    scene: Scene, detections: Sequence[Detection], tolerance: float = CENTRE_TOLERANCE_PX
) -> bool:
    """Whether the detections are exactly the scene's objects: same shapes and colours, centres within
    `tolerance` pixels (Euclidean). Same-kind objects are far apart, so a greedy match is exact."""
    if len(detections) != len(scene.objects):
        return False
    unused = list(detections)
    for o in scene.objects:
        (cx, cy), near = o.center, None
        for d in unused:
            if (d.shape, d.color) == (o.shape, o.color) and math.hypot(d.cx - cx, d.cy - cy) <= tolerance:
                near = d
                break
        if near is None:
            return False
        unused.remove(near)
    return True


def held_out_scenes(width: int, height: int, n: int, seed: int) -> list[Scene]:
    """`n` scenes of one canvas from their own seed stream (disjoint from training, which seeds by step)."""
    rng = np.random.default_rng([seed, width, height, 7919])
    return [sample_scene(rng, width, height) for _ in range(n)]


def reconstruct(
    tokenizer: ImageTokenizer, images: np.ndarray, batch_size: int = 25
) -> tuple[np.ndarray, int]:
    """Encode and decode `uint8[N, H, W, 3]` in batches; returns the reconstructions and the distinct codes."""
    out, used = [], set()
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(images[start : start + batch_size]).permute(0, 3, 1, 2).float() / 127.5 - 1
        codes = tokenizer.encode(batch)
        used.update(codes.unique().tolist())
        out.append(pixels_to_uint8(tokenizer.decode(codes), tokenizer.rounding))
    return np.concatenate(out), len(used)


def code_stability(tokenizer: ImageTokenizer, images: np.ndarray, batch_size: int = 25) -> tuple[float, int]:
    """How tidy the codes of `uint8[N, H, W, 3]` are: the fraction of codes that re-encoding the decoded
    image gives back, and how many distinct codes the cells of pure background colour get."""
    f, same, total, background = tokenizer.factor, 0, 0, set()
    for start in range(0, len(images), batch_size):
        batch = images[start : start + batch_size]
        pixels = torch.from_numpy(batch).permute(0, 3, 1, 2).float() / 127.5 - 1
        codes = tokenizer.encode(pixels)
        again = tokenizer.encode(tokenizer.decode(codes).clamp(-1, 1))
        same, total = same + int((again == codes).sum()), total + codes.numel()
        n, h, w = codes.shape
        cells = torch.from_numpy(batch).view(n, h, f, w, f, 3)
        flat = (cells == torch.tensor(BACKGROUND, dtype=torch.uint8)).all(-1).all(4).all(2)
        background.update(codes[flat].tolist())
    return same / total, len(background)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255**2 / mse))


def evaluate_canvas(
    tokenizer: ImageTokenizer,
    width: int,
    height: int,
    n_scenes: int,
    seed: int,
    kinds: Sequence[str] = ("scene",),
) -> dict[str, float]:
    """Metrics on `n_scenes` held-out scenes of one canvas: `detection` (fraction whose reconstruction shows
    the same objects), `psnr`, `codes_used`, `reencode_same` and `background_codes` (see `code_stability`),
    per map kind its mean score (mIoU / edge F1 of WORLD.md), and per panel kind (of scenes of half the
    height) the fraction of panels whose scene half shows the same objects and whose map half scores >= 0.75."""
    scenes = held_out_scenes(width, height, n_scenes, seed)
    report: dict[str, float] = {}
    for kind in kinds:
        if kind in PANELS:
            report[kind] = _panel_pass_rate(
                tokenizer, kind, held_out_scenes(width, height // 2, n_scenes, seed)
            )
            continue
        originals = np.stack([KINDS[kind](s) for s in scenes])
        recon, used = reconstruct(tokenizer, originals)
        if kind == "scene":
            report["detection"] = float(
                np.mean([same_objects(s, detect(r)) for s, r in zip(scenes, recon, strict=True)])
            )
            report["psnr"] = psnr(originals, recon)
            report["codes_used"] = used
            report["reencode_same"], report["background_codes"] = code_stability(tokenizer, originals)
        else:
            report[kind] = float(
                np.mean([map_score(r, kind, scene_masks(s)) for s, r in zip(scenes, recon, strict=True)])
            )
            report[f"{kind} psnr"] = psnr(originals, recon)
    return report


def _panel_pass_rate(tokenizer: ImageTokenizer, kind: str, scenes: list[Scene]) -> float:
    map_name, map_above = PANELS[kind]
    recon, _ = reconstruct(tokenizer, np.stack([draw(kind, s) for s in scenes]))
    half, passed = recon.shape[1] // 2, []
    for scene, image in zip(scenes, recon, strict=True):
        map_half, scene_half = (image[:half], image[half:]) if map_above else (image[half:], image[:half])
        passed.append(
            same_objects(scene, detect(scene_half))
            and map_score(map_half, map_name, scene_masks(scene)) >= PASS_THRESHOLD
        )
    return float(np.mean(passed))
