"""Default canvas and generation config per model family: the releases' own (REFERENCE.md) and ours.

A model folder may carry `sampling.json` to override them, e.g.
`{"canvas": [128, 128], "t2i": {"cfg_scale": 3.0, "top_k": 0}, "chat": {"cfg_scale": 1.0},
"chat_with_images": {"temperature": 0}, "text": {"top_k": 1}, "speculative": "exact"}` ("t2i" and "chat" hold
generation options (`generate/config.py`) of each use, "chat_with_images" what differs from "chat" when the
conversation holds an image (editing, dense prediction, condition -> image: replies that transform a given image
may want other sampling than replies drawn from text alone); "text" the sampling of text tokens (temperature,
top_k, top_p); "speculative" how image grids decode when a call does not say: "off" or a speculative mode). It
resolves into the preset's three `GenerationConfig`s once, on loading.
"""

import json
from dataclasses import dataclass, replace
from pathlib import Path

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.generate.config import GenerationConfig, options_of

PRESET_FILE = "sampling.json"
TEXT_KEYS = ("temperature", "top_k", "top_p")  # the keys of sampling.json's "text" section


SECTIONS = {
    "t2i": ("t2i",),
    "chat": ("chat",),
    "chat_with_images": ("chat", "chat_with_images"),
}  # keys applied


@dataclass(frozen=True)
class Preset:
    """Canvas `(W, H)` when none is asked for, and the generation config of each use: text-to-image, chat, and
    chat whose conversation holds an image (edits are such chats)."""

    canvas: tuple[int, int]
    t2i: GenerationConfig
    chat: GenerationConfig
    chat_with_images: GenerationConfig

    def config(self, use: str, with_images: bool = False) -> GenerationConfig:
        """The config of `use` ("t2i", "chat", "edit"); `with_images`: the conversation holds an image."""
        if use == "t2i":
            return self.t2i
        return self.chat_with_images if with_images or use == "edit" else self.chat


def _family(t2i_cfg: float, t2i_top_k: int, chat_cfg: float, chat_top_k: int, **text: float) -> tuple:
    chat = GenerationConfig(cfg_scale=chat_cfg, top_k=chat_top_k, **text)
    return GenerationConfig(cfg_scale=t2i_cfg, top_k=t2i_top_k, **text), chat, chat


PRESETS = {
    # v1: t2i CFG 4 / image top-k 2000; omni tasks CFG 1 / top-k 200; text top-k 10 (README, inference_solver)
    "v1": Preset((768, 768), *_family(4.0, 2000, 1.0, 200, text_top_k=10)),
    # v2: CFG 4 / image top-k 4096 (generate.py, sample_i2i.sh); text top-k 10
    "v2": Preset((768, 768), *_family(4.0, 4096, 4.0, 4096, text_top_k=10)),
    # ours (shapes world): small codebook, exact answers: greedy text, a narrow image top-k for tasks
    "ours": Preset((128, 128), *_family(3.0, 0, 1.0, 8, text_temperature=0.0)),
}


def preset_for(kind: str, folder: Path | None = None) -> Preset:
    """The family's preset, overridden by `folder/sampling.json` when present."""
    preset = PRESETS[kind]
    file = folder / PRESET_FILE if folder is not None else None
    if file is None or not file.is_file():
        return preset
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        expected = ["canvas", *SECTIONS, "text", "speculative"]
        unknown = sorted(set(data) - set(expected))
        if unknown:
            raise ValueError(f"unknown keys {unknown}; expected {', '.join(expected)}")
        text = dict(data.get("text", {}))
        if set(text) - set(TEXT_KEYS):
            raise ValueError(
                f"unknown text keys {sorted(set(text) - set(TEXT_KEYS))}; expected {list(TEXT_KEYS)}"
            )
        common = {f"text_{key}": value for key, value in text.items()}
        if "speculative" in data:
            common["speculative"] = data["speculative"]
        changes, known = {}, {option.name for option in options_of()}
        for name, keys in SECTIONS.items():
            section = dict(common)
            for key in keys:
                given = dict(data.get(key, {}))
                if set(given) - known:
                    raise ValueError(
                        f"unknown {key} keys {sorted(set(given) - known)}; expected {sorted(known)}"
                    )
                section |= given
            changes[name] = replace(getattr(preset, name), **section)
        if "canvas" in data:
            width, height = data["canvas"]
            changes["canvas"] = (int(width), int(height))
    except (OSError, ValueError, TypeError, AttributeError) as error:  # LuminaError is a ValueError
        raise LuminaError(
            f"{file} is not a valid sampling preset ({type(error).__name__}: {error})"
        ) from None
    return replace(preset, **changes)
