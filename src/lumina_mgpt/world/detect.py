"""The object detector of WORLD.md §"Detecting the objects of an image", in vectorised numpy.

1. every pixel takes the nearest of the 11 colours (background + 10); farther than 60 from all is noise;
2. 8-connected components of each object colour; those under 0.25·(0.22·min(W, H))² pixels are dropped;
3. a component's shape is the canonical 32×32 mask of highest IoU with its own 32×32 mask (tight box,
   area-averaged, cells ≥ 0.5); best IoU below 0.5 gives `unknown`;
4. its position is the centre of its tight box.
"""

from dataclasses import dataclass, field
from functools import lru_cache

import numpy as np
from PIL import Image

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.world.palette import COLOR_NAMES, PIXEL_CLASSES, SHAPES
from lumina_mgpt.world.shapes import shape_mask

NOISE_DISTANCE = 60
MIN_AREA_FRACTION = 0.25
MIN_SIDE_FRACTION = 0.22
GRID = 32
CANONICAL_SIZE = 256
MIN_SHAPE_IOU = 0.5
RELATION_FRACTION = 0.05
RELATIONS = ("to the left of", "to the right of", "above", "below")

_NEIGHBOURS_8 = [(dy, dx) for dy in (-1, 0, 1) for dx in (-1, 0, 1) if (dy, dx) != (0, 0)]


@dataclass(frozen=True)
class Detection:
    """One detected object: shape (or `unknown`), colour, tight box (x1/y1 exclusive), box centre, pixels."""

    shape: str
    color: str
    box: tuple[int, int, int, int]
    cx: float
    cy: float
    area: int
    mask: np.ndarray = field(repr=False, compare=False)  # bool[y1 - y0, x1 - x0], the component in its box

    @property
    def center(self) -> tuple[float, float]:
        return self.cx, self.cy

    def to_dict(self) -> dict:
        return {
            "shape": self.shape,
            "color": self.color,
            "box": list(self.box),
            "cx": self.cx,
            "cy": self.cy,
            "area": self.area,
        }


def as_array(image: "np.ndarray | Image.Image", what: str = "image") -> np.ndarray:
    """uint8[H, W, 3] from a PIL image or an array; a clear LuminaError for anything else."""
    if isinstance(image, Image.Image):
        return np.asarray(image.convert("RGB"))
    if not isinstance(image, np.ndarray):
        raise LuminaError(
            f"{what} must be a PIL image or a uint8 [H, W, 3] array, got {type(image).__name__}"
        )
    if image.ndim != 3 or image.shape[2] != 3 or image.shape[0] < 1 or image.shape[1] < 1:
        raise LuminaError(f"{what} must be a uint8 [H, W, 3] array, got shape {tuple(image.shape)}")
    if image.dtype != np.uint8:
        raise LuminaError(f"{what} must have dtype uint8, got {image.dtype}")
    return image


def min_component_area(width: int, height: int) -> float:
    """Components with fewer pixels than this are dropped: 0.25 · (0.22 · min(W, H))²."""
    return MIN_AREA_FRACTION * (MIN_SIDE_FRACTION * min(width, height)) ** 2


def classify_pixels(image: np.ndarray) -> np.ndarray:
    """int64[H, W]: 0 background, 1..10 the palette colours (COLOR_NAMES order), -1 noise.

    Ties between two colours go to the first in that order (background first)."""
    return nearest_class(image, PIXEL_CLASSES, max_distance=NOISE_DISTANCE)


def nearest_class(image: np.ndarray, palette: np.ndarray, max_distance: float | None = None) -> np.ndarray:
    """int64[H, W]: index of the nearest palette colour by Euclidean RGB distance (first on ties); -1 where
    that distance exceeds `max_distance`. Exact integer arithmetic, elementwise (no BLAS threads)."""
    pixels = image.reshape(-1, 3).T.astype(np.int32)  # [3, N]
    colours = palette.astype(np.int32)
    dot = sum(colours[:, c : c + 1] * pixels[c] for c in range(3))  # [K, N]
    partial = (colours**2).sum(1)[:, None] - 2 * dot  # d² less the pixel's |p|²
    classes = partial.argmin(0)
    if max_distance is not None:
        d2 = np.take_along_axis(partial, classes[None], 0)[0] + (pixels**2).sum(0)
        classes = np.where(d2 > max_distance**2, -1, classes)
    return classes.reshape(image.shape[:2])


def label_components(classes: np.ndarray) -> np.ndarray:
    """8-connected components of equal positive class. int64[H, W]: a component's smallest flat pixel index,
    -1 outside components. Min-label propagation over the 8 neighbours with pointer jumping."""
    height, width = classes.shape
    n = height * width
    active = classes > 0
    padded = np.full((height + 2, width + 2), -1, dtype=np.int64)
    padded[1:-1, 1:-1] = np.where(active, classes, -1)
    windows = [(1 + dy, 1 + dx) for dy, dx in _NEIGHBOURS_8]
    same = [(padded[y : y + height, x : x + width] == classes) & active for y, x in windows]

    labels = np.where(active, np.arange(n).reshape(height, width), n)
    lab_pad = np.full((height + 2, width + 2), n, dtype=np.int64)
    flat_active = active.ravel()
    while True:
        lab_pad[1:-1, 1:-1] = labels
        new = labels.copy()
        for (y, x), ok in zip(windows, same, strict=True):
            np.minimum(new, np.where(ok, lab_pad[y : y + height, x : x + width], n), out=new)
        flat = new.ravel()
        while True:  # pointer jumping: a label is a pixel of the same component with a smaller index
            jumped = flat[flat[flat_active]]
            if np.array_equal(jumped, flat[flat_active]):
                break
            flat[flat_active] = jumped
        if np.array_equal(new, labels):
            return np.where(active, labels, -1)
        labels = new


@lru_cache(maxsize=512)
def _area_weights(n: int) -> np.ndarray:
    """float64[GRID, n]: overlap of input pixel k with output cell o, in units of 1/GRID pixel (integers).

    Input pixel k spans [GRID·k, GRID·(k+1)) and output cell o spans [n·o, n·(o+1)) in those units, so the
    area average of a cell is (Wy @ mask @ Wx.T) / (h·w) exactly (integers are exact in float64)."""
    k = np.arange(n)[None, :]
    o = np.arange(GRID)[:, None]
    overlap = np.minimum(GRID * (k + 1), n * (o + 1)) - np.maximum(GRID * k, n * o)
    return np.clip(overlap, 0, None).astype(np.float64)


def grid_mask(mask: np.ndarray) -> np.ndarray:
    """bool[32, 32]: a mask cropped to its tight box, area-averaged to 32×32, cells ≥ 0.5 kept (exactly)."""
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    crop = mask[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]
    h, w = crop.shape
    sums = _area_weights(h) @ crop.astype(np.float64) @ _area_weights(w).T
    return 2 * sums >= h * w


@lru_cache(maxsize=1)
def canonical_masks() -> np.ndarray:
    """bool[6, 32, 32]: each shape drawn at s = 256, in SHAPES order, through `grid_mask`."""
    return np.stack([grid_mask(shape_mask(shape, CANONICAL_SIZE)) for shape in SHAPES])


def classify_shape(mask: np.ndarray) -> tuple[str, float]:
    """(shape, IoU) of the canonical mask that best matches `mask`; `unknown` when the best IoU < 0.5.

    Ties go to the first shape in SHAPES order."""
    cells = grid_mask(mask)[None]
    canon = canonical_masks()
    iou = (cells & canon).sum((1, 2)) / (cells | canon).sum((1, 2))
    best = int(iou.argmax())
    return (SHAPES[best] if iou[best] >= MIN_SHAPE_IOU else "unknown"), float(iou[best])


def components(
    classes: np.ndarray, min_area: float
) -> list[tuple[int, tuple[int, int, int, int], np.ndarray]]:
    """(class, tight box, bool mask within the box) of each 8-connected component of equal positive class
    with at least `min_area` pixels."""
    width = classes.shape[1]
    labels = label_components(classes)
    found, counts = np.unique(labels[labels >= 0], return_counts=True)
    out = []
    for label in found[counts >= min_area]:
        y, x = divmod(int(label), width)
        rows, cols = np.nonzero(labels == label)
        y0, y1, x0, x1 = int(rows.min()), int(rows.max()) + 1, int(cols.min()), int(cols.max()) + 1
        out.append((int(classes[y, x]), (x0, y0, x1, y1), labels[y0:y1, x0:x1] == label))
    return out


def detect(image: "np.ndarray | Image.Image") -> list[Detection]:
    """All objects of an image, sorted by centre x, then centre y."""
    pixels = as_array(image)
    height, width = pixels.shape[:2]
    detections = []
    for color_class, (x0, y0, x1, y1), mask in components(
        classify_pixels(pixels), min_component_area(width, height)
    ):
        shape, _ = classify_shape(mask)
        color = COLOR_NAMES[color_class - 1]
        detections.append(
            Detection(shape, color, (x0, y0, x1, y1), (x0 + x1) / 2, (y0 + y1) / 2, int(mask.sum()), mask)
        )
    return sorted(detections, key=lambda d: (d.cx, d.cy))


def relation_holds(
    a: tuple[float, float], b: tuple[float, float], relation: str, width: int, height: int
) -> bool:
    """Whether "A {relation} B" holds for objects centred at a and b: the offset along the relation's axis
    exceeds 0.05 of the canvas side along that axis (W for left/right, H for above/below) in the right
    direction, and is larger in size than the offset along the other axis (y grows downwards)."""
    dx, dy = b[0] - a[0], b[1] - a[1]  # > 0 when B is right of / below A
    if relation == "to the left of":
        return dx > RELATION_FRACTION * width and abs(dx) > abs(dy)
    if relation == "to the right of":
        return -dx > RELATION_FRACTION * width and abs(dx) > abs(dy)
    if relation == "above":
        return dy > RELATION_FRACTION * height and abs(dy) > abs(dx)
    if relation == "below":
        return -dy > RELATION_FRACTION * height and abs(dy) > abs(dx)
    raise LuminaError(f"unknown relation {relation!r}; expected one of {', '.join(RELATIONS)}")
