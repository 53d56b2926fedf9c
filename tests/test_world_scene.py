"""Scene sampling obeys WORLD.md's size, gap and count rules on any legal canvas."""

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.world.scene import (
    Scene,
    SceneObject,
    add_object,
    check_canvas,
    gap,
    place_objects,
    sample_scene,
    scene_problems,
    size_range,
)

CANVASES = [(48, 48), (64, 64), (128, 128), (160, 96), (96, 160), (256, 128), (64, 256), (128, 64)]


def _box_distance(a: SceneObject, b: SceneObject) -> float:
    dx = max(b.x - (a.x + a.size), a.x - (b.x + b.size), 0)
    dy = max(b.y - (a.y + a.size), a.y - (b.y + b.size), 0)
    return float(np.hypot(dx, dy))


@settings(max_examples=60)
@given(seed=st.integers(0, 2**32 - 1), canvas=st.sampled_from(CANVASES))
def test_sampled_scenes_follow_the_contract(seed, canvas):
    width, height = canvas
    scene = sample_scene(np.random.default_rng(seed), width, height)
    assert scene_problems(scene) == []
    m = min(width, height)
    assert 1 <= len(scene.objects) <= 4
    for o in scene.objects:  # the contract's real-valued bounds, checked independently of the rounding
        assert 0.22 * m <= o.size <= 0.38 * m
        assert min(o.x, o.y, width - o.x - o.size, height - o.y - o.size) >= 0.04 * m
    for a, b in itertools.combinations(scene.objects, 2):
        assert _box_distance(a, b) >= 0.04 * m
    assert sample_scene(np.random.default_rng(seed), width, height) == scene


def test_rounding_is_exact_integer_arithmetic():
    assert size_range(64, 64) == (15, 24) and gap(64, 64) == 3
    assert size_range(100, 200) == (22, 38)  # 0.22 * 100 is 22.000000000000004 in floats
    assert gap(128, 96) == 4 and gap(48, 48) == 3  # ceil(1.92) = 2 is raised to the 3-pixel floor


def test_place_objects_keeps_items_in_order_and_room_on_the_right():
    items = [("star", "red"), ("circle", "blue"), ("cross", "white")]
    rng = np.random.default_rng(0)
    for _ in range(20):
        scene = place_objects(rng, 160, 96, items, right_room=48)
        assert [(o.shape, o.color) for o in scene.objects] == items
        assert all(o.x + o.size <= 160 - gap(160, 96) - 48 for o in scene.objects)
        assert scene_problems(scene) == []


def test_n_objects_shapes_and_colours_are_respected():
    scene = sample_scene(np.random.default_rng(1), 128, 128, n_objects=4, shapes=["heart"], colors=["pink"])
    assert [(o.shape, o.color) for o in scene.objects] == [("heart", "pink")] * 4


def test_add_object_places_legally_or_declines():
    rng = np.random.default_rng(2)
    scene = sample_scene(rng, 128, 128, n_objects=2)
    added = add_object(rng, scene, "triangle", "green")
    assert added.objects[:2] == scene.objects and added.objects[2].shape == "triangle"
    assert scene_problems(added) == []
    full = sample_scene(rng, 128, 128, n_objects=4)
    assert add_object(rng, full, "triangle", "green") is None


def test_scene_problems_names_each_broken_rule():
    scene = Scene(
        64,
        64,
        (
            SceneObject("circle", "red", 3, 3, 24),
            SceneObject("star", "blue", 28, 3, 14),
            SceneObject("cross", "red", 50, 50, 20),
        ),
    )
    problems = scene_problems(scene)
    assert "object 1 has side 14 outside [15, 24]" in problems
    assert "objects 0 and 1 are closer than 3 px" in problems
    assert "object 2 is closer than 3 px to the edge" in problems


def test_scene_round_trips_through_a_dict():
    scene = sample_scene(np.random.default_rng(4), 96, 160)
    assert Scene.from_dict(scene.to_dict()) == scene


@pytest.mark.parametrize("canvas", [(100, 64), (64, 40), (0, 64)])
def test_bad_canvases_raise(canvas):
    with pytest.raises(LuminaError, match="multiple of 8"):
        check_canvas(*canvas)


def test_bad_requests_raise():
    rng = np.random.default_rng(0)
    with pytest.raises(LuminaError, match="1 to 4 objects"):
        sample_scene(rng, 64, 64, n_objects=5)
    with pytest.raises(LuminaError, match="unknown object"):
        place_objects(rng, 64, 64, [("hexagon", "red")])
    with pytest.raises(LuminaError, match="could not place"):
        place_objects(rng, 64, 64, [("circle", "red")], right_room=60, max_tries=3)
