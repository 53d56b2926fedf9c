"""Default canvas and sampling settings per model family: the releases' own (REFERENCE.md) and ours.

A model folder may carry `sampling.json` to override them, e.g.
`{"canvas": [128, 128], "t2i": {"cfg_scale": 3.0, "top_k": 0}, "chat": {"cfg_scale": 1.0}, "text": {"top_k": 1},
"speculative": "exact"}` ("t2i" and "chat" hold the image settings and guidance of each use; "text" the settings
of text tokens; "speculative" how image grids decode when a call does not say: "off" or a speculative mode).
"""

import json
from dataclasses import dataclass, fields, replace
from pathlib import Path

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.generate.sampling import SamplingSettings
from lumina_mgpt.generate.speculative import speculative_settings

PRESET_FILE = "sampling.json"


@dataclass(frozen=True)
class Preset:
    """Canvas `(W, H)` when none is asked for, and the guidance and sampling of each use."""

    canvas: tuple[int, int]
    t2i_cfg: float
    t2i_image: SamplingSettings
    chat_cfg: float
    chat_image: SamplingSettings
    text: SamplingSettings
    speculative: str | None = None  # image-grid decoding when a call does not say: None (plain) or a mode


PRESETS = {
    # v1: t2i CFG 4 / image top-k 2000; omni tasks CFG 1 / top-k 200; text top-k 10 (README, inference_solver)
    "v1": Preset(
        (768, 768),
        4.0,
        SamplingSettings(1.0, 2000),
        1.0,
        SamplingSettings(1.0, 200),
        SamplingSettings(1.0, 10),
    ),
    # v2: CFG 4 / image top-k 4096 (generate.py, sample_i2i.sh); text top-k 10
    "v2": Preset(
        (768, 768),
        4.0,
        SamplingSettings(1.0, 4096),
        4.0,
        SamplingSettings(1.0, 4096),
        SamplingSettings(1.0, 10),
    ),
    # ours (shapes world): small codebook, exact answers: greedy text, a narrow image top-k for tasks
    "ours": Preset(
        (128, 128), 3.0, SamplingSettings(1.0, 0), 1.0, SamplingSettings(1.0, 8), SamplingSettings(0.0, 0)
    ),
}


def preset_for(kind: str, folder: Path | None = None) -> Preset:
    """The family's preset, overridden by `folder/sampling.json` when present."""
    preset = PRESETS[kind]
    file = folder / PRESET_FILE if folder is not None else None
    if file is None or not file.is_file():
        return preset
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
        changes = {}
        if "canvas" in data:
            width, height = data["canvas"]
            changes["canvas"] = (int(width), int(height))
        for use in ("t2i", "chat"):
            section = dict(data.get(use, {}))
            if "cfg_scale" in section:
                changes[f"{use}_cfg"] = float(section.pop("cfg_scale"))
            changes[f"{use}_image"] = _updated(getattr(preset, f"{use}_image"), section)
        changes["text"] = _updated(preset.text, data.get("text", {}))
        if "speculative" in data:
            settings = speculative_settings(data["speculative"])
            changes["speculative"] = None if settings is None else settings.mode
    except (OSError, ValueError, TypeError, AttributeError, LuminaError) as error:
        raise LuminaError(
            f"{file} is not a valid sampling preset ({type(error).__name__}: {error})"
        ) from None
    return replace(preset, **changes)


def _updated(settings: SamplingSettings, section: dict) -> SamplingSettings:
    known = {f.name for f in fields(SamplingSettings)}
    unknown = set(section) - known
    if unknown:
        raise ValueError(f"unknown keys {sorted(unknown)}; expected {sorted(known)} (and cfg_scale)")
    return replace(settings, **section)
