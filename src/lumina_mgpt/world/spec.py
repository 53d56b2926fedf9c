"""What a description asks of an image (`PromptSpec`), when a set of objects satisfies it, and scenes built
to satisfy one.

The six benchmark categories follow WORLD.md §"Scoring text-to-image". Training captions use two more
kinds of claim: `counting` with a colour ("two red circles"), and `scene`, an exact list of every object
(the detected (shape, colour) multiset must equal it; with no colours, the shape multiset).
"""

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import permutations
from typing import Protocol

import numpy as np

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.world.detect import RELATIONS, relation_holds
from lumina_mgpt.world.palette import COLOR_NAMES, SHAPES
from lumina_mgpt.world.scene import Scene, pick, place_objects

CATEGORIES = ("single_object", "two_object", "counting", "colors", "position", "color_attr")
KINDS = (*CATEGORIES, "scene")
CLEAR_RELATION_FRACTION = 0.1  # drawn scenes keep relations clear of the 0.05 boundary: see `clearly_holds`


class Located(Protocol):
    """A detected or a drawn object: both have these."""

    shape: str
    color: str

    @property
    def center(self) -> tuple[float, float]: ...


@dataclass(frozen=True)
class PromptSpec:
    """A claim about an image: `category`, the objects it names (shape, colour or None for any), the exact
    count (counting) and the relation between the first and second object (position)."""

    category: str
    shapes: tuple[str, ...]
    colors: tuple[str | None, ...]
    count: int | None = None
    relation: str | None = None

    def __post_init__(self) -> None:
        if self.category not in KINDS:
            raise LuminaError(f"unknown prompt category {self.category!r}")
        if len(self.shapes) != len(self.colors) or not self.shapes:
            raise LuminaError(f"a {self.category} spec needs one colour slot per shape")
        if any(s not in SHAPES for s in self.shapes) or any(
            c not in (None, *COLOR_NAMES) for c in self.colors
        ):
            raise LuminaError(f"unknown shape or colour in {self.shapes} / {self.colors}")

    @property
    def items(self) -> list[tuple[str, str | None]]:
        return list(zip(self.shapes, self.colors, strict=True))

    def to_dict(self) -> dict:
        return {
            "category": self.category,
            "shapes": list(self.shapes),
            "colors": list(self.colors),
            "count": self.count,
            "relation": self.relation,
        }

    @classmethod
    def from_dict(cls, data: dict) -> "PromptSpec":
        return cls(
            data["category"],
            tuple(data["shapes"]),
            tuple(data["colors"]),
            data.get("count"),
            data.get("relation"),
        )


def _fits(o: Located, shape: str, color: str | None) -> bool:
    return o.shape == shape and (color is None or o.color == color)


def spec_holds(spec: PromptSpec, objects: Sequence[Located], width: int, height: int) -> bool:
    """Whether objects (detections or a scene's objects) on a W×H canvas satisfy the spec."""
    items = spec.items
    if spec.category == "counting":
        ((shape, color),) = items
        return sum(_fits(o, shape, color) for o in objects) == spec.count
    if spec.category == "scene":
        if all(c is None for c in spec.colors):
            return Counter(o.shape for o in objects) == Counter(spec.shapes)
        return Counter((o.shape, o.color) for o in objects) == Counter(items)
    for chosen in permutations(objects, len(items)):  # distinct objects, one per named item
        if not all(_fits(o, s, c) for o, (s, c) in zip(chosen, items, strict=True)):
            continue
        if spec.category != "position" or relation_holds(
            chosen[0].center, chosen[1].center, spec.relation, width, height
        ):
            return True
    return False


def clearly_holds(
    a: tuple[float, float], b: tuple[float, float], relation: str, width: int, height: int
) -> bool:
    """A relation with margin, for drawn scenes: the offset along the relation's axis exceeds 0.1·max(W, H)
    and is at least twice the other axis's offset, so it holds under any reading of the 0.05 rule."""
    dx, dy = b[0] - a[0], b[1] - a[1]
    axes = {"to the left of": (dx, dy), "to the right of": (-dx, dy), "above": (dy, dx), "below": (-dy, dx)}
    if relation not in axes:
        raise LuminaError(f"unknown relation {relation!r}; expected one of {', '.join(RELATIONS)}")
    main, other = axes[relation]
    return main > CLEAR_RELATION_FRACTION * max(width, height) and main >= 2 * abs(other)


def scene_for_spec(
    spec: PromptSpec, rng: np.random.Generator, width: int, height: int, *, right_room: int = 0
) -> Scene:
    """A minimal random scene satisfying the spec: just the objects it names (`count` of them for counting),
    colours drawn uniformly where the spec leaves them open; for position, the relation holds clearly."""
    if spec.category == "scene":
        raise LuminaError("scene specs describe existing scenes; draw them with sample_scene")
    repeats = spec.count if spec.category == "counting" else 1
    items = [(shape, color or pick(rng, COLOR_NAMES)) for shape, color in spec.items for _ in range(repeats)]

    def accept(scene: Scene) -> bool:
        a, b = scene.objects[0].center, scene.objects[1].center
        return clearly_holds(a, b, spec.relation, width, height)

    return place_objects(
        rng,
        width,
        height,
        items,
        accept=accept if spec.relation else None,
        right_room=right_room,
        max_tries=5000,
    )
