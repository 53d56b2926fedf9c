"""Scorers: text-to-image categories and every omni task, per WORLD.md; each gives a `Verdict`.

Choices WORLD.md leaves open (see docs/world.md): an image of the wrong size fails; mIoU averages the
classes (background included) present in the truth or the prediction; edge F1 counts a pixel as matched
when one of the other side lies within Chebyshev distance 2; object correspondences (kept objects in
editing, map objects in condition → image, objects across frames) are one-to-one matchings.
"""

import re
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.world.detect import Detection, as_array, detect, nearest_class
from lumina_mgpt.world.palette import SEG_CLASSES, SHAPES
from lumina_mgpt.world.render import dilate, edge_mask
from lumina_mgpt.world.scene import Scene
from lumina_mgpt.world.shapes import shape_mask
from lumina_mgpt.world.spec import PromptSpec, spec_holds
from lumina_mgpt.world.tasks import FRAME_SHIFT_FRACTION, Task, spec_list

PASS_THRESHOLD = 0.75  # mIoU / F1
BOX_IOU = 0.5
EDGE_TOLERANCE = 2
EDIT_CENTER_FRACTION = 0.05
FRAME_SHIFT_TOLERANCE = 0.03
FRAME_DRIFT_FRACTION = 0.03
MEAN_SCORED = ("segmentation", "edges")  # category score = mean mIoU / F1; every other: fraction passing

_BOX = re.compile(r"\s*[\[(]?\s*" + r"\s*,\s*".join([r"(-?\d+(?:\.\d+)?)"] * 4) + r"\s*[\])]?\s*")

ImageLike = np.ndarray | Image.Image


@dataclass(frozen=True)
class Verdict:
    """Whether an item passes, its score (1/0, or mIoU / F1 for maps) and a one-line reason."""

    passed: bool
    score: float
    detail: str

    def to_dict(self) -> dict:
        return {"passed": self.passed, "score": self.score, "detail": self.detail}


def _binary(passed: bool, detail: str) -> Verdict:
    return Verdict(bool(passed), float(passed), detail)


def _summary(detections: Sequence[Detection]) -> str:
    return "[" + ", ".join(f"{d.color} {d.shape}@{d.cx:g},{d.cy:g}" for d in detections) + "]"


def _sized(image: ImageLike, width: int, height: int, what: str) -> tuple[np.ndarray | None, str]:
    """The image as an array if it is W×H, else (None, reason)."""
    array = as_array(image, what)
    if array.shape[:2] != (height, width):
        return None, f"{what} is {array.shape[1]}x{array.shape[0]}, expected {width}x{height}"
    return array, ""


# ---- text-to-image ----------------------------------------------------------------------------------


def score_t2i(specs: Sequence[PromptSpec], image: ImageLike, width: int, height: int) -> Verdict:
    """An image passes when every spec holds for its detected objects."""
    array, reason = _sized(image, width, height, "image")
    if array is None:
        return _binary(False, reason)
    detections = detect(array)
    return _binary(all(spec_holds(s, detections, width, height) for s in specs), _summary(detections))


# ---- maps --------------------------------------------------------------------------------------------


def class_map(objects: Sequence[tuple[str, int, int, np.ndarray]], width: int, height: int) -> np.ndarray:
    """int64[H, W]: 0 background, 1 + SHAPES index on each object's pixels; objects are (shape, x, y, mask),
    and those of unknown shape stay background."""
    classes = np.zeros((height, width), dtype=np.int64)
    for shape, x, y, mask in objects:
        if shape in SHAPES:
            h, w = mask.shape
            classes[y : y + h, x : x + w][mask] = SHAPES.index(shape) + 1
    return classes


def scene_masks(scene: Scene) -> list[tuple[str, int, int, np.ndarray]]:
    return [(o.shape, o.x, o.y, shape_mask(o.shape, o.size)) for o in scene.objects]


def detection_masks(detections: Sequence[Detection]) -> list[tuple[str, int, int, np.ndarray]]:
    return [(d.shape, d.box[0], d.box[1], d.mask) for d in detections]


def miou(predicted: np.ndarray, truth_classes: np.ndarray) -> float:
    """Mean IoU of a predicted segmentation image (each pixel the nearest class colour) against a class map,
    over the classes (background included) present in either."""
    pred = nearest_class(predicted, SEG_CLASSES)
    ious = []
    for k in range(len(SEG_CLASSES)):
        p, t = pred == k, truth_classes == k
        union = (p | t).sum()
        if union:
            ious.append((p & t).sum() / union)
    return float(np.mean(ious))


def edge_f1(predicted: np.ndarray, truth_edges: np.ndarray) -> float:
    """F1 of a predicted edge image (a pixel is an edge when nearer white than black) against a boolean edge
    mask, a pixel counting as matched when one of the other side lies within Chebyshev distance 2."""
    pred = 2 * predicted.astype(np.int64).sum(-1) > 3 * 255
    if not pred.any() or not truth_edges.any():
        return float(pred.any() == truth_edges.any())
    precision = (pred & dilate(truth_edges, EDGE_TOLERANCE)).sum() / pred.sum()
    recall = (truth_edges & dilate(pred, EDGE_TOLERANCE)).sum() / truth_edges.sum()
    return 0.0 if precision + recall == 0 else float(2 * precision * recall / (precision + recall))


def map_score(image: np.ndarray, map_name: str, objects: Sequence[tuple[str, int, int, np.ndarray]]) -> float:
    """mIoU (segmentation map) or edge F1 (edge map) of `image` against the map of `objects`."""
    height, width = image.shape[:2]
    if map_name == "segmentation map":
        return miou(image, class_map(objects, width, height))
    return edge_f1(image, edge_mask(width, height, [(x, y, m) for _, x, y, m in objects]))


# ---- object correspondences ----------------------------------------------------------------------------


def match_all(n_left: int, n_right: int, fits: Callable[[int, int], bool]) -> bool:
    """Whether every left item can take a distinct right item it fits (augmenting paths, Kuhn)."""
    owner = [-1] * n_right

    def augment(i: int, seen: list[bool]) -> bool:
        for j in range(n_right):
            if not seen[j] and fits(i, j):
                seen[j] = True
                if owner[j] < 0 or augment(owner[j], seen):
                    owner[j] = i
                    return True
        return False

    return all(augment(i, [False] * n_right) for i in range(n_left))


def box_iou(a: Sequence[float], b: Sequence[float]) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def score_condition(image: ImageLike, scene: Scene, colors_named: bool) -> Verdict:
    """Condition → image: each object of the map is matched one-to-one by a detection of its shape (and
    colour, when the caption names colours) with box IoU ≥ 0.5, and nothing else is detected."""
    array, reason = _sized(image, scene.width, scene.height, "image")
    if array is None:
        return _binary(False, reason)
    detections = detect(array)
    truth = scene.objects

    def fits(i: int, j: int) -> bool:
        o, d = truth[i], detections[j]
        return (
            o.shape == d.shape
            and (not colors_named or o.color == d.color)
            and box_iou(o.box, d.box) >= BOX_IOU
        )

    passed = len(detections) == len(truth) and match_all(len(truth), len(detections), fits)
    return _binary(passed, _summary(detections))


# ---- omni tasks --------------------------------------------------------------------------------------


def parse_box(text: str) -> tuple[float, float, float, float] | None:
    """`x0,y0,x1,y1` (spaces and one pair of brackets tolerated) or None."""
    match = _BOX.fullmatch(text)
    return None if match is None else tuple(float(v) for v in match.groups())


def _edit_turn(
    turn: dict, before: Sequence[Detection], image: ImageLike
) -> tuple[bool, str, list[Detection]]:
    """One editing turn: the detected (shape, colour) multiset equals the expected one, and every object of
    the edited image (`before`: its detections) that the edit keeps or recolours is found, in its expected
    colour, within 0.05·min(W, H) of its centre there. Also returns the reply's detections."""
    after = Scene.from_dict(turn["after"])
    array, reason = _sized(image, after.width, after.height, "image")
    if array is None:
        return False, reason, []
    detections = detect(array)
    if Counter((d.shape, d.color) for d in detections) != Counter((o.shape, o.color) for o in after.objects):
        return False, f"objects {_summary(detections)} differ from the expected ones", detections
    named = (turn["shape"], turn["color"])
    kept = [
        (d.shape, turn.get("new_color", d.color) if (d.shape, d.color) == named else d.color, d.center)
        for d in before
        if not (turn["op"] == "remove" and (d.shape, d.color) == named)
    ]
    tolerance = EDIT_CENTER_FRACTION * min(after.width, after.height)

    def fits(i: int, j: int) -> bool:
        shape, color, (x, y) = kept[i]
        d = detections[j]
        return (shape, color) == (d.shape, d.color) and np.hypot(d.cx - x, d.cy - y) <= tolerance

    if not match_all(len(kept), len(detections), fits):
        return False, f"an object moved more than {tolerance:g} px: {_summary(detections)}", detections
    return True, _summary(detections), detections


def _frames(truth: dict, images: Sequence[ImageLike], width: int, height: int) -> Verdict:
    n = truth["n"]
    if len(images) != n:
        return _binary(False, f"{len(images)} frames, expected {n}")
    frames = []
    for k, image in enumerate(images):
        array, reason = _sized(image, width, height, f"frame {k + 1}")
        if array is None:
            return _binary(False, reason)
        frames.append(detect(array))
    if not all(spec_holds(s, frames[0], width, height) for s in spec_list(truth)):
        return _binary(False, f"frame 1 {_summary(frames[0])} does not pass the description")
    kinds = [Counter((d.shape, d.color) for d in f) for f in frames]
    if any(k != kinds[0] for k in kinds):
        return _binary(False, "the frames hold different objects")
    step, slack, drift = (
        FRAME_SHIFT_FRACTION * width,
        FRAME_SHIFT_TOLERANCE * width,
        FRAME_DRIFT_FRACTION * height,
    )
    for k in range(n - 1):
        a, b = frames[k], frames[k + 1]

        def fits(i: int, j: int, a=a, b=b) -> bool:
            return (
                (a[i].shape, a[i].color) == (b[j].shape, b[j].color)
                and abs(b[j].cx - a[i].cx - step) <= slack
                and abs(b[j].cy - a[i].cy) <= drift
            )

        if not match_all(len(a), len(b), fits):
            return _binary(False, f"objects do not move right by {step:g} px from frame {k + 1} to {k + 2}")
    return _binary(True, _summary(frames[0]))


def _dual_pair(truth: dict, image: ImageLike, width: int, height: int) -> Verdict:
    array, reason = _sized(image, width, height, "image")
    if array is None:
        return _binary(False, reason)
    half = height // 2
    upper, lower = array[:half], array[half:]
    detections = detect(upper)
    if not all(spec_holds(s, detections, width, half) for s in spec_list(truth)):
        return _binary(False, f"upper half {_summary(detections)} does not pass the description")
    value = map_score(lower, truth["map"], detection_masks(detections))  # the upper half's own map
    return _binary(
        value >= PASS_THRESHOLD, f"lower half scores {value:.3f} as the upper half's {truth['map']}"
    )


def _dual_i2i(truth: dict, image: ImageLike, width: int, height: int) -> Verdict:
    """The reply is the whole canvas (its lower half is scored) or the lower half alone."""
    scene = Scene.from_dict(truth["scene"])
    array = as_array(image)
    if array.shape[:2] == (height, width):
        array = array[height // 2 :]
    return score_condition(array, scene, truth["colors_named"])


def score_task(task: Task, replies: Sequence[dict]) -> Verdict:
    """Score a task from the model's replies, one per turn: `{"text": str, "images": [image, ...]}`."""
    if len(replies) != len(task.turns):
        raise LuminaError(f"{task.kind}: {len(replies)} replies for {len(task.turns)} turns")
    truth, kind, width, height = task.truth, task.kind, task.width, task.height
    text = replies[-1].get("text") or ""
    images = replies[-1].get("images") or []
    if kind in ("editing", "editing_multiturn"):  # each turn edits the previous reply (the first, the input)
        before = detect(task.turns[0][0]["images"][0])
        for t, (turn, reply) in enumerate(zip(truth["turns"], replies, strict=True)):
            turn_images = reply.get("images") or []
            if len(turn_images) != 1:
                return _binary(False, f"turn {t + 1}: {len(turn_images)} images, expected 1")
            passed, detail, before = _edit_turn(turn, before, turn_images[0])
            if not passed:
                return _binary(False, f"turn {t + 1}: {detail}")
        return _binary(True, detail)
    if kind == "frames":
        return _frames(truth, images, width, height)
    if kind in ("count_qa", "color_qa", "yesno_qa", "captioning"):
        return _binary(text.strip().lower() == truth["answer"].lower(), repr(text))
    if kind == "detection":
        box = parse_box(text)
        if box is None:
            return _binary(False, f"not a box: {text!r}")
        value = box_iou(box, truth["box"])
        return _binary(value >= BOX_IOU, f"box IoU {value:.3f}")
    if len(images) != 1:
        return _binary(False, f"{len(images)} images, expected 1")
    image = images[0]
    if kind in ("segmentation", "edges"):
        scene = Scene.from_dict(truth["scene"])
        array, reason = _sized(image, width, height, "map")
        if array is None:
            return Verdict(False, 0.0, reason)
        value = map_score(
            array, "segmentation map" if kind == "segmentation" else "edge map", scene_masks(scene)
        )
        return Verdict(
            value >= PASS_THRESHOLD, value, f"{'mIoU' if kind == 'segmentation' else 'F1'} {value:.3f}"
        )
    if kind in ("seg_to_image", "edge_to_image"):
        return score_condition(image, Scene.from_dict(truth["scene"]), truth["colors_named"])
    if kind == "t2i":
        return score_t2i(spec_list(truth), image, width, height)
    if kind in ("dual_pair_seg", "dual_pair_edge"):
        return _dual_pair(truth, image, width, height)
    if kind in ("dual_i2i_seg", "dual_i2i_edge"):
        return _dual_i2i(truth, image, width, height)
    raise LuminaError(f"no scorer for task kind {kind!r}")
