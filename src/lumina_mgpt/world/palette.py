"""The shapes world's vocabulary: shape names, object colours, map colours, and the words built from them."""

import numpy as np

SHAPES: tuple[str, ...] = ("circle", "square", "triangle", "star", "heart", "cross")

COLORS: dict[str, tuple[int, int, int]] = {
    "red": (220, 40, 40),
    "orange": (245, 140, 20),
    "yellow": (240, 220, 30),
    "green": (40, 170, 60),
    "blue": (40, 80, 220),
    "purple": (140, 60, 190),
    "pink": (245, 130, 190),
    "brown": (130, 80, 40),
    "black": (20, 20, 20),
    "white": (245, 245, 245),
}
COLOR_NAMES: tuple[str, ...] = tuple(COLORS)
BACKGROUND: tuple[int, int, int] = (128, 128, 128)

# Segmentation map: background first, then one class colour per shape (in SHAPES order).
SEG_COLORS: dict[str, tuple[int, int, int]] = {
    "background": (0, 0, 0),
    "circle": (230, 25, 75),
    "square": (60, 180, 75),
    "triangle": (255, 225, 25),
    "star": (0, 130, 200),
    "heart": (245, 130, 48),
    "cross": (145, 30, 180),
}
EDGE_COLOR: tuple[int, int, int] = (255, 255, 255)

COUNT_WORDS: tuple[str, ...] = ("zero", "one", "two", "three", "four")

# Lookup tables for the classifiers: index 0 is the background / black.
PIXEL_CLASSES = np.array([BACKGROUND, *COLORS.values()], dtype=np.int32)  # [11, 3]
SEG_CLASSES = np.array(list(SEG_COLORS.values()), dtype=np.int32)  # [7, 3]


def article(word: str) -> str:
    """`an` before a vowel sound (a word starting with a, e, i, o, u), else `a`."""
    return "an" if word[0] in "aeiou" else "a"


def with_article(phrase: str) -> str:
    """`a red circle`, `an orange star`: the article chosen by the phrase's first word."""
    return f"{article(phrase)} {phrase}"


def plural(shape: str) -> str:
    """Plural of a shape name: add `s`, except `crosses`."""
    return shape + ("es" if shape.endswith("s") else "s")


def noun_phrase(shape: str, color: str | None = None) -> str:
    """`a circle`, `an orange star`."""
    return with_article(f"{color} {shape}" if color else shape)


def join_phrases(phrases: list[str]) -> str:
    """`a, b and c` (no serial comma); one phrase is returned as is."""
    if len(phrases) == 1:
        return phrases[0]
    return ", ".join(phrases[:-1]) + " and " + phrases[-1]
