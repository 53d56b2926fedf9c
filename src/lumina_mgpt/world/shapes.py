"""Exact geometry of the six shapes: which pixels of an s×s box each one covers.

A pixel (column i, row j) belongs to the shape when its centre (i + 0.5, j + 0.5), in box coordinates with
y down and the box spanning [0, s] × [0, s], lies in the closed region. Every shape but the star is tested
in exact integer arithmetic (the inequalities below are the region's, multiplied through so that pixel
centres become integers); none of them can tie on a pixel centre, so closed and open regions agree.
"""

from functools import lru_cache

import numpy as np

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.world.palette import SHAPES


def _centres(s: int) -> tuple[np.ndarray, np.ndarray]:
    """Column and row indices (i, j) as broadcastable int64 grids [1, s] and [s, 1]."""
    i = np.arange(s, dtype=np.int64)[None, :]
    j = np.arange(s, dtype=np.int64)[:, None]
    return i, j


def _circle(s: int) -> np.ndarray:
    i, j = _centres(s)
    return (2 * i + 1 - s) ** 2 + (2 * j + 1 - s) ** 2 <= s * s


def _square(s: int) -> np.ndarray:
    return np.ones((s, s), dtype=bool)


def _triangle(s: int) -> np.ndarray:
    i, j = _centres(s)
    return (4 * i + 2 * j + 3 >= 2 * s) & (4 * i + 1 <= 2 * s + 2 * j)


def _star(s: int) -> np.ndarray:
    centre = s / 2
    angles = np.deg2rad(-90.0 + 36.0 * np.arange(10))
    radii = np.where(np.arange(10) % 2 == 0, s / 2, 0.4 * s / 2)
    vx, vy = radii * np.cos(angles), radii * np.sin(angles)  # vertices relative to the centre
    px = (np.arange(s) + 0.5 - centre)[None, :, None]
    py = (np.arange(s) + 0.5 - centre)[:, None, None]
    ax, ay, bx, by = vx, vy, np.roll(vx, -1), np.roll(vy, -1)
    # The star is the union of the 10 triangles (centre, v_k, v_k+1), all wound the same way.
    side_a = ax * py - ay * px >= 0
    side_b = px * by - py * bx >= 0
    side_edge = (bx - ax) * (py - ay) - (by - ay) * (px - ax) >= 0
    return (side_a & side_b & side_edge).any(axis=-1)


def _heart(s: int) -> np.ndarray:
    i, j = _centres(s)
    y4 = 4 * j + 2  # 4·y of the pixel centre
    left_disc = (4 * i + 2 - s) ** 2 + (y4 - s) ** 2 <= s * s
    right_disc = (4 * i + 2 - 3 * s) ** 2 + (y4 - s) ** 2 <= s * s
    triangle = (y4 >= s) & (y4 <= s + 6 * i + 3) & (y4 <= 7 * s - 6 * i - 3)
    return left_disc | right_disc | triangle


def _cross(s: int) -> np.ndarray:
    i, j = _centres(s)
    rows = (6 * j + 3 >= 2 * s) & (6 * j + 3 <= 4 * s)
    cols = (6 * i + 3 >= 2 * s) & (6 * i + 3 <= 4 * s)
    return rows | cols


_DRAW = {
    "circle": _circle,
    "square": _square,
    "triangle": _triangle,
    "star": _star,
    "heart": _heart,
    "cross": _cross,
}
assert tuple(_DRAW) == SHAPES


@lru_cache(maxsize=2048)
def _cached_mask(shape: str, s: int) -> np.ndarray:
    mask = np.ascontiguousarray(np.broadcast_to(_DRAW[shape](s), (s, s)))
    mask.setflags(write=False)
    return mask


def shape_mask(shape: str, s: int) -> np.ndarray:
    """bool[s, s]: the pixels of an s×s box that the shape covers (read-only, cached)."""
    if shape not in _DRAW:
        raise LuminaError(f"unknown shape {shape!r}; expected one of {', '.join(SHAPES)}")
    if s < 1:
        raise LuminaError(f"shape size must be a positive number of pixels, got {s}")
    return _cached_mask(shape, int(s))


@lru_cache(maxsize=2048)
def tight_extent(shape: str, s: int) -> tuple[int, int, int, int]:
    """The tight bounding box (x0, y0, x1, y1), x1/y1 exclusive, of the shape's pixels inside its box."""
    mask = shape_mask(shape, s)
    cols, rows = np.flatnonzero(mask.any(axis=0)), np.flatnonzero(mask.any(axis=1))
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1
