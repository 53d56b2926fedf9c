"""`generate --prompts FILE`: many prompts, each with its own size and seed, drawn in decode batches.

The file holds one prompt per line, or JSON lines `{"prompt": ..., "size": "WxH", "seed": N}` (size and seed
optional), mixed freely; blank lines are skipped.
"""

import json
from dataclasses import dataclass
from pathlib import Path

from lumina_mgpt.errors import LuminaError

_KEYS = {"prompt", "size", "seed"}


@dataclass(frozen=True)
class PromptLine:
    prompt: str
    size: tuple[int, int] | None  # None: the command's --size (or the model's canvas)
    seed: int | None  # None: the command's --seed + index * num_images
    line: int


def read_prompts(path: Path) -> list[PromptLine]:
    """The prompts of a prompts file; raises LuminaError naming the file and line of any problem."""
    from lumina_mgpt.unirep import parse_size  # torch: imported on use (quick --help)

    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise LuminaError(f"prompts file {path} does not exist") from None
    except UnicodeDecodeError:
        raise LuminaError(f"prompts file {path} is not UTF-8 text") from None
    items = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line:
            continue
        where = f"{path}:{number}"
        if not line.startswith("{"):
            items.append(PromptLine(line, None, None, number))
            continue
        try:
            item = json.loads(line)
        except json.JSONDecodeError as error:
            raise LuminaError(f"{where}: not a JSON object ({error.msg})") from None
        if set(item) - _KEYS or not isinstance(item.get("prompt"), str) or not item["prompt"].strip():
            raise LuminaError(f"{where}: a JSON line is {{'prompt': text, 'size': 'WxH', 'seed': N}}")
        seed = item.get("seed")
        if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or seed < 0):
            raise LuminaError(f"{where}: seed must be a whole number >= 0, got {seed!r}")
        try:
            size = parse_size(item["size"]) if item.get("size") is not None else None
        except LuminaError as error:
            raise LuminaError(f"{where}: {error}") from None
        items.append(PromptLine(item["prompt"], size, seed, number))
    if not items:
        raise LuminaError(f"prompts file {path} holds no prompts")
    return items


def decode_batches(
    items: list[PromptLine], default_size: tuple[int, int] | None, num_images: int, batch_size: int
) -> list[tuple[tuple[int, int] | None, list[int]]]:
    """(size, prompt indices) of each decode batch: prompts of one size together, in file order, at most
    `batch_size` images a batch (at least one prompt)."""
    by_size: dict[tuple[int, int] | None, list[int]] = {}
    for index, item in enumerate(items):
        by_size.setdefault(item.size or default_size, []).append(index)
    per_batch = max(1, batch_size // num_images)
    return [
        (size, indices[first : first + per_batch])
        for size, indices in by_size.items()
        for first in range(0, len(indices), per_batch)
    ]
