"""Task samples: exact messages, ground truth that scores 1.0, and corrupted replies that fail."""

import re
from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.world.palette import BACKGROUND, COLORS
from lumina_mgpt.world.render import edge_map, render
from lumina_mgpt.world.scene import Scene, SceneObject
from lumina_mgpt.world.score import box_iou, edge_f1, match_all, miou, parse_box, score_t2i, score_task
from lumina_mgpt.world.spec import PromptSpec
from lumina_mgpt.world.tasks import IMAGE, TASK_KINDS, benchmark_tasks, sample_task

CANVASES = [(128, 128), (160, 96), (96, 160), (64, 128)]
WORD = r"[a-z]+"
MESSAGE_PATTERNS = {
    "editing": rf"(Change the colour of the {WORD} {WORD} to {WORD}\.|Remove the {WORD} {WORD}\.|Add an? {WORD} {WORD}\.)",
    "segmentation": r"Semantic segmentation\.",
    "edges": r"Edge detection\.",
    "detection": rf"Detect: the {WORD} {WORD}\.",
    "seg_to_image": r"Generate an image according to the provided image, and according to the following caption:\n.+",
    "count_qa": rf"How many {WORD}s are there\?",
    "color_qa": rf"What colour is the {WORD}\?",
    "yesno_qa": rf"Is there an? {WORD} {WORD}\?",
    "captioning": r"Describe the image\.",
}


def _truth_replies(task) -> list[dict]:
    return [
        {"text": "" if m["images"] else m["content"], "images": m["images"]}
        for m in task.messages
        if m["role"] == "assistant"
    ]


def _image_reply(image) -> list[dict]:
    return [{"text": "", "images": [image]}]


@settings(max_examples=60)
@given(
    seed=st.integers(0, 2**32 - 1),
    kind=st.sampled_from(TASK_KINDS),
    canvas=st.sampled_from(CANVASES),
    templates_only=st.booleans(),
)
def test_ground_truth_scores_one(seed, kind, canvas, templates_only):
    task = sample_task(kind, np.random.default_rng(seed), *canvas, templates_only=templates_only)
    for message in task.messages:
        assert message["content"].count(IMAGE) == len(message["images"])
        assert all(image.dtype == np.uint8 and image.ndim == 3 for image in message["images"])
    verdict = score_task(task, _truth_replies(task))
    assert verdict.passed and verdict.score == 1.0, verdict


def test_human_messages_follow_the_contract():
    rng = np.random.default_rng(0)
    for kind, pattern in MESSAGE_PATTERNS.items():
        for _ in range(5):
            task = sample_task(kind, rng, 128, 128)
            question = task.turns[0][0]
            assert re.fullmatch(pattern + " " + re.escape(IMAGE), question["content"]), question["content"]
            assert len(question["images"]) == 1 and question["images"][0].shape == (128, 128, 3)
    frames = sample_task("frames", rng, 160, 96, templates_only=True)
    assert re.fullmatch(
        r"Generate [234] frames of 160x96 in which everything moves to the right:\na photo of .+",
        frames.messages[0]["content"],
    )
    t2i = sample_task("t2i", rng, 96, 160, templates_only=True)
    assert t2i.messages[0]["content"].startswith(
        "Generate an image of 96x160 according to the following prompt:\n"
    )


def test_multiturn_editing_carries_the_image_only_first():
    task = sample_task("editing_multiturn", np.random.default_rng(5), 128, 128)
    assert len(task.turns) in (2, 3) and [len(t) for t in task.turns] == [1] * len(task.turns)
    assert task.turns[0][0]["content"].endswith(" " + IMAGE)
    assert all(IMAGE not in t[0]["content"] and not t[0]["images"] for t in task.turns[1:])


def test_dual_panel_messages_and_the_given_upper_half():
    rng = np.random.default_rng(1)
    pair = sample_task("dual_pair_edge", rng, 160, 96, templates_only=True)
    assert pair.messages[0]["content"].startswith(
        "Generate a dual-panel image of 160x96 where the <lower half> displays a <edge map>, while the "
        "<upper half> retains the original image for direct visual comparison:\na photo of "
    )
    i2i = sample_task("dual_i2i_seg", rng, 128, 128, templates_only=True)
    user, prefix = i2i.turns[0]
    assert user["content"].startswith(
        "Generate a dual-panel image of 128x128 where the <upper half> displays a "
        "<segmentation map>, while the <lower half> retains the original image"
    )
    assert prefix["role"] == "assistant" and prefix["images"][0].shape == (64, 128, 3)
    with pytest.raises(LuminaError, match="dual-panel"):
        sample_task("dual_pair_seg", rng, 128, 88)


def test_benchmark_tasks_are_deterministic():
    a = benchmark_tasks(3, 2, 128, 128, ["captioning", "detection"])
    b = benchmark_tasks(3, 2, 128, 128, ["captioning", "detection"])
    assert [t.truth for t in a] == [t.truth for t in b] and [t.kind for t in a] == ["captioning"] * 2 + [
        "detection"
    ] * 2
    with pytest.raises(LuminaError, match="unknown task kind"):
        benchmark_tasks(0, 1, 128, 128, ["juggling"])


# ---- corruptions fail ------------------------------------------------------------------------------

SCENE = Scene(
    128,
    128,
    (
        SceneObject("star", "red", 10, 10, 36),
        SceneObject("circle", "blue", 70, 14, 30),
        SceneObject("circle", "yellow", 20, 70, 32),
    ),
)


def _with(scene: Scene, index: int, **changes) -> Scene:
    return scene.with_objects(
        [replace(o, **changes) if k == index else o for k, o in enumerate(scene.objects)]
    )


def test_text_to_image_corruptions_fail():
    colors = PromptSpec("colors", ("star",), ("red",))
    counting = PromptSpec("counting", ("circle",), (None,), 2)
    position = PromptSpec("position", ("star", "circle"), (None, None), relation="to the left of")
    for spec in (colors, counting, position):
        assert score_t2i([spec], render(SCENE), 128, 128).passed
    assert not score_t2i([colors], render(_with(SCENE, 0, color="pink")), 128, 128).passed  # recoloured
    assert not score_t2i([colors], render(_with(SCENE, 0, shape="heart")), 128, 128).passed  # shape swapped
    extra = SCENE.with_objects([*SCENE.objects, SceneObject("circle", "green", 80, 80, 30)])
    assert not score_t2i([counting], render(extra), 128, 128).passed  # wrong count
    moved = _with(SCENE, 0, x=80, y=70)  # the star now right of both circles
    assert not score_t2i([position], render(moved), 128, 128).passed
    assert "expected 128x128" in score_t2i([colors], render(SCENE)[:, :120], 128, 128).detail


def _task(kind: str, seed: int = 0):
    return sample_task(kind, np.random.default_rng(seed), 128, 128, templates_only=True)


def test_editing_corruptions_fail():
    task = next(t for s in range(50) if (t := _task("editing", s)).truth["turns"][0]["op"] == "recolor")
    before = task.turns[0][0]["images"][0]
    after = task.messages[1]["images"][0]
    assert score_task(task, _image_reply(after)).passed
    assert not score_task(task, _image_reply(before)).passed  # nothing done
    shifted = np.full_like(after, BACKGROUND)
    shifted[:, 8:] = after[:, :-8]  # everything moved 8 px (> 0.05·128 = 6.4)
    verdict = score_task(task, _image_reply(shifted))
    assert not verdict.passed and "moved" in verdict.detail
    assert not score_task(task, [{"text": "", "images": []}]).passed


def test_map_and_answer_corruptions_fail():
    seg, edges = _task("segmentation"), _task("edges")
    assert score_task(seg, _image_reply(edge_map(Scene.from_dict(seg.truth["scene"])))).score < 0.75
    assert score_task(edges, _image_reply(np.zeros((128, 128, 3), np.uint8))).score == 0.0
    detection = _task("detection")
    x0, y0, x1, y1 = detection.truth["box"]
    assert score_task(detection, [{"text": f" {x0}, {y0}, {x1}, {y1} ", "images": []}]).passed
    half = (x1 - x0) // 2 + 2
    assert not score_task(detection, [{"text": f"{x0 + half},{y0},{x1 + half},{y1}", "images": []}]).passed
    assert not score_task(detection, [{"text": "somewhere", "images": []}]).passed
    for kind, wrong in (("count_qa", "five"), ("color_qa", "grey"), ("captioning", "a grey blob.")):
        task = _task(kind)
        assert score_task(task, [{"text": "  " + task.truth["answer"].upper() + "\n", "images": []}]).passed
        assert not score_task(task, [{"text": wrong, "images": []}]).passed
    yesno = _task("yesno_qa")
    flipped = {"yes": "no", "no": "yes"}[yesno.truth["answer"]]
    assert not score_task(yesno, [{"text": flipped, "images": []}]).passed


def test_condition_to_image_corruptions_fail():
    task = _task("seg_to_image", 2)
    scene = Scene.from_dict(task.truth["scene"])
    image = render(scene)
    assert score_task(task, _image_reply(image)).passed
    recolored = image.copy()
    recolored[(image == COLORS[scene.objects[0].color]).all(-1)] = COLORS[
        "white" if scene.objects[0].color != "white" else "black"
    ]
    assert not score_task(task, _image_reply(recolored)).passed
    if len(scene.objects) > 1:
        assert not score_task(task, _image_reply(render(scene.with_objects(scene.objects[1:])))).passed
    extra = image.copy()
    extra[:2, :] = COLORS["red"]  # a thin red bar along the top: 256 px, an unknown object
    assert not score_task(task, _image_reply(extra)).passed


def test_frames_and_dual_panel_corruptions_fail():
    frames = _task("frames", 1)
    still = [frames.messages[1]["images"][0]] * frames.truth["n"]
    assert score_task(frames, _truth_replies(frames)).passed
    assert not score_task(frames, [{"text": "", "images": still}]).passed
    assert not score_task(frames, [{"text": "", "images": still[:1]}]).passed
    pair = _task("dual_pair_seg", 3)
    canvas = pair.messages[1]["images"][0].copy()
    canvas[64:] = 0  # the map is gone
    assert not score_task(pair, _image_reply(canvas)).passed
    i2i = _task("dual_i2i_edge", 4)
    lower = i2i.messages[1]["images"][0][64:]
    assert score_task(i2i, _image_reply(lower)).passed  # the lower half alone is accepted too
    assert not score_task(i2i, _image_reply(np.full_like(lower, BACKGROUND))).passed


def test_metric_definitions():
    truth = np.zeros((4, 4), dtype=np.int64)
    pred = np.zeros((4, 4, 3), np.uint8)
    pred[0, 0] = (230, 25, 75)  # one circle pixel where the truth is background
    assert miou(pred, truth) == pytest.approx((15 / 16 + 0) / 2)
    line = np.zeros((20, 20), bool)
    line[10] = True
    for offset, expected in ((2, 1.0), (3, 0.0)):
        shifted = np.zeros((20, 20, 3), np.uint8)
        shifted[10 + offset] = 255
        assert edge_f1(shifted, line) == expected
    assert edge_f1(np.zeros((4, 4, 3), np.uint8), np.zeros((4, 4), bool)) == 1.0
    assert parse_box("1,2,3,4") == (1, 2, 3, 4) and parse_box("[1, 2, 3, 4]") == (1, 2, 3, 4)
    assert parse_box("1,2,3") is None and parse_box("1,2,3,4,5") is None
    assert box_iou((0, 0, 10, 10), (5, 0, 15, 10)) == pytest.approx(1 / 3)
    assert match_all(2, 2, lambda i, j: (i, j) in {(0, 0), (0, 1), (1, 0)})
    assert not match_all(2, 2, lambda i, j: j == 0)


def test_reply_count_must_match_the_turns():
    task = _task("captioning")
    with pytest.raises(LuminaError, match="replies"):
        score_task(task, [])


@pytest.mark.parametrize("seed", [597, 768, 770])  # four big objects that once left no room to move
def test_frames_tasks_redraw_a_scene_with_no_room_to_move(seed):
    task = sample_task("frames", np.random.default_rng(seed), 128, 128)
    assert score_task(task, _truth_replies(task)).passed
