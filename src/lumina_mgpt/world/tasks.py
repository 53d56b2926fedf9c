"""Task samples of the shapes world, as conversations with their ground truth, drawn on the fly from an rng.

A message is `{"role": "user" | "assistant", "content": str, "images": [uint8[H, W, 3], ...]}` with one
`<|image|>` in `content` per image, in order. `Task.messages` is the whole true conversation (a training
sample); `Task.turns` are the messages to send, turn by turn, when the task is a benchmark item: after each
turn the model's reply joins the conversation as an assistant message. A conversation that ends with an
assistant message asks the model to continue that message (dual-panel i2i: its one image is the given upper
half of the canvas). Human messages follow WORLD.md's omni table to the letter.
"""

from collections import Counter
from dataclasses import dataclass, replace

import numpy as np

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.unirep import t2i_prompt
from lumina_mgpt.world.captions import describe, describe_scene, order_objects, random_spec, scene_caption
from lumina_mgpt.world.palette import COLOR_NAMES, COUNT_WORDS, SHAPES, join_phrases, noun_phrase, plural
from lumina_mgpt.world.render import edge_map, render, segmentation_map
from lumina_mgpt.world.scene import (
    MAX_OBJECTS,
    MIN_SIDE,
    Scene,
    add_object,
    check_canvas,
    pick,
    place_objects,
    sample_scene,
)
from lumina_mgpt.world.spec import PromptSpec, scene_for_spec

IMAGE = "<|image|>"
MAPS = ("segmentation map", "edge map")
TASK_KINDS = (
    "t2i",
    "editing",
    "editing_multiturn",
    "segmentation",
    "edges",
    "detection",
    "seg_to_image",
    "edge_to_image",
    "count_qa",
    "color_qa",
    "yesno_qa",
    "captioning",
    "frames",
    "dual_pair_seg",
    "dual_pair_edge",
    "dual_i2i_seg",
    "dual_i2i_edge",
)
OMNI_KINDS = TASK_KINDS[1:]
FRAME_SHIFT_FRACTION = 0.1

SEGMENTATION_PROMPT = f"Semantic segmentation. {IMAGE}"
EDGES_PROMPT = f"Edge detection. {IMAGE}"
CONDITION_PROMPT = (
    "Generate an image according to the provided image, and according to the following caption:\n{caption} "
    + IMAGE
)
FRAMES_PROMPT = "Generate {n} frames of {W}x{H} in which everything moves to the right:\n{description}"
DUAL_PROMPT = (
    "Generate a dual-panel image of {W}x{H} where the <{shown} half> displays a <{map}>, while the "
    "<{kept} half> retains the original image for direct visual comparison:\n{description}"
)


@dataclass
class Task:
    """One sample: the true conversation, the turns to send, and what the scorer needs (JSON-able)."""

    kind: str
    width: int
    height: int
    messages: list[dict]
    turns: list[list[dict]]
    truth: dict


def user(content: str, images=()) -> dict:
    return {"role": "user", "content": content, "images": list(images)}


def assistant(content: str, images=()) -> dict:
    return {"role": "assistant", "content": content, "images": list(images)}


def _single_turn(kind: str, scene: Scene, question: dict, answer: dict, truth: dict) -> Task:
    return Task(kind, scene.width, scene.height, [question, answer], [[question]], truth)


def frame_shift(width: int) -> int:
    """Pixels every object moves right from one frame to the next: round(0.1·W)."""
    return round(FRAME_SHIFT_FRACTION * width)


def map_image(scene: Scene, map_name: str) -> np.ndarray:
    return segmentation_map(scene) if map_name == "segmentation map" else edge_map(scene)


def dual_panel(scene: Scene, map_name: str, map_above: bool) -> np.ndarray:
    """A dual-panel canvas, twice the scene's height: the rendered scene and its map, the map above if
    `map_above` (the i2i tasks) else below (the pair tasks)."""
    halves = [map_image(scene, map_name), render(scene)]
    return np.concatenate(halves if map_above else halves[::-1])


def panel_fits(width: int, height: int) -> bool:
    """Whether a W×H canvas halves into two legal scene canvases (each half a multiple of 8, >= MIN_SIDE)."""
    return width % 8 == 0 and width >= MIN_SIDE and height % 16 == 0 and height // 2 >= MIN_SIDE


def _description(
    rng: np.random.Generator, width: int, height: int, templates_only: bool, right_room: int = 0
):
    """(description, specs, scene): a benchmark template and a minimal scene for it, or (training only, half
    the time) a random scene and a varied true caption."""
    if templates_only or rng.random() < 0.5:
        spec = random_spec(rng)
        return describe(spec), [spec], scene_for_spec(spec, rng, width, height, right_room=right_room)
    scene = sample_scene(rng, width, height, right_room=right_room)
    text, specs = describe_scene(rng, scene)
    return text, specs, scene


def condition_caption(scene: Scene, with_colors: bool) -> str:
    """The caption of a condition → image task: the scene's objects in captioning order, colours optional."""
    if with_colors:
        return scene_caption(list(scene.objects))
    return join_phrases([noun_phrase(o.shape) for o in order_objects(list(scene.objects))]) + "."


def _unique_objects(scene: Scene) -> list[int]:
    """Indices of objects whose (colour, shape) no other object shares: the ones a message can name."""
    counts = Counter((o.color, o.shape) for o in scene.objects)
    return [k for k, o in enumerate(scene.objects) if counts[(o.color, o.shape)] == 1]


def _edit(rng: np.random.Generator, scene: Scene) -> tuple[dict, str, Scene] | None:
    """(edit, instruction, edited scene): a random feasible recolour, removal or addition; None if none is.
    `edit` is {"op", "shape", "color"} (the object named or added) plus "new_color" for a recolour."""
    unique = _unique_objects(scene)
    shape, color = pick(rng, SHAPES), pick(rng, COLOR_NAMES)
    added = add_object(rng, scene, shape, color)
    ops = ["recolor"] * bool(unique) + ["remove"] * (bool(unique) and len(scene.objects) > 1)
    ops += ["add"] * (added is not None)
    if not ops:
        return None
    op = pick(rng, ops)
    if op == "add":
        return {"op": op, "shape": shape, "color": color}, f"Add {noun_phrase(shape, color)}.", added
    k = pick(rng, unique)
    target = scene.objects[k]
    edit = {"op": op, "shape": target.shape, "color": target.color}
    if op == "remove":
        others = [o for j, o in enumerate(scene.objects) if j != k]
        return edit, f"Remove the {target.color} {target.shape}.", scene.with_objects(others)
    new_color = pick(rng, [c for c in COLOR_NAMES if c != target.color])
    recolored = [replace(o, color=new_color) if j == k else o for j, o in enumerate(scene.objects)]
    instruction = f"Change the colour of the {target.color} {target.shape} to {new_color}."
    return {**edit, "new_color": new_color}, instruction, scene.with_objects(recolored)


def _editing(rng: np.random.Generator, width: int, height: int, n_turns: int, kind: str) -> Task:
    """Editing in n turns: the first carries the image, later ones only the instruction (redrawn in the rare
    case that a turn finds no applicable edit)."""
    while True:
        scene = sample_scene(rng, width, height)
        messages, turns, truth_turns = [], [], []
        for t in range(n_turns):
            edit = _edit(rng, scene)
            if edit is None:
                break
            edit, instruction, edited = edit
            question = user(f"{instruction} {IMAGE}", [render(scene)]) if t == 0 else user(instruction)
            messages += [question, assistant(IMAGE, [render(edited)])]
            turns.append([question])
            truth_turns.append(
                {**edit, "instruction": instruction, "before": scene.to_dict(), "after": edited.to_dict()}
            )
            scene = edited
        else:
            return Task(kind, width, height, messages, turns, {"turns": truth_turns})


def _qa(kind: str, scene: Scene, question: str, answer: str) -> Task:
    q = user(f"{question} {IMAGE}", [render(scene)])
    return _single_turn(kind, scene, q, assistant(answer), {"answer": answer, "scene": scene.to_dict()})


def _scene_with(
    rng: np.random.Generator,
    width: int,
    height: int,
    shape: str,
    n: int,
    color: str | None = None,
    n_total: int | None = None,
) -> Scene:
    """A scene with exactly n objects of `shape` (in `color` if given) among n_total objects (default
    uniform from max(n, 1) to 4), the others of other shapes; in random order."""
    n_total = n_total or int(rng.integers(max(n, 1), MAX_OBJECTS + 1))
    items = [(shape, color or pick(rng, COLOR_NAMES)) for _ in range(n)]
    others = [s for s in SHAPES if s != shape]
    items += [(pick(rng, others), pick(rng, COLOR_NAMES)) for _ in range(n_total - n)]
    return place_objects(rng, width, height, [items[k] for k in rng.permutation(len(items))])


def _check_dual(width: int, height: int) -> None:
    if not panel_fits(width, height):
        raise LuminaError(
            f"a dual-panel canvas needs a height that halves into a multiple of 8 of at least "
            f"{MIN_SIDE} px, got {width}x{height}"
        )


def _t2i(rng: np.random.Generator, width: int, height: int, templates_only: bool) -> Task:
    description, specs, scene = _description(rng, width, height, templates_only)
    question = user(t2i_prompt(description, width, height))
    truth = {"specs": [s.to_dict() for s in specs], "scene": scene.to_dict()}
    return _single_turn("t2i", scene, question, assistant(IMAGE, [render(scene)]), truth)


def _map_task(kind: str, prompt: str, draw_map):
    def build(rng: np.random.Generator, width: int, height: int, templates_only: bool) -> Task:
        scene = sample_scene(rng, width, height)
        question = user(prompt, [render(scene)])
        return _single_turn(
            kind, scene, question, assistant(IMAGE, [draw_map(scene)]), {"scene": scene.to_dict()}
        )

    return build


def _detection(rng: np.random.Generator, width: int, height: int, templates_only: bool) -> Task:
    scene = sample_scene(rng, width, height)
    while not (unique := _unique_objects(scene)):
        scene = sample_scene(rng, width, height)
    target = scene.objects[pick(rng, unique)]
    answer = ",".join(str(v) for v in target.box)
    question = user(f"Detect: the {target.color} {target.shape}. {IMAGE}", [render(scene)])
    truth = {"scene": scene.to_dict(), "box": list(target.box), "answer": answer}
    return _single_turn("detection", scene, question, assistant(answer), truth)


def _condition(map_name: str, kind: str):
    def build(rng: np.random.Generator, width: int, height: int, templates_only: bool) -> Task:
        scene = sample_scene(rng, width, height)
        with_colors = templates_only or rng.random() < 0.8
        caption = condition_caption(scene, with_colors)
        question = user(CONDITION_PROMPT.format(caption=caption), [map_image(scene, map_name)])
        truth = {"scene": scene.to_dict(), "map": map_name, "colors_named": with_colors}
        return _single_turn(kind, scene, question, assistant(IMAGE, [render(scene)]), truth)

    return build


def _count_qa(rng: np.random.Generator, width: int, height: int, templates_only: bool) -> Task:
    shape, n = pick(rng, SHAPES), int(rng.integers(0, MAX_OBJECTS + 1))
    scene = _scene_with(rng, width, height, shape, n)
    return _qa("count_qa", scene, f"How many {plural(shape)} are there?", COUNT_WORDS[n])


def _color_qa(rng: np.random.Generator, width: int, height: int, templates_only: bool) -> Task:
    shape, color = pick(rng, SHAPES), pick(rng, COLOR_NAMES)
    scene = _scene_with(rng, width, height, shape, 1, color)
    return _qa("color_qa", scene, f"What colour is the {shape}?", color)


def _yesno_qa(rng: np.random.Generator, width: int, height: int, templates_only: bool) -> Task:
    scene = sample_scene(rng, width, height)
    present = {(o.shape, o.color) for o in scene.objects}
    if rng.random() < 0.5:
        shape, color = pick(rng, sorted(present))
    else:  # half the "no"s are near misses: a shape of the scene in a colour it does not have there
        near = [(o.shape, c) for o in scene.objects for c in COLOR_NAMES if (o.shape, c) not in present]
        absent = [(s, c) for s in SHAPES for c in COLOR_NAMES if (s, c) not in present]
        shape, color = pick(rng, near if rng.random() < 0.5 else absent)
    answer = "yes" if (shape, color) in present else "no"
    return _qa("yesno_qa", scene, f"Is there {noun_phrase(shape, color)}?", answer)


def _captioning(rng: np.random.Generator, width: int, height: int, templates_only: bool) -> Task:
    scene = sample_scene(rng, width, height)
    return _qa("captioning", scene, "Describe the image.", scene_caption(list(scene.objects)))


FRAME_SCENE_TRIES = 20  # descriptions drawn for a frames task before giving up


def _frames(rng: np.random.Generator, width: int, height: int, templates_only: bool) -> Task:
    n, shift = int(rng.integers(2, 5)), frame_shift(width)
    for attempt in range(FRAME_SCENE_TRIES):  # a few scenes of four big objects leave no room to move: redraw
        try:
            description, specs, scene = _description(
                rng, width, height, templates_only, right_room=(n - 1) * shift
            )
            break
        except LuminaError:
            if attempt == FRAME_SCENE_TRIES - 1:
                raise
    frames = [scene.with_objects([o.moved(k * shift) for o in scene.objects]) for k in range(n)]
    question = user(FRAMES_PROMPT.format(n=n, W=width, H=height, description=description))
    answer = assistant(IMAGE * n, [render(f) for f in frames])
    truth = {
        "specs": [s.to_dict() for s in specs],
        "n": n,
        "shift": shift,
        "scenes": [f.to_dict() for f in frames],
    }
    return _single_turn("frames", scene, question, answer, truth)


def _dual_pair(map_name: str, kind: str):
    """The whole canvas from text: the upper half a scene for the description, the lower half its map."""

    def build(rng: np.random.Generator, width: int, height: int, templates_only: bool) -> Task:
        _check_dual(width, height)
        description, specs, scene = _description(rng, width, height // 2, templates_only)
        text = DUAL_PROMPT.format(
            W=width, H=height, shown="lower", map=map_name, kept="upper", description=description
        )
        canvas = dual_panel(scene, map_name, map_above=False)
        truth = {"specs": [s.to_dict() for s in specs], "map": map_name, "scene": scene.to_dict()}
        return Task(kind, width, height, [user(text), assistant(IMAGE, [canvas])], [[user(text)]], truth)

    return build


def _dual_i2i(map_name: str, kind: str):
    """The upper half (the map) is given as the start of the reply; the model continues with the image."""

    def build(rng: np.random.Generator, width: int, height: int, templates_only: bool) -> Task:
        _check_dual(width, height)
        scene = sample_scene(rng, width, height // 2)
        with_colors = templates_only or rng.random() < 0.8
        text = DUAL_PROMPT.format(
            W=width,
            H=height,
            shown="upper",
            map=map_name,
            kept="lower",
            description=condition_caption(scene, with_colors),
        )
        upper = map_image(scene, map_name)
        canvas = dual_panel(scene, map_name, map_above=True)
        truth = {"scene": scene.to_dict(), "map": map_name, "colors_named": with_colors}
        query = [user(text), assistant(IMAGE, [upper])]
        return Task(kind, width, height, [user(text), assistant(IMAGE, [canvas])], [query], truth)

    return build


_BUILDERS = {
    "t2i": _t2i,
    "editing": lambda rng, w, h, templates_only: _editing(rng, w, h, 1, "editing"),
    "editing_multiturn": lambda rng, w, h, templates_only: _editing(
        rng, w, h, int(rng.integers(2, 4)), "editing_multiturn"
    ),
    "segmentation": _map_task("segmentation", SEGMENTATION_PROMPT, segmentation_map),
    "edges": _map_task("edges", EDGES_PROMPT, edge_map),
    "detection": _detection,
    "seg_to_image": _condition("segmentation map", "seg_to_image"),
    "edge_to_image": _condition("edge map", "edge_to_image"),
    "count_qa": _count_qa,
    "color_qa": _color_qa,
    "yesno_qa": _yesno_qa,
    "captioning": _captioning,
    "frames": _frames,
    "dual_pair_seg": _dual_pair("segmentation map", "dual_pair_seg"),
    "dual_pair_edge": _dual_pair("edge map", "dual_pair_edge"),
    "dual_i2i_seg": _dual_i2i("segmentation map", "dual_i2i_seg"),
    "dual_i2i_edge": _dual_i2i("edge map", "dual_i2i_edge"),
}
assert tuple(_BUILDERS) == TASK_KINDS


def sample_task(
    kind: str, rng: np.random.Generator, width: int, height: int, *, templates_only: bool = False
) -> Task:
    """A random task of `kind` on a W×H canvas. `templates_only`: descriptions are the six benchmark templates
    and captions always name colours (benchmark items); otherwise descriptions also vary (training)."""
    if kind not in _BUILDERS:
        raise LuminaError(f"unknown task kind {kind!r}; expected one of {', '.join(TASK_KINDS)}")
    check_canvas(width, height)
    return _BUILDERS[kind](rng, width, height, templates_only)


def benchmark_tasks(seed: int, n_per_kind: int, width: int, height: int, kinds=OMNI_KINDS) -> list[Task]:
    """n tasks of each kind on a W×H canvas, benchmark style, deterministic in (seed, kind, canvas, index)."""
    tasks = []
    for kind in kinds:
        if kind not in TASK_KINDS:
            raise LuminaError(f"unknown task kind {kind!r}; expected one of {', '.join(TASK_KINDS)}")
        for i in range(n_per_kind):
            rng = np.random.default_rng([seed, TASK_KINDS.index(kind), width, height, i])
            tasks.append(sample_task(kind, rng, width, height, templates_only=True))
    return tasks


def spec_list(truth: dict) -> list[PromptSpec]:
    """The specs stored in a task's truth."""
    return [PromptSpec.from_dict(s) for s in truth["specs"]]
