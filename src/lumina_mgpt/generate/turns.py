"""The turns of a command-line chat: from repeated `--turn`/`--image` options or a JSON conversation file.

A conversation file is a JSON list of turns (or `{"turns": [...]}`), each `{"text": ..., "task": ...,
"images": [paths], "map": ..., "frames": ...}` with every key but `text` optional (`task` defaults to the
command's `--task`); image paths are relative to the file's folder.
"""

import json
from dataclasses import dataclass, field
from pathlib import Path

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.generate.tasks import TASKS, resolve_task

_TURN_KEYS = {"text", "task", "images", "map", "frames"}


@dataclass
class Turn:
    """One user turn: its task (canonical name), words, input image files and task options."""

    task: str
    text: str = ""
    images: list[Path] = field(default_factory=list)
    map_name: str | None = None
    frames: int | None = None


def option_turns(
    texts: list[str], images: list[Path], task: str, map_name: str | None = None, frames: int | None = None
) -> list[Turn]:
    """Turns of repeated options: `--image` k goes with `--turn` k (an empty `--image ""` skips a turn);
    every turn has the command's task."""
    if len(images) > len(texts):
        raise LuminaError(
            f"got {len(images)} --image for {len(texts)} turn(s); pair each --image with a --turn"
        )
    name, alias_map = resolve_task(task)
    turns = []
    for k, text in enumerate(texts):
        given = [images[k]] if k < len(images) and str(images[k]) not in ("", ".") else []
        turns.append(Turn(name, text, given, alias_map or map_name, frames))
    return _checked(turns)


def file_turns(path: Path, task: str) -> list[Turn]:
    """Turns of a JSON conversation file (see the module docstring)."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LuminaError(f"conversation file {path} does not exist") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as error:
        raise LuminaError(f"conversation file {path} is not valid JSON ({error})") from None
    items = data.get("turns") if isinstance(data, dict) else data
    if not isinstance(items, list) or not items:
        raise LuminaError(
            f"conversation file {path} must hold a non-empty list of turns (or {{'turns': [...]}})"
        )
    turns = []
    for k, item in enumerate(items, start=1):
        where = f"{path}: turn {k}"
        if isinstance(item, str):
            item = {"text": item}
        if not isinstance(item, dict) or set(item) - _TURN_KEYS:
            raise LuminaError(
                f"{where} must be a string or an object with keys {', '.join(sorted(_TURN_KEYS))}"
            )
        images = item.get("images", [])
        if not isinstance(images, list) or not all(isinstance(p, str) for p in images):
            raise LuminaError(f"{where}: 'images' must be a list of file paths")
        if not isinstance(item.get("text", ""), str):
            raise LuminaError(f"{where}: 'text' must be a string")
        name, alias_map = resolve_task(item.get("task", task))
        frames = item.get("frames")
        if frames is not None and (isinstance(frames, bool) or not isinstance(frames, int)):
            raise LuminaError(f"{where}: 'frames' must be a whole number")
        turns.append(
            Turn(
                name,
                item.get("text", ""),
                [path.parent / p for p in images],
                alias_map or item.get("map"),
                frames,
            )
        )
    return _checked(turns)


def _checked(turns: list[Turn]) -> list[Turn]:
    """Refuse a turn whose task takes a set number of images and got another (a later editing turn may take
    none: it edits the latest image)."""
    for k, turn in enumerate(turns, start=1):
        wanted = TASKS[turn.task].images
        if wanted > 0 and len(turn.images) not in ((0, wanted) if k > 1 else (wanted,)):
            raise LuminaError(f"turn {k}: task {turn.task!r} takes {wanted} --image, got {len(turn.images)}")
    return turns
