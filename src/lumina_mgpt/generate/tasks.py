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


MAX_FRAMES = 16


def task_message(
    name: str, text: str, width: int, height: int, map_name: str = "segmentation map", frames: int = 2
) -> str:
    """The user message of task `name`; raises LuminaError for an unknown task or missing words."""
    task = TASKS.get(name)
    if task is None:
        raise LuminaError(f"unknown task {name!r}; choose one of: {', '.join(TASKS)}")
    if task.needs_text and not text.strip():
        raise LuminaError(f"task {name!r} needs a text (instruction, caption, question or object)")
    if name == "frames" and not 2 <= frames <= MAX_FRAMES:
        raise LuminaError(f"the frames task draws 2..{MAX_FRAMES} frames, got {frames}")
    return task.template.format(text=text, width=width, height=height, map=map_name, n=frames)
