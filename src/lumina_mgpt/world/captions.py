"""Words for scenes: the six benchmark templates (and their inverse), benchmark prompt sets, the captioning
answer, and varied training captions that are true for a scene.

Articles: `an` before a word starting with a vowel letter (only `orange` among our words), else `a`.
Plurals add `s`, except `crosses`.
"""

import re
from collections import Counter
from itertools import permutations, product

import numpy as np

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.world.detect import RELATIONS
from lumina_mgpt.world.palette import COLOR_NAMES, COUNT_WORDS, SHAPES, join_phrases, noun_phrase, plural
from lumina_mgpt.world.scene import Scene, pick
from lumina_mgpt.world.spec import CATEGORIES, Located, PromptSpec, clearly_holds

BENCHMARK_COUNTS = (2, 3, 4)


def describe(spec: PromptSpec) -> str:
    """The exact benchmark description of a spec of one of the six categories."""
    (s1, c1), *rest = spec.items
    if spec.category in ("single_object", "colors"):
        return f"a photo of {noun_phrase(s1, c1)}"
    if spec.category == "counting":
        return f"a photo of {COUNT_WORDS[spec.count]} {plural(s1)}"
    ((s2, c2),) = rest
    if spec.category in ("two_object", "color_attr"):
        return f"a photo of {noun_phrase(s1, c1)} and {noun_phrase(s2, c2)}"
    if spec.category == "position":
        return f"a photo of {noun_phrase(s1)} {spec.relation} {noun_phrase(s2)}"
    raise LuminaError(f"{spec.category} specs have no benchmark template")


def _alternatives(words) -> str:
    return "(" + "|".join(sorted(words, key=len, reverse=True)) + ")"


_SHAPE, _COLOR = _alternatives(SHAPES), _alternatives(COLOR_NAMES)
_PLURAL, _RELATION = _alternatives(plural(s) for s in SHAPES), _alternatives(RELATIONS)
_COUNT = _alternatives(COUNT_WORDS[n] for n in BENCHMARK_COUNTS)
_PATTERNS = [  # (category, regex): each group in order is shape/colour/count/relation as named below
    ("counting", rf"a photo of {_COUNT} {_PLURAL}", ("count", "plural")),
    ("position", rf"a photo of an? {_SHAPE} {_RELATION} an? {_SHAPE}", ("shape", "relation", "shape")),
    (
        "color_attr",
        rf"a photo of an? {_COLOR} {_SHAPE} and an? {_COLOR} {_SHAPE}",
        ("color", "shape", "color", "shape"),
    ),
    ("two_object", rf"a photo of an? {_SHAPE} and an? {_SHAPE}", ("shape", "shape")),
    ("colors", rf"a photo of an? {_COLOR} {_SHAPE}", ("color", "shape")),
    ("single_object", rf"a photo of an? {_SHAPE}", ("shape",)),
]
_COMPILED = [(category, re.compile(pattern), roles) for category, pattern, roles in _PATTERNS]


def parse_description(text: str) -> PromptSpec:
    """The spec of an exact benchmark description (inverse of `describe`); LuminaError for anything else."""
    for category, pattern, roles in _COMPILED:
        match = pattern.fullmatch(text)
        if match is None:
            continue
        shapes, colors, count, relation = [], [], None, None
        for role, value in zip(roles, match.groups(), strict=True):
            if role == "shape":
                shapes.append(value)
            elif role == "color":
                colors.append(value)
            elif role == "plural":
                shapes.append(next(s for s in SHAPES if plural(s) == value))
            elif role == "count":
                count = COUNT_WORDS.index(value)
            else:
                relation = value
        spec = PromptSpec(
            category, tuple(shapes), tuple(colors) if colors else (None,) * len(shapes), count, relation
        )
        if describe(spec) == text and _legal(spec):
            return spec
    raise LuminaError(f"not a benchmark description: {text!r}")


def _legal(spec: PromptSpec) -> bool:
    """The template's own constraints: two named shapes differ, and so do color_attr's colours."""
    if len(spec.shapes) == 2 and spec.shapes[0] == spec.shapes[1]:
        return False
    return not (spec.category == "color_attr" and spec.colors[0] == spec.colors[1])


def all_specs(category: str) -> list[PromptSpec]:
    """Every benchmark spec of a category, in a fixed order."""
    pairs = list(permutations(SHAPES, 2))
    if category == "single_object":
        return [PromptSpec(category, (s,), (None,)) for s in SHAPES]
    if category == "two_object":
        return [PromptSpec(category, pair, (None, None)) for pair in pairs]
    if category == "counting":
        return [PromptSpec(category, (s,), (None,), n) for n, s in product(BENCHMARK_COUNTS, SHAPES)]
    if category == "colors":
        return [PromptSpec(category, (s,), (c,)) for c, s in product(COLOR_NAMES, SHAPES)]
    if category == "position":
        return [PromptSpec(category, pair, (None, None), relation=r) for pair, r in product(pairs, RELATIONS)]
    if category == "color_attr":
        return [
            PromptSpec(category, pair, colors)
            for pair, colors in product(pairs, permutations(COLOR_NAMES, 2))
        ]
    raise LuminaError(f"unknown benchmark category {category!r}; expected one of {', '.join(CATEGORIES)}")


def random_spec(rng: np.random.Generator, category: str | None = None) -> PromptSpec:
    """A benchmark spec drawn uniformly from a category (itself uniform when not given)."""
    category = category or pick(rng, CATEGORIES)
    specs = all_specs(category)
    return pick(rng, specs)


def benchmark_prompts(seed: int, n_per_category: int) -> list[tuple[str, str, PromptSpec]]:
    """(category, description, spec) for each category in CATEGORIES order, n of each, deterministic in seed.

    A category's prompts are its specs in a random order drawn from (seed, category): distinct until all are
    used, then a fresh order again."""
    prompts = []
    for index, category in enumerate(CATEGORIES):
        rng = np.random.default_rng([seed, index])
        specs = all_specs(category)
        chosen: list[PromptSpec] = []
        while len(chosen) < n_per_category:
            chosen += [specs[k] for k in rng.permutation(len(specs))]
        prompts += [(category, describe(spec), spec) for spec in chosen[:n_per_category]]
    return prompts


def order_objects(objects: list[Located]) -> list[Located]:
    """Objects by centre x, then centre y (the captioning order)."""
    return sorted(objects, key=lambda o: (o.center[0], o.center[1]))


def scene_caption(objects: list[Located]) -> str:
    """The captioning answer: `a {color} {shape}` by centre x (then y), `, ` / ` and ` joined, ending `.`."""
    return join_phrases([noun_phrase(o.shape, o.color) for o in order_objects(objects)]) + "."


# ---- varied training captions -------------------------------------------------------------------------

_LEADS = (
    "",
    "a photo of ",
    "a picture of ",
    "an image of ",
    "a drawing of ",
    "a rendering of ",
    "a simple image showing ",
    "flat shapes on a grey background: ",
)
_SHAPE_WORDS = {
    "circle": ("circle", "disc"),
    "star": ("star", "five-pointed star"),
    "cross": ("cross", "plus sign"),
}
_RELATION_WORDS = {
    "to the left of": ("to the left of", "left of", "on the left of"),
    "to the right of": ("to the right of", "right of", "on the right of"),
    "above": ("above", "over"),
    "below": ("below", "under", "beneath"),
}
_SYNONYM_RATE = 0.2


def _shape_word(rng: np.random.Generator, shape: str) -> str:
    synonyms = _SHAPE_WORDS.get(shape, (shape,))[1:]
    return pick(rng, synonyms) if synonyms and rng.random() < _SYNONYM_RATE else shape


def _counted(rng: np.random.Generator, n: int, shape: str, color: str | None) -> str:
    word = _shape_word(rng, shape)
    if n == 1:
        return noun_phrase(word, color)
    return " ".join(filter(None, (COUNT_WORDS[n], color, plural(word))))


def _template_spec(rng: np.random.Generator, scene: Scene) -> PromptSpec | None:
    """A random benchmark-category spec that the scene satisfies (None when the category drawn cannot be)."""
    objects, category = scene.objects, pick(rng, CATEGORIES)
    shape_counts = Counter(o.shape for o in objects)
    one = pick(rng, objects)
    pairs = [(a, b) for a, b in permutations(objects, 2) if a.shape != b.shape]
    if category == "single_object":
        return PromptSpec(category, (one.shape,), (None,))
    if category == "colors":
        return PromptSpec(category, (one.shape,), (one.color,))
    if category == "counting":
        several = [s for s, n in shape_counts.items() if n >= 2]
        if not several:
            return None
        shape = pick(rng, several)
        return PromptSpec(category, (shape,), (None,), shape_counts[shape])
    if category == "two_object" and pairs:
        a, b = pick(rng, pairs)
        return PromptSpec(category, (a.shape, b.shape), (None, None))
    if category == "color_attr":
        pairs = [(a, b) for a, b in pairs if a.color != b.color]
        if pairs:
            a, b = pick(rng, pairs)
            return PromptSpec(category, (a.shape, b.shape), (a.color, b.color))
    if category == "position":
        clear = [
            (a, b, r)
            for a, b in pairs
            for r in RELATIONS
            if clearly_holds(a.center, b.center, r, scene.width, scene.height)
        ]
        if clear:
            a, b, r = pick(rng, clear)
            return PromptSpec(category, (a.shape, b.shape), (None, None), relation=r)
    return None


def describe_scene(rng: np.random.Generator, scene: Scene) -> tuple[str, list[PromptSpec]]:
    """A varied training caption that is true for the scene, with the claims it makes (all hold).

    Styles: a benchmark template the scene satisfies; the full list of objects (in x order or grouped with
    counts, with or without colours); a relation between two objects. Leads, shape and relation words vary."""
    style = rng.integers(4)
    if style == 0 and (spec := _template_spec(rng, scene)) is not None:
        return describe(spec), [spec]
    objects = scene.objects
    if style == 3:
        clear = [
            (a, b, r)
            for a, b in permutations(objects, 2)
            for r in RELATIONS
            if clearly_holds(a.center, b.center, r, scene.width, scene.height)
        ]
        if clear:
            a, b, r = pick(rng, clear)
            ca, cb = (a.color, b.color) if rng.random() < 0.7 or a.shape == b.shape else (None, None)
            text = (
                f"{pick(rng, _LEADS)}{noun_phrase(_shape_word(rng, a.shape), ca)} "
                f"{pick(rng, _RELATION_WORDS[r])} {noun_phrase(_shape_word(rng, b.shape), cb)}"
            )
            spec = PromptSpec("position", (a.shape, b.shape), (ca, cb), relation=r)
            return _finish(rng, text), [spec]
    with_colors = rng.random() < 0.75
    if with_colors and rng.random() < 0.5:  # every object in x order
        phrases = [noun_phrase(_shape_word(rng, o.shape), o.color) for o in order_objects(list(objects))]
    else:  # grouped: "two red circles and a star"
        groups = Counter((o.shape, o.color if with_colors else None) for o in objects)
        keys = list(groups)
        phrases = [_counted(rng, groups[k], *k) for k in (keys[i] for i in rng.permutation(len(keys)))]
    colors = tuple(o.color if with_colors else None for o in objects)
    spec = PromptSpec("scene", tuple(o.shape for o in objects), colors)
    return _finish(rng, pick(rng, _LEADS) + join_phrases(phrases)), [spec]


def _finish(rng: np.random.Generator, text: str) -> str:
    """Sometimes a capital first letter and a full stop, sometimes a background remark."""
    if rng.random() < 0.2 and not text.startswith("flat"):
        text += " on a grey background"
    if rng.random() < 0.5:
        text = text[0].upper() + text[1:] + "."
    return text
