"""The web UI's task presets: for each model family, every task it was trained on with an example request
(the words and an example image) that fills the exact user message of that task (`generate/tasks.py`).

The shipped shapes model gets the shapes world's phrasings (WORLD.md, `world/tasks.py`); Lumina-mGPT v1 and
2.0 get their releases' task strings with words of the kind their papers show.
"""

import re
from dataclasses import dataclass

import numpy as np

from lumina_mgpt.generate.tasks import TASKS, task_message
from lumina_mgpt.world.render import edge_map, render, segmentation_map
from lumina_mgpt.world.scene import place_objects

EXAMPLE_OBJECTS = [("square", "red"), ("circle", "blue")]  # the example scene: a red square, a blue circle


@dataclass(frozen=True)
class UIPreset:
    """`example`: the input image the preset shows ("scene", "segmentation map", "edge map") or None."""

    name: str
    task: str
    text: str = ""
    example: str | None = None
    map_name: str = "segmentation map"
    frames: int = 2

    def message(self, width: int, height: int) -> str:
        """The exact user message of this preset on a `width x height` canvas."""
        return task_message(self.task, self.text, width, height, map_name=self.map_name, frames=self.frames)

    @property
    def takes_image(self) -> bool:
        return TASKS[self.task].images > 0


_SCENE = "a red square and a blue circle"
SHAPES_PRESETS = (
    UIPreset("Text to image", "t2i", "a photo of a red square to the left of a blue circle"),
    UIPreset("Editing: recolour", "edit", "Change the colour of the red square to green.", "scene"),
    UIPreset("Editing: remove", "edit", "Remove the blue circle.", "scene"),
    UIPreset("Editing: add", "edit", "Add a yellow star.", "scene"),
    UIPreset("Segmentation", "segmentation", example="scene"),
    UIPreset("Edges", "edges", example="scene"),
    UIPreset("Detection", "detect", "the blue circle.", "scene"),
    UIPreset("Segmentation map to image", "condition", f"{_SCENE}.", "segmentation map"),
    UIPreset("Edge map to image", "condition", "a square and a circle.", "edge map"),
    UIPreset("Counting QA", "qa", "How many circles are there?", "scene"),
    UIPreset("Colour QA", "qa", "What colour is the square?", "scene"),
    UIPreset("Yes/no QA", "qa", "Is there a red square?", "scene"),
    UIPreset("Captioning", "caption", example="scene"),
    UIPreset("Frames", "frames", "a red square", frames=2),
    UIPreset("Dual panel: image + segmentation", "pair", _SCENE),
    UIPreset("Dual panel: image + edges", "pair", _SCENE, map_name="edge map"),
    UIPreset("Dual panel: segmentation → image", "i2i", _SCENE, "segmentation map"),
    UIPreset("Dual panel: edges → image", "i2i", _SCENE, "edge map", map_name="edge map"),
)
V1_PRESETS = (
    UIPreset("Text to image", "t2i", "A majestic lighthouse on a cliff at sunset, oil painting."),
    UIPreset("Editing", "edit", "Make the square green.", "scene"),
    UIPreset("Segmentation", "segmentation", example="scene"),
    UIPreset("Depth estimation", "depth", example="scene"),
    UIPreset("Surface normals", "normals", example="scene"),
    UIPreset("Human pose", "pose", example="scene"),
    UIPreset("Detection", "detect", "the blue circle", "scene"),
    UIPreset(
        "Condition to image", "condition", "A red box and a blue ball on a grey table.", "segmentation map"
    ),
    UIPreset("Question answering", "qa", "What is in this image?", "scene"),
)
V2_PRESETS = (
    V1_PRESETS[0],
    UIPreset("Image pair: image + segmentation", "pair", "A red box and a blue ball on a grey table."),
    UIPreset("Image pair: image + edges", "pair", "A red box and a blue ball.", map_name="edge map"),
    UIPreset("Image to image: segmentation → image", "i2i", "A red box and a blue ball.", "segmentation map"),
    UIPreset(
        "Image to image: edges → image", "i2i", "A red box and a blue ball.", "edge map", map_name="edge map"
    ),
)
FAMILY_PRESETS = {"ours": SHAPES_PRESETS, "v1": V1_PRESETS, "v2": V2_PRESETS}


def presets_for(family: str) -> tuple[UIPreset, ...]:
    return FAMILY_PRESETS.get(family, SHAPES_PRESETS)


def example_image(kind: str, width: int, height: int) -> np.ndarray:
    """The example scene (a red square and a blue circle), or its segmentation or edge map, uint8 [H, W, 3]."""
    scene = place_objects(np.random.default_rng(0), width, height, EXAMPLE_OBJECTS)
    return {"scene": render, "segmentation map": segmentation_map, "edge map": edge_map}[kind](scene)


def _template_pattern(template: str) -> re.Pattern:
    parts = re.split(r"\{\w+\}", template)
    return re.compile(".+?".join(map(re.escape, parts)), re.DOTALL)


# user messages of the tasks that draw from words alone (text to image, frames, dual-panel pairs)
_WORDS_ONLY = [_template_pattern(t.template) for name, t in TASKS.items() if t.images == 0 and name != "free"]


def draws_from_words(message: str) -> bool:
    """Whether `message` is one of the tasks that take no input image (so a chat sends it without one)."""
    return any(pattern.fullmatch(message.strip()) for pattern in _WORDS_ONLY)
