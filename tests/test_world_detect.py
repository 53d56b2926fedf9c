"""The detector of WORLD.md: exact recovery of rendered scenes, its thresholds, and the relation rule."""

from collections import deque

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from PIL import Image

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.world.detect import (
    as_array,
    classify_pixels,
    classify_shape,
    detect,
    label_components,
    min_component_area,
    nearest_class,
    relation_holds,
)
from lumina_mgpt.world.palette import BACKGROUND, COLORS, SHAPES
from lumina_mgpt.world.render import render
from lumina_mgpt.world.scene import Scene, SceneObject, sample_scene, size_range
from lumina_mgpt.world.shapes import shape_mask

CANVASES = [(64, 64), (128, 128), (160, 96), (96, 160), (256, 128), (64, 128), (128, 64)]


def _truth(scene: Scene) -> list[tuple]:
    return sorted((o.shape, o.color, o.box, *o.center) for o in scene.objects)


def _found(image) -> list[tuple]:
    return sorted((d.shape, d.color, d.box, d.cx, d.cy) for d in detect(image))


@settings(max_examples=50)
@given(seed=st.integers(0, 2**32 - 1), canvas=st.sampled_from(CANVASES))
def test_detector_recovers_every_rendered_object(seed, canvas):
    scene = sample_scene(np.random.default_rng(seed), *canvas)
    image = render(scene)
    assert _found(image) == _truth(scene)
    for d in detect(image):
        assert d.area == d.mask.sum() and d.mask.shape == (d.box[3] - d.box[1], d.box[2] - d.box[0])


@settings(max_examples=15)
@given(seed=st.integers(0, 2**32 - 1))
def test_detector_tolerates_colour_noise(seed):
    rng = np.random.default_rng(seed)
    scene = sample_scene(rng, 128, 96)
    noisy = render(scene).astype(int) + rng.integers(-15, 16, (96, 128, 3))
    assert _found(noisy.clip(0, 255).astype(np.uint8)) == _truth(scene)


@pytest.mark.parametrize("shape", SHAPES)
def test_smallest_and_largest_legal_sizes_on_64x64(shape):
    for size in size_range(64, 64):
        scene = Scene(64, 64, (SceneObject(shape, "blue", 20, 20, size),))
        assert _found(render(scene)) == _truth(scene)


def test_every_legal_size_up_to_256_pixel_canvases_is_classified():
    smallest, _ = size_range(48, 48)
    _, largest = size_range(256, 256)
    for size in range(smallest, largest + 1):
        for shape in SHAPES:
            assert classify_shape(shape_mask(shape, size))[0] == shape, (shape, size)


def test_the_smallest_legal_objects_clear_the_area_threshold():
    for side in range(48, 257, 8):
        smallest, _ = size_range(side, side)
        for shape in SHAPES:
            assert shape_mask(shape, smallest).sum() >= min_component_area(side, side), (shape, side)


def test_pixel_classes_and_the_noise_radius():
    pixels = np.array(
        [[BACKGROUND, (188, 128, 128), (189, 128, 128), COLORS["white"], (10, 200, 250)]], dtype=np.uint8
    )
    np.testing.assert_array_equal(classify_pixels(pixels), [[0, 0, -1, 10, -1]])  # 60 is in, 61 is noise
    palette = np.array([[0, 0, 0], [2, 0, 0]])
    np.testing.assert_array_equal(
        nearest_class(np.array([[[1, 0, 0]]], np.uint8), palette), [[0]]
    )  # tie: first


def _reference_partition(classes: np.ndarray) -> set[frozenset]:
    """8-connected components of equal positive class by breadth-first search."""
    h, w = classes.shape
    seen, parts = np.zeros((h, w), bool), set()
    for y0 in range(h):
        for x0 in range(w):
            if classes[y0, x0] <= 0 or seen[y0, x0]:
                continue
            part, queue = [], deque([(y0, x0)])
            seen[y0, x0] = True
            while queue:
                y, x = queue.popleft()
                part.append((y, x))
                for ny in range(y - 1, y + 2):
                    for nx in range(x - 1, x + 2):
                        if (
                            0 <= ny < h
                            and 0 <= nx < w
                            and not seen[ny, nx]
                            and classes[ny, nx] == classes[y, x]
                        ):
                            seen[ny, nx] = True
                            queue.append((ny, nx))
            parts.add(frozenset(part))
    return parts


@settings(max_examples=40)
@given(seed=st.integers(0, 2**32 - 1), shape=st.sampled_from([(1, 1), (7, 13), (16, 16), (5, 40)]))
def test_labelling_matches_breadth_first_search(seed, shape):
    classes = np.random.default_rng(seed).integers(-1, 4, shape)
    labels = label_components(classes)
    parts = {frozenset(zip(*np.nonzero(labels == v), strict=True)) for v in np.unique(labels[labels >= 0])}
    assert parts == _reference_partition(classes)


def test_diagonal_pixels_connect_and_small_components_drop():
    image = np.full((64, 64, 3), BACKGROUND, np.uint8)
    image[10:15, 10:20] = COLORS["red"]  # 50 pixels: kept (threshold 0.25·14.08² ≈ 49.56)
    image[40:47, 40:47] = COLORS["red"]  # 49 pixels: dropped
    image[30:35, 10:20] = COLORS["blue"]
    image[35:40, 20:30] = COLORS["blue"]  # touches the block above only at a corner: one component
    assert min_component_area(64, 64) == pytest.approx(49.5616)
    found = [(d.color, d.box, d.area) for d in detect(image)]
    assert found == [("red", (10, 10, 20, 15), 50), ("blue", (10, 30, 30, 40), 100)]


def test_a_ring_is_unknown():
    image = np.full((64, 64, 3), BACKGROUND, np.uint8)
    image[10:50, 10:50] = COLORS["green"]
    image[12:48, 12:48] = BACKGROUND
    (ring,) = detect(image)
    assert ring.shape == "unknown" and classify_shape(ring.mask)[1] < 0.5


def test_relation_rule_thresholds():
    w = h = 100
    assert relation_holds((10, 50), (16, 50), "to the left of", w, h)
    assert not relation_holds((10, 50), (15, 50), "to the left of", w, h)  # 0.05·W is not enough
    assert not relation_holds((10, 50), (30, 70), "to the left of", w, h)  # offsets tie
    assert relation_holds((10, 50), (30, 69), "to the left of", w, h)
    assert relation_holds((30, 50), (10, 50), "to the right of", w, h)
    assert relation_holds((50, 40), (50, 60), "above", w, h) and relation_holds(
        (50, 60), (50, 40), "below", w, h
    )
    assert relation_holds((50, 10), (50, 16), "above", 200, 100)  # vertical offsets are measured against H
    with pytest.raises(LuminaError, match="unknown relation"):
        relation_holds((0, 0), (1, 1), "near", w, h)


def test_inputs_are_checked():
    assert as_array(Image.new("RGBA", (8, 8))).shape == (8, 8, 3)
    with pytest.raises(LuminaError, match=r"\[H, W, 3\]"):
        detect(np.zeros((8, 8), np.uint8))
    with pytest.raises(LuminaError, match="dtype uint8"):
        detect(np.zeros((8, 8, 3), np.float32))
    with pytest.raises(LuminaError, match="PIL image"):
        detect([[0, 0, 0]])
