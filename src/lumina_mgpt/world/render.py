"""Rendering scenes: the image, its segmentation map and its edge map, as uint8[H, W, 3] arrays."""

import numpy as np

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.world.palette import BACKGROUND, COLORS, EDGE_COLOR, SEG_COLORS
from lumina_mgpt.world.scene import Scene
from lumina_mgpt.world.shapes import shape_mask

__all__ = [
    "boundary",
    "dilate",
    "edge_map",
    "edge_mask",
    "paint_mask",
    "render",
    "segmentation_map",
    "shape_mask",
]


def _check_inside(scene: Scene) -> None:
    for o in scene.objects:
        if o.x < 0 or o.y < 0 or o.x + o.size > scene.width or o.y + o.size > scene.height:
            raise LuminaError(f"the {o.color} {o.shape} at ({o.x}, {o.y}) size {o.size} leaves the canvas")


def _paint(scene: Scene, background: tuple[int, int, int], color_of) -> np.ndarray:
    _check_inside(scene)
    image = np.empty((scene.height, scene.width, 3), dtype=np.uint8)
    image[:] = background
    for o in scene.objects:
        window = image[o.y : o.y + o.size, o.x : o.x + o.size]
        window[shape_mask(o.shape, o.size)] = color_of(o)
    return image


def render(scene: Scene) -> np.ndarray:
    """The scene's image: grey background, each object flat in its palette colour, hard edges."""
    return _paint(scene, BACKGROUND, lambda o: COLORS[o.color])


def segmentation_map(scene: Scene) -> np.ndarray:
    """Black background, each object filled with its shape's class colour."""
    return _paint(scene, SEG_COLORS["background"], lambda o: SEG_COLORS[o.shape])


def boundary(mask: np.ndarray) -> np.ndarray:
    """The pixels of `mask` with a 4-neighbour outside it (outside the array counts as outside)."""
    padded = np.pad(mask, 1)
    inner = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~inner


def dilate(mask: np.ndarray, radius: int = 1) -> np.ndarray:
    """Dilation by a (2r+1)×(2r+1) square (every pixel within Chebyshev distance r), clipped to the array."""
    h, w = mask.shape
    padded = np.pad(mask, radius)
    rows = np.zeros((h + 2 * radius, w), dtype=bool)
    for dx in range(2 * radius + 1):
        rows |= padded[:, dx : dx + w]
    out = np.zeros((h, w), dtype=bool)
    for dy in range(2 * radius + 1):
        out |= rows[dy : dy + h]
    return out


def edge_mask(width: int, height: int, masks: list[tuple[int, int, np.ndarray]]) -> np.ndarray:
    """bool[H, W]: the white pixels of the edge map of objects given as (x, y, bool mask), each mask placed
    with its top-left at (x, y): every object's boundary pixels, dilated 3×3 (clipped to the canvas)."""
    edges = np.zeros((height, width), dtype=bool)
    for x, y, mask in masks:
        h, w = mask.shape
        edges[y : y + h, x : x + w] |= boundary(mask)
    return dilate(edges)


def paint_mask(mask: np.ndarray, color: tuple[int, int, int], background: tuple[int, int, int]) -> np.ndarray:
    """uint8[H, W, 3]: `color` where the mask is set, `background` elsewhere."""
    return np.where(mask[:, :, None], np.array(color, np.uint8), np.array(background, np.uint8))


def edge_map(scene: Scene) -> np.ndarray:
    """Black, with each object's boundary pixels dilated 3×3 in white."""
    _check_inside(scene)
    masks = [(o.x, o.y, shape_mask(o.shape, o.size)) for o in scene.objects]
    return paint_mask(edge_mask(scene.width, scene.height, masks), EDGE_COLOR, SEG_COLORS["background"])
