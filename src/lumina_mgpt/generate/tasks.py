"""The user-turn wording of every task, as data: the releases' task strings and the shapes world's
(WORLD.md), with `<|image|>` where an input image goes. Used by `lumina-mgpt chat --task ...`."""

from dataclasses import dataclass

from lumina_mgpt.errors import LuminaError


@dataclass(frozen=True)
class Task:
    """`template` fields: {text} the user's words, {width}/{height} the canvas, {map} a map name, {n} frames.
    `images`: input images the user turn takes; `prefix`: the input image is instead the given upper half
    of the canvas the model completes (v2 image-to-image)."""

    template: str
    images: int = 0
    prefix: bool = False
    needs_text: bool = True


TASKS = {
    "free": Task("{text}", images=-1),  # the user's own message; any number of <|image|> placeholders
    "t2i": Task("Generate an image of {width}x{height} according to the following prompt:\n{text}"),
    "edit": Task("{text} <|image|>", images=1),
    "segmentation": Task("Semantic segmentation. <|image|>", images=1, needs_text=False),
    "edges": Task("Edge detection. <|image|>", images=1, needs_text=False),
    "depth": Task("Depth estimation. <|image|>", images=1, needs_text=False),
    "normals": Task("Surface normal estimation. <|image|>", images=1, needs_text=False),
    "pose": Task("Human pose estimation. <|image|>", images=1, needs_text=False),
    "detect": Task("Detect: {text} <|image|>", images=1),
    "condition": Task(
        "Generate an image according to the provided image, and according to the following "
        "caption:\n{text} <|image|>",
        images=1,
    ),
    "caption": Task("Describe the image. <|image|>", images=1, needs_text=False),
    "qa": Task("{text} <|image|>", images=1),
    "frames": Task("Generate {n} frames of {width}x{height} in which everything moves to the right:\n{text}"),
    "pair": Task(
        "Generate a dual-panel image of {width}x{height} where the <lower half> displays a <{map}>, "
        "while the <upper half> retains the original image for direct visual comparison:\n{text}"
    ),
    "i2i": Task(
        "Generate a dual-panel image of {width}x{height} where the <upper half> displays a <{map}>, "
        "while the <lower half> retains the original image for direct visual comparison:\n{text}",
        images=1,
        prefix=True,
    ),
}


# the README's and the shapes world's task names (world/tasks.py TASK_KINDS) -> (task, its map name)
ALIASES = {
    "editing": ("edit", None),
    "editing_multiturn": ("edit", None),
    "detection": ("detect", None),
    "captioning": ("caption", None),
    "seg_to_image": ("condition", None),
    "edge_to_image": ("condition", None),
    "count_qa": ("qa", None),
    "color_qa": ("qa", None),
    "yesno_qa": ("qa", None),
    "dual_panel": ("pair", None),
    "dual_panels": ("pair", None),
    "condition_to_image": ("condition", None),
    "dual_pair": ("pair", None),
    "dual_pair_seg": ("pair", "segmentation map"),
    "dual_pair_edge": ("pair", "edge map"),
    "dual_i2i": ("i2i", None),
    "dual_i2i_seg": ("i2i", "segmentation map"),
    "dual_i2i_edge": ("i2i", "edge map"),
}
TASK_NAMES = (*TASKS, *ALIASES)
MAX_FRAMES = 16


def resolve_task(name: str) -> tuple[str, str | None]:
    """(task, map name or None) of a task name in either spelling ("editing" or "edit", "dual_i2i_edge"...);
    raises LuminaError for an unknown name."""
    key = "_".join(name.lower().replace("→", "to").replace("-", " ").split())
    if key in TASKS:
        return key, None
    if key in ALIASES:
        return ALIASES[key]
    raise LuminaError(f"unknown task {name!r}; choose one of: {', '.join(TASK_NAMES)}")


def task_message(
    name: str, text: str, width: int, height: int, map_name: str = "segmentation map", frames: int = 2
) -> str:
    """The user message of task `name` (either spelling; an alias's map wins); raises LuminaError for an
    unknown task or missing words."""
    name, alias_map = resolve_task(name)
    map_name = alias_map or map_name
    task = TASKS[name]
    if task.needs_text and not text.strip():
        raise LuminaError(f"task {name!r} needs a text (instruction, caption, question or object)")
    if name == "frames" and not 2 <= frames <= MAX_FRAMES:
        raise LuminaError(f"the frames task draws 2..{MAX_FRAMES} frames, got {frames}")
    return task.template.format(text=text, width=width, height=height, map=map_name, n=frames)
