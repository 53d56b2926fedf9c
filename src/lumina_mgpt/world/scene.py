"""Scenes of the shapes world and their random sampling under WORLD.md's size and gap rules.

Rounding (exact integer arithmetic, m = min(W, H)): sizes are the whole numbers in
[ceil(0.22·m), floor(0.38·m)], and the gap is g = max(ceil(0.04·m), 3) pixels, so every legal size and gap
lies inside the contract's real-valued bounds. Two boxes keep the gap when they are at least g pixels apart along
x or along y (which implies a Euclidean distance ≥ g); a box keeps it from the edge when x, y ≥ g and
x + s, y + s ≤ W − g, H − g.
"""

from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

import numpy as np

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.world.palette import COLOR_NAMES, SHAPES
from lumina_mgpt.world.shapes import tight_extent

MIN_SIDE = 48  # smallest canvas side: all six shapes are told apart at every legal size from here up
MAX_OBJECTS = 4
MIN_GAP = 3


def pick(rng: np.random.Generator, options: Sequence):
    """One of `options`, uniformly."""
    return options[rng.integers(len(options))]


@dataclass(frozen=True)
class SceneObject:
    """One flat shape: its square box's top-left (x, y) and side `size`, in canvas pixels (y down)."""

    shape: str
    color: str
    x: int
    y: int
    size: int

    @property
    def box(self) -> tuple[int, int, int, int]:
        """The tight box (x0, y0, x1, y1), x1/y1 exclusive, of the drawn pixels on the canvas."""
        x0, y0, x1, y1 = tight_extent(self.shape, self.size)
        return self.x + x0, self.y + y0, self.x + x1, self.y + y1

    @property
    def center(self) -> tuple[float, float]:
        """Centre of the tight box (the detector's position of the object)."""
        x0, y0, x1, y1 = self.box
        return (x0 + x1) / 2, (y0 + y1) / 2

    def moved(self, dx: int, dy: int = 0) -> "SceneObject":
        return replace(self, x=self.x + dx, y=self.y + dy)


@dataclass(frozen=True)
class Scene:
    """A canvas of `width`×`height` pixels with 1–4 objects on the flat grey background."""

    width: int
    height: int
    objects: tuple[SceneObject, ...]

    def to_dict(self) -> dict:
        return {"width": self.width, "height": self.height, "objects": [vars(o).copy() for o in self.objects]}

    @classmethod
    def from_dict(cls, data: dict) -> "Scene":
        return cls(data["width"], data["height"], tuple(SceneObject(**o) for o in data["objects"]))

    def with_objects(self, objects: Sequence[SceneObject]) -> "Scene":
        return replace(self, objects=tuple(objects))


def check_canvas(width: int, height: int) -> None:
    """Raise LuminaError unless W and H are multiples of 8 and at least MIN_SIDE."""
    for name, value in (("width", width), ("height", height)):
        if not isinstance(value, int | np.integer) or value % 8 or value < MIN_SIDE:
            raise LuminaError(
                f"canvas {name} must be a multiple of 8 pixels and at least {MIN_SIDE}, got {value}"
            )


def size_range(width: int, height: int) -> tuple[int, int]:
    """Smallest and largest legal object side: ceil(0.22·m) and floor(0.38·m), m = min(W, H)."""
    m = min(width, height)
    return -(-22 * m // 100), 38 * m // 100


def gap(width: int, height: int) -> int:
    """Smallest gap in pixels between two boxes and between a box and the edge: ceil(0.04·m), and at least
    3 so that two objects' edge-map outlines (dilated 3×3) never touch."""
    return max(-(-4 * min(width, height) // 100), MIN_GAP)


def _apart(a: SceneObject, b: SceneObject, g: int) -> bool:
    return (
        b.x - (a.x + a.size) >= g
        or a.x - (b.x + b.size) >= g
        or b.y - (a.y + a.size) >= g
        or a.y - (b.y + b.size) >= g
    )


def scene_problems(scene: Scene) -> list[str]:
    """Every way the scene breaks WORLD.md's rules (empty when it is legal)."""
    w, h = scene.width, scene.height
    lo, hi = size_range(w, h)
    g = gap(w, h)
    problems = []
    if not 1 <= len(scene.objects) <= MAX_OBJECTS:
        problems.append(f"{len(scene.objects)} objects (1 to {MAX_OBJECTS} allowed)")
    for k, o in enumerate(scene.objects):
        if o.shape not in SHAPES or o.color not in COLOR_NAMES:
            problems.append(f"object {k} is an unknown {o.color} {o.shape}")
        if not lo <= o.size <= hi:
            problems.append(f"object {k} has side {o.size} outside [{lo}, {hi}]")
        if o.x < g or o.y < g or o.x + o.size > w - g or o.y + o.size > h - g:
            problems.append(f"object {k} is closer than {g} px to the edge")
        problems += [
            f"objects {j} and {k} are closer than {g} px"
            for j in range(k)
            if not _apart(scene.objects[j], o, g)
        ]
    return problems


def _free_positions(
    width: int, height: int, size: int, placed: Sequence[SceneObject], g: int, right_room: int
) -> np.ndarray:
    """bool[ny, nx] over top-left corners (g + j, g + i) where a box of `size` keeps every gap."""
    nx, ny = width - 2 * g - size - right_room + 1, height - 2 * g - size + 1
    if nx <= 0 or ny <= 0:
        return np.zeros((0, 0), dtype=bool)
    free = np.ones((ny, nx), dtype=bool)
    for o in placed:  # corners whose box comes within g of `o` along both axes
        x_lo, x_hi = o.x - size - g + 1 - g, o.x + o.size + g - 1 - g
        y_lo, y_hi = o.y - size - g + 1 - g, o.y + o.size + g - 1 - g
        free[max(y_lo, 0) : max(y_hi + 1, 0), max(x_lo, 0) : max(x_hi + 1, 0)] = False
    return free


def place_objects(
    rng: np.random.Generator,
    width: int,
    height: int,
    items: Sequence[tuple[str, str]],
    *,
    accept: Callable[[Scene], bool] | None = None,
    right_room: int = 0,
    max_tries: int = 500,
) -> Scene:
    """A legal scene holding exactly `items` ((shape, colour) pairs, in that order) at random sizes and places.

    Each object's side is uniform over the legal sizes and its corner uniform over the free corners given
    those already placed; a draw that leaves no room, or that `accept` rejects, is redrawn whole. Objects
    keep `right_room` pixels free to their right beyond the edge gap (room to move, for frames)."""
    check_canvas(width, height)
    if not 1 <= len(items) <= MAX_OBJECTS:
        raise LuminaError(f"a scene holds 1 to {MAX_OBJECTS} objects, asked for {len(items)}")
    for shape, color in items:
        if shape not in SHAPES or color not in COLOR_NAMES:
            raise LuminaError(
                f"unknown object {color!r} {shape!r}; shapes: {', '.join(SHAPES)}; "
                f"colours: {', '.join(COLOR_NAMES)}"
            )
    for _ in range(max_tries):
        placed: list[SceneObject] = []
        for shape, color in items:
            new = _place_one(rng, width, height, shape, color, placed, right_room)
            if new is None:
                break
            placed.append(new)
        else:
            scene = Scene(width, height, tuple(placed))
            if accept is None or accept(scene):
                return scene
    raise LuminaError(
        f"could not place {len(items)} objects on a {width}x{height} canvas in {max_tries} tries"
    )


def _place_one(
    rng: np.random.Generator,
    width: int,
    height: int,
    shape: str,
    color: str,
    placed: Sequence[SceneObject],
    right_room: int = 0,
) -> SceneObject | None:
    """One object of a uniform legal size at a uniform free corner; None when that size finds no room."""
    lo, hi = size_range(width, height)
    g = gap(width, height)
    size = int(rng.integers(lo, hi + 1))
    free = _free_positions(width, height, size, placed, g, right_room)
    corners = np.flatnonzero(free)
    if corners.size == 0:
        return None
    j, i = divmod(int(corners[rng.integers(corners.size)]), free.shape[1])
    return SceneObject(shape, color, g + i, g + j, size)


def add_object(
    rng: np.random.Generator, scene: Scene, shape: str, color: str, tries: int = 20
) -> Scene | None:
    """The scene with one more object placed legally among the others (last in `objects`), or None when
    the scene is full or `tries` random sizes find no room."""
    if len(scene.objects) >= MAX_OBJECTS:
        return None
    for _ in range(tries):
        new = _place_one(rng, scene.width, scene.height, shape, color, scene.objects)
        if new is not None:
            return scene.with_objects([*scene.objects, new])
    return None


def sample_scene(
    rng: np.random.Generator,
    width: int,
    height: int,
    n_objects: int | None = None,
    shapes: Sequence[str] | None = None,
    colors: Sequence[str] | None = None,
    *,
    accept: Callable[[Scene], bool] | None = None,
    right_room: int = 0,
) -> Scene:
    """A random legal scene: `n_objects` (default uniform in 1–4) objects, each of a shape and colour drawn
    uniformly from `shapes` and `colors` (default: all)."""
    n = int(rng.integers(1, MAX_OBJECTS + 1)) if n_objects is None else n_objects
    shapes, colors = shapes or SHAPES, colors or COLOR_NAMES
    items = [(pick(rng, shapes), pick(rng, colors)) for _ in range(n)]
    return place_objects(rng, width, height, items, accept=accept, right_room=right_room)
