"""A perfect model of the shapes world, working from the prompts and images alone (no ground truth).

`oracle_generate` and `oracle_chat` have the signatures `run_benchmark` expects of a model, and reach the
ceiling of the benchmark: the benchmark's own check that every item is answerable from what the model sees.
They read only the exact benchmark phrasings, perceive images with the detector, and paint their answers.
"""

import re

import numpy as np
from PIL import Image

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.unirep import parse_t2i_prompt
from lumina_mgpt.world.captions import parse_description, scene_caption
from lumina_mgpt.world.detect import (
    Detection,
    as_array,
    components,
    detect,
    label_components,
    min_component_area,
    nearest_class,
)
from lumina_mgpt.world.palette import (
    BACKGROUND,
    COLOR_NAMES,
    COLORS,
    COUNT_WORDS,
    EDGE_COLOR,
    SEG_CLASSES,
    SHAPES,
    plural,
)
from lumina_mgpt.world.render import dilate, edge_mask, paint_mask, render
from lumina_mgpt.world.scene import Scene, SceneObject, add_object, pick
from lumina_mgpt.world.score import class_map, detection_masks
from lumina_mgpt.world.shapes import shape_mask
from lumina_mgpt.world.spec import scene_for_spec
from lumina_mgpt.world.tasks import IMAGE, MAPS, frame_shift, map_image

_COLOR, _SHAPE = f"({'|'.join(COLOR_NAMES)})", f"({'|'.join(SHAPES)})"
_PLURAL = f"({'|'.join(plural(s) for s in SHAPES)})"
_IMG = re.escape(IMAGE)
_PATTERNS = {
    "recolor": rf"Change the colour of the {_COLOR} {_SHAPE} to {_COLOR}\.(?: {_IMG})?",
    "remove": rf"Remove the {_COLOR} {_SHAPE}\.(?: {_IMG})?",
    "add": rf"Add an? {_COLOR} {_SHAPE}\.(?: {_IMG})?",
    "segmentation": rf"Semantic segmentation\. {_IMG}",
    "edges": rf"Edge detection\. {_IMG}",
    "detection": rf"Detect: the {_COLOR} {_SHAPE}\. {_IMG}",
    "condition": rf"Generate an image according to the provided image, and according to the following caption:\n(.*) {_IMG}",
    "count_qa": rf"How many {_PLURAL} are there\? {_IMG}",
    "color_qa": rf"What colour is the {_SHAPE}\? {_IMG}",
    "yesno_qa": rf"Is there an? {_COLOR} {_SHAPE}\? {_IMG}",
    "captioning": rf"Describe the image\. {_IMG}",
    "frames": r"Generate (\d+) frames of (\d+)x(\d+) in which everything moves to the right:\n(.*)",
    "dual": r"Generate a dual-panel image of (\d+)x(\d+) where the <(upper|lower) half> displays a <(segmentation map|"
    r"edge map)>, while the <(?:upper|lower) half> retains the original image for direct visual comparison:\n(.*)",
}
_COMPILED = {name: re.compile(p, re.DOTALL) for name, p in _PATTERNS.items()}
_CAPTION_OBJECT = re.compile(rf"\ban? (?:{_COLOR} )?{_SHAPE}")


def oracle_generate(prompts: list[str], width: int, height: int, num_images_per_prompt: int, seed: int):
    """A text-to-image model that draws a fresh scene satisfying each benchmark prompt."""
    out = []
    for i, prompt in enumerate(prompts):
        parsed = parse_t2i_prompt(prompt)
        if parsed is None:
            raise LuminaError(f"the oracle reads only text-to-image prompts, got {prompt!r}")
        spec = parse_description(parsed.description)
        images = []
        for k in range(num_images_per_prompt):
            scene = scene_for_spec(spec, np.random.default_rng([seed, i, k]), width, height)
            images.append(Image.fromarray(render(scene)))
        out.append(images)
    return out


def _find(detections: list[Detection], shape: str, color: str | None = None) -> Detection:
    for d in detections:
        if d.shape == shape and color in (None, d.color):
            return d
    raise LuminaError(f"the oracle sees no {f'{color} {shape}' if color else shape}")


def _paint(image: np.ndarray, d: Detection, color: tuple[int, int, int]) -> np.ndarray:
    out = image.copy()
    x0, y0, x1, y1 = d.box
    out[y0:y1, x0:x1][d.mask] = color
    return out


def _add(image: np.ndarray, detections: list[Detection], shape: str, color: str, rng) -> np.ndarray:
    """Paint a new object where it keeps the gap from squares covering every detected object."""
    height, width = image.shape[:2]
    covers = [
        SceneObject("square", d.color, d.box[0], d.box[1], max(d.box[2] - d.box[0], d.box[3] - d.box[1]))
        for d in detections
    ]
    scene = add_object(rng, Scene(width, height, tuple(covers)), shape, color, tries=200)
    if scene is None:
        raise LuminaError("the oracle finds no room to add an object")
    new = scene.objects[-1]
    out = image.copy()
    out[new.y : new.y + new.size, new.x : new.x + new.size][shape_mask(shape, new.size)] = COLORS[color]
    return out


def _map_objects(
    map_image_: np.ndarray, map_name: str
) -> list[tuple[str | None, tuple[int, int, int, int], np.ndarray]]:
    """(shape or None, tight box, mask) of the objects a map shows: class-colour regions of a segmentation
    map; for an edge map, each white outline filled and shrunk back by the 3×3 dilation."""
    height, width = map_image_.shape[:2]
    min_area = min_component_area(width, height)
    if map_name == "segmentation map":
        return [
            (SHAPES[k - 1], box, mask)
            for k, box, mask in components(nearest_class(map_image_, SEG_CLASSES), min_area)
        ]
    white = (2 * map_image_.astype(np.int64).sum(-1) > 3 * 255).astype(np.int64)
    objects = []
    for _, (x0, y0, _, _), outline in components(white, min_area):
        padded = np.pad(outline, 1)
        labels = label_components((~padded).astype(np.int64))
        filled = labels != labels[0, 0]  # everything the outline encloses, and the outline
        inner = ~dilate(~filled)[1:-1, 1:-1]
        rows, cols = np.flatnonzero(inner.any(1)), np.flatnonzero(inner.any(0))
        box = (x0 + int(cols[0]), y0 + int(rows[0]), x0 + int(cols[-1]) + 1, y0 + int(rows[-1]) + 1)
        objects.append((None, box, inner[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1]))
    return objects


def _draw_from_map(map_image_: np.ndarray, map_name: str, caption: str, rng) -> np.ndarray:
    """Paint each object of the map in the colour the caption gives it (objects in captioning order)."""
    objects = sorted(
        _map_objects(map_image_, map_name), key=lambda o: ((o[1][0] + o[1][2]) / 2, (o[1][1] + o[1][3]) / 2)
    )
    named = [color or None for color, _ in _CAPTION_OBJECT.findall(caption)]
    if len(named) != len(objects):
        raise LuminaError(f"the caption names {len(named)} objects but the map shows {len(objects)}")
    image = np.empty((*map_image_.shape[:2], 3), dtype=np.uint8)
    image[:] = BACKGROUND
    for (_, (x0, y0, x1, y1), mask), color in zip(objects, named, strict=True):
        image[y0:y1, x0:x1][mask] = COLORS[color or pick(rng, COLOR_NAMES)]
    return image


def _latest_image(messages: list[dict]) -> np.ndarray:
    for message in reversed(messages):
        if message.get("images"):
            return as_array(message["images"][-1])
    raise LuminaError("the conversation holds no image")


def oracle_chat(conversations: list[list[dict]], seeds: list[int]) -> list[dict]:
    """A chat model answering every omni task of the benchmark: one {"text", "images"} reply per conversation."""
    return [oracle_reply(messages, seed) for messages, seed in zip(conversations, seeds, strict=True)]


def oracle_reply(messages: list[dict], seed: int) -> dict:
    """The oracle's reply to one conversation: {"text": str, "images": [PIL images]}."""
    rng = np.random.default_rng(seed)
    prefix = messages[-1] if messages[-1]["role"] == "assistant" else None
    text = messages[-2 if prefix else -1]["content"]
    name, match = next(((n, m) for n, p in _COMPILED.items() if (m := p.fullmatch(text))), (None, None))
    if match is None:
        raise LuminaError(f"the oracle does not understand {text!r}")
    groups = match.groups()

    if name == "frames":
        n, width, height = (int(v) for v in groups[:3])
        shift = frame_shift(width)
        scene = scene_for_spec(parse_description(groups[3]), rng, width, height, right_room=(n - 1) * shift)
        frames = [render(scene.with_objects([o.moved(k * shift) for o in scene.objects])) for k in range(n)]
        return {"text": "", "images": [Image.fromarray(f) for f in frames]}
    if name == "dual":
        width, height, shown, map_name, description = groups
        width, height = int(width), int(height)
        if shown == "lower":  # image pair: draw the upper half, derive its map below
            scene = scene_for_spec(parse_description(description), rng, width, height // 2)
            canvas = np.concatenate([render(scene), map_image(scene, map_name)])
        else:  # i2i: continue the given upper half (the map) with the image it shows
            upper = as_array(prefix["images"][0])
            canvas = np.concatenate([upper, _draw_from_map(upper, map_name, description, rng)])
        return {"text": "", "images": [Image.fromarray(canvas)]}

    image = _latest_image(messages)
    detections = detect(image)
    if name == "recolor":
        out = _paint(image, _find(detections, groups[1], groups[0]), COLORS[groups[2]])
    elif name == "remove":
        out = _paint(image, _find(detections, groups[1], groups[0]), BACKGROUND)
    elif name == "add":
        out = _add(image, detections, groups[1], groups[0], rng)
    elif name == "segmentation":
        out = SEG_CLASSES.astype(np.uint8)[
            class_map(detection_masks(detections), image.shape[1], image.shape[0])
        ]
    elif name == "edges":
        masks = [(x, y, m) for _, x, y, m in detection_masks(detections)]
        out = paint_mask(edge_mask(image.shape[1], image.shape[0], masks), EDGE_COLOR, (0, 0, 0))
    elif name == "condition":
        map_name = MAPS[_is_edge_map(image)]
        out = _draw_from_map(image, map_name, groups[0], rng)
    else:
        return {"text": _answer(name, groups, detections), "images": []}
    return {"text": "", "images": [Image.fromarray(out)]}


def _is_edge_map(image: np.ndarray) -> bool:
    """An edge map holds only black and white pixels."""
    return bool(np.isin(image.reshape(-1, 3).sum(1), (0, 3 * 255)).all())


def _answer(name: str, groups: tuple, detections: list[Detection]) -> str:
    if name == "detection":
        return ",".join(str(v) for v in _find(detections, groups[1], groups[0]).box)
    if name == "count_qa":
        shape = next(s for s in SHAPES if plural(s) == groups[0])
        return COUNT_WORDS[sum(d.shape == shape for d in detections)]
    if name == "color_qa":
        return _find(detections, groups[0]).color
    if name == "yesno_qa":
        return "yes" if any((d.color, d.shape) == groups for d in detections) else "no"
    return scene_caption(detections)
