"""Shape geometry against an independent per-pixel reference, and the three renderers."""

import math

import numpy as np
import pytest

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.world.palette import BACKGROUND, COLORS, SEG_COLORS, SHAPES
from lumina_mgpt.world.render import dilate, edge_map, render, segmentation_map, shape_mask
from lumina_mgpt.world.scene import Scene, SceneObject, sample_scene


def _in_polygon(x: float, y: float, vertices: list[tuple[float, float]]) -> bool:
    """Even-odd ray casting (a different algorithm from the renderer's half-plane tests)."""
    inside = False
    for (x1, y1), (x2, y2) in zip(vertices, vertices[1:] + vertices[:1], strict=True):
        if (y1 > y) != (y2 > y) and x < x1 + (y - y1) * (x2 - x1) / (y2 - y1):
            inside = not inside
    return inside


def _on_or_left(x, y, a, b) -> bool:
    """Closed half-plane test: (x, y) on the inner side of edge a→b of a clockwise (y-down) triangle."""
    return (b[0] - a[0]) * (y - a[1]) - (b[1] - a[1]) * (x - a[0]) >= 0


def _in_triangle(x, y, p, q, r) -> bool:
    return _on_or_left(x, y, p, q) and _on_or_left(x, y, q, r) and _on_or_left(x, y, r, p)


def _reference_inside(shape: str, s: int, x: float, y: float) -> bool:
    """WORLD.md's regions, written out directly (closed; all values here are exact in binary floats)."""
    if shape == "circle":
        return (x - s / 2) ** 2 + (y - s / 2) ** 2 <= (s / 2) ** 2
    if shape == "square":
        return True
    if shape == "triangle":
        return _in_triangle(x, y, (s / 2, 0), (s, s), (0, s))
    if shape == "star":
        vertices = [
            (
                s / 2 + r * math.cos(math.radians(-90 + 36 * k)),
                s / 2 + r * math.sin(math.radians(-90 + 36 * k)),
            )
            for k, r in enumerate([s / 2, 0.4 * s / 2] * 5)
        ]
        return _in_polygon(x, y, vertices)
    if shape == "heart":
        in_disc = any((x - cx) ** 2 + (y - s / 4) ** 2 <= (s / 4) ** 2 for cx in (s / 4, 3 * s / 4))
        return in_disc or _in_triangle(x, y, (0, s / 4), (s, s / 4), (s / 2, s))
    if shape == "cross":
        return s / 3 <= y <= 2 * s / 3 or s / 3 <= x <= 2 * s / 3
    raise AssertionError(shape)


@pytest.mark.parametrize("shape", SHAPES)
def test_shape_masks_match_the_reference_regions(shape):
    for s in [*range(1, 41), 63, 97]:
        expected = np.array(
            [[_reference_inside(shape, s, i + 0.5, j + 0.5) for i in range(s)] for j in range(s)]
        )
        np.testing.assert_array_equal(shape_mask(shape, s), expected, err_msg=f"{shape} at s={s}")


def test_small_masks_by_hand():
    np.testing.assert_array_equal(shape_mask("cross", 3), [[0, 1, 0], [1, 1, 1], [0, 1, 0]])
    np.testing.assert_array_equal(shape_mask("triangle", 2), [[0, 0], [1, 1]])
    assert shape_mask("circle", 2).all()
    assert shape_mask("square", 5).all()


def test_masks_are_mirror_symmetric():
    for shape in SHAPES:
        mask = shape_mask(shape, 31)
        np.testing.assert_array_equal(mask, mask[:, ::-1], err_msg=shape)


def test_shape_mask_rejects_bad_input():
    with pytest.raises(LuminaError, match="unknown shape"):
        shape_mask("hexagon", 10)
    with pytest.raises(LuminaError, match="positive"):
        shape_mask("circle", 0)


def _scene() -> Scene:
    objects = (
        SceneObject("star", "red", 3, 4, 20),
        SceneObject("heart", "orange", 30, 30, 24),
        SceneObject("circle", "red", 36, 3, 15),
    )
    return Scene(64, 56, objects)


def test_render_paints_each_object_in_its_colour_on_grey():
    scene = _scene()
    image = render(scene)
    assert image.shape == (56, 64, 3) and image.dtype == np.uint8
    for o in scene.objects:
        window = image[o.y : o.y + o.size, o.x : o.x + o.size]
        mask = shape_mask(o.shape, o.size)
        assert (window[mask] == COLORS[o.color]).all()
        assert (window[~mask] == BACKGROUND).all()
    drawn = sum(int(shape_mask(o.shape, o.size).sum()) for o in scene.objects)
    assert int((image != BACKGROUND).any(-1).sum()) == drawn
    np.testing.assert_array_equal(render(scene), image)  # deterministic


def test_segmentation_map_uses_class_colours_on_black():
    scene = _scene()
    seg = segmentation_map(scene)
    for o in scene.objects:
        window = seg[o.y : o.y + o.size, o.x : o.x + o.size]
        assert (window[shape_mask(o.shape, o.size)] == SEG_COLORS[o.shape]).all()
    drawn = sum(int(shape_mask(o.shape, o.size).sum()) for o in scene.objects)
    assert int((seg != 0).any(-1).sum()) == drawn


def _reference_edges(scene: Scene) -> np.ndarray:
    """Boundary pixels (an object pixel with a 4-neighbour outside the object), dilated 3×3, by loops."""
    h, w = scene.height, scene.width
    owner = -np.ones((h, w), dtype=int)
    for k, o in enumerate(scene.objects):
        owner[o.y : o.y + o.size, o.x : o.x + o.size][shape_mask(o.shape, o.size)] = k
    boundary = np.zeros((h, w), dtype=bool)
    for y in range(h):
        for x in range(w):
            if owner[y, x] >= 0:
                for ny, nx in ((y - 1, x), (y + 1, x), (y, x - 1), (y, x + 1)):
                    if not (0 <= ny < h and 0 <= nx < w) or owner[ny, nx] != owner[y, x]:
                        boundary[y, x] = True
    edges = np.zeros((h, w), dtype=bool)
    for y, x in zip(*np.nonzero(boundary), strict=True):
        edges[max(y - 1, 0) : y + 2, max(x - 1, 0) : x + 2] = True
    return edges


def test_edge_map_matches_the_reference():
    for scene in [_scene(), sample_scene(np.random.default_rng(3), 48, 64)]:
        edges = edge_map(scene)
        expected = _reference_edges(scene)
        assert set(map(tuple, edges.reshape(-1, 3))) <= {(0, 0, 0), (255, 255, 255)}
        np.testing.assert_array_equal(edges[:, :, 0] == 255, expected)


def test_dilate_is_a_square_of_the_radius():
    mask = np.zeros((9, 9), dtype=bool)
    mask[4, 4] = True
    assert dilate(mask, 2).sum() == 25 and dilate(mask, 2)[2:7, 2:7].all()
    mask[0, 0] = True
    assert dilate(mask)[:2, :2].all() and dilate(mask).sum() == 9 + 4


def test_render_rejects_objects_off_the_canvas():
    with pytest.raises(LuminaError, match="leaves the canvas"):
        render(Scene(64, 64, (SceneObject("circle", "red", 50, 0, 20),)))
    with pytest.raises(LuminaError, match="leaves the canvas"):
        edge_map(Scene(64, 64, (SceneObject("circle", "red", -1, 0, 20),)))
