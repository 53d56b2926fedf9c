"""One generation config: every sampling option of text-to-image and chat, its default, limits and help.

`GenerationConfig` is frozen and checked once, when it is made; each option's rule lives in its `Option` (the
one validator of that rule). The pipeline's keyword options, the CLI's `generate`/`chat` flags, the HTTP
request fields and the web UI's controls are all built from `OPTIONS`, so adding an option here adds it
everywhere, with the same limits and the same one-line error. `GenerationConfig.decode_settings` turns a config
into the engine's `DecodeSettings`.

Uses: "t2i" (text to image), "chat" (multimodal chat) and "edit" (the HTTP image edit: one image in reply).

The limits live here (torch-free, so the CLI builds its flags without importing torch); the engine's own
settings dataclasses check their fields with these rules too.
"""

import math
import numbers
from dataclasses import dataclass, field, fields, replace
from typing import TYPE_CHECKING, Any

from lumina_mgpt.errors import LuminaError

if TYPE_CHECKING:
    from lumina_mgpt.generate.engine import DecodeSettings
    from lumina_mgpt.generate.speculative import SpeculativeSettings

USES = ("t2i", "chat", "edit")
MIN_TEMPERATURE, MAX_TEMPERATURE = 1e-3, 1e3  # beyond them float32 logits overflow or flatten into NaNs
MAX_CFG_SCALE = 1e3  # larger scales overflow float32 logits
CFG_SCHEDULES = ("constant", "reference")  # generate/guidance.py
MODES = ("exact", "reference")  # speculative decoding (generate/speculative.py)
SPECULATIVE_CHOICES = ("off", *MODES)
DRAFT_INITS = ("random", "above")
VERIFIER_METHODS = ("pmi", "caption")  # best-of's SelfVerifier (generate/best_of.py)
MAX_TOP_K = 2**31 - 1  # more than any vocabulary: all


@dataclass(frozen=True)
class Option:
    """One option: its value type and limits (`low`..`high`, `low_open` for a strict lower bound, `zero` when 0
    is also allowed below `low`, `choices` for words, `optional` when None is a value), help and uses."""

    name: str
    kind: type  # float, int, bool or str
    help: str
    uses: tuple[str, ...] = USES
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    zero: bool = False
    choices: tuple[str, ...] | None = None
    optional: bool = False
    aliases: tuple[tuple[Any, str], ...] = ()  # other values that stand for a choice, e.g. (True, "exact")

    def check(self, value: Any) -> Any:
        """The value as the config holds it, or LuminaError naming the option, its limits and the value."""
        if value is None and self.optional:
            return None
        for alias, choice in self.aliases:
            if value is alias:
                value = choice
        if self.kind is bool:
            if not isinstance(value, bool):
                raise LuminaError(f"{self.name} must be true or false, got {value!r}")
            return value
        if self.kind is str:
            if value not in self.choices:
                raise LuminaError(f"{self.name} must be one of {', '.join(self.choices)}, got {value!r}")
            return value
        whole = self.kind is int
        number = isinstance(value, numbers.Integral if whole else numbers.Real)
        if isinstance(value, bool) or not number:
            kind = "a whole number" if whole else "a number"
            raise LuminaError(f"{self.name} must be {kind} ({self.limits()}), got {value!r}")
        fits = math.isfinite(value) and (
            self.low is None or value > self.low or (value == self.low and not self.low_open)
        )
        fits = fits and (self.high is None or value <= self.high)
        if not fits and not (self.zero and value == 0):
            raise LuminaError(f"{self.name} must be {self.limits()}, got {value!r}")
        return self.kind(value)

    def limits(self) -> str:
        """The allowed values in words, e.g. "0 or >= 0.001 and <= 1000"."""
        parts = []
        if self.low is not None:
            parts.append(f"{'>' if self.low_open else '>='} {_number(self.low)}")
        if self.high is not None:
            parts.append(f"<= {_number(self.high)}")
        text = " and ".join(parts) or "any number"
        return f"0 or {text}" if self.zero else text

    @property
    def minimum(self) -> float | None:
        """The smallest value a number control should offer."""
        return 0 if self.zero else self.low


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else str(value)


def _option(default: Any, **spec: Any) -> Any:
    return field(default=default, metadata={"option": spec})


def _temperature(what: str) -> dict:
    return dict(
        kind=float,
        help=f"{what} temperature (0 = greedy).",
        low=MIN_TEMPERATURE,
        high=MAX_TEMPERATURE,
        zero=True,
    )


def _top_k(what: str) -> dict:
    return dict(kind=int, help=f"{what} top-k (0 = all).", low=0, high=MAX_TOP_K)


def _top_p(what: str) -> dict:
    return dict(kind=float, help=f"{what} top-p (1 = all).", low=0, high=1, low_open=True)


@dataclass(frozen=True)
class GenerationConfig:
    """How to sample one call: guidance, image and text tokens, size forcing, length, speculative decoding and
    best-of. Made once per call from the model's preset and the options given (`updated`)."""

    cfg_scale: float = _option(
        1.0, kind=float, help="Guidance scale of image tokens (1 = off).", low=0, high=MAX_CFG_SCALE
    )
    cfg_schedule: str = _option(
        "constant",
        kind=str,
        choices=CFG_SCHEDULES,
        help="constant, or reference: v2's plain path (floored at 4, larger scales decay).",
    )
    temperature: float = _option(1.0, **_temperature("Image-token"))
    top_k: int = _option(0, **_top_k("Image-token"))
    top_p: float = _option(1.0, **_top_p("Image-token"))
    text_temperature: float = _option(1.0, uses=("chat",), **_temperature("Text-token"))
    text_top_k: int = _option(0, uses=("chat",), **_top_k("Text-token"))
    text_top_p: float = _option(1.0, uses=("chat",), **_top_p("Text-token"))
    force_size: bool = _option(
        True, kind=bool, help="Size tokens from the requested size (false: the model samples them)."
    )
    max_new_tokens: int | None = _option(
        None,
        kind=int,
        uses=("chat",),
        low=1,
        optional=True,
        help="Reply length limit (default: room for four images of the canvas).",
    )
    speculative: str = _option(
        "off",
        kind=str,
        choices=SPECULATIVE_CHOICES,
        aliases=((True, "exact"), (False, "off")),
        help="Speculative Jacobi decoding of image grids: exact (same law as plain), reference (v2's rule) or off.",
    )
    window: int = _option(16, kind=int, low=1, help="Tokens per forward of speculative decoding.")
    coupling: bool = _option(
        True, kind=bool, help="Exact speculative mode: Gumbel-coupled drafts (false: independent drafts)."
    )
    draft_init: str = _option(
        "auto",
        kind=str,
        choices=("auto", *DRAFT_INITS),
        help="Speculative drafts of unpredicted positions: the code above, a random code, or auto (by mode).",
    )
    nsigma: float = _option(
        1.0,
        kind=float,
        low=0,
        high=MAX_TEMPERATURE,
        help="Reference speculative mode's top-n-sigma filter (0 = off).",
    )
    best_of: int = _option(
        1, kind=int, uses=("t2i",), low=1, help="Draw N candidates per image, keep the verifier's pick."
    )
    verifier: str = _option(
        "pmi",
        kind=str,
        uses=("t2i",),
        choices=VERIFIER_METHODS,
        help="Best-of's self-verifier: pmi (the model's image likelihood gain from the prompt) or caption.",
    )

    def __post_init__(self) -> None:
        for option in OPTIONS:
            object.__setattr__(self, option.name, option.check(getattr(self, option.name)))
        if self.cfg_schedule == "reference" and self.speculative != "off":
            raise LuminaError(
                "cfg_schedule reference is v2's plain path; its speculative path keeps the scale constant "
                "(use speculative off)"
            )

    def updated(self, use: str | None = None, **options: Any) -> "GenerationConfig":
        """This config with the given options (None: keep this config's); `use` refuses options it lacks."""
        given = {name: value for name, value in options.items() if value is not None}
        known = {option.name for option in options_of(use)}
        unknown = sorted(set(given) - known)
        if unknown:
            where = f" of {use}" if use else ""
            raise LuminaError(
                f"unknown generation option{where} {unknown[0]!r}; options: {', '.join(sorted(known))}"
            )
        return replace(self, **given)

    def speculative_settings(self) -> "SpeculativeSettings | None":
        from lumina_mgpt.generate.speculative import SpeculativeSettings

        if self.speculative == "off":
            return None
        draft_init = None if self.draft_init == "auto" else self.draft_init
        return SpeculativeSettings(self.speculative, self.window, self.coupling, draft_init, self.nsigma)

    def decode_settings(self, max_new_tokens: int, stop_at_image_end: bool = False) -> "DecodeSettings":
        """The engine's settings of this config for a call of `max_new_tokens` new tokens per row."""
        from lumina_mgpt.generate.engine import DecodeSettings
        from lumina_mgpt.generate.sampling import SamplingSettings

        return DecodeSettings(
            text=SamplingSettings(self.text_temperature, self.text_top_k, self.text_top_p),
            image=SamplingSettings(self.temperature, self.top_k, self.top_p),
            cfg_scale=self.cfg_scale,
            cfg_schedule=self.cfg_schedule,
            force_size=self.force_size,
            max_new_tokens=max_new_tokens,
            stop_at_image_end=stop_at_image_end,
            speculative=self.speculative_settings(),
        )


OPTIONS = tuple(Option(f.name, **f.metadata["option"]) for f in fields(GenerationConfig))
_BY_NAME = {option.name: option for option in OPTIONS}


def options_of(use: str | None = None) -> tuple[Option, ...]:
    """The options of one use ("t2i", "chat", "edit"), or all of them."""
    if use is not None and use not in USES:
        raise LuminaError(f"a generation use is one of {', '.join(USES)}, got {use!r}")
    return tuple(option for option in OPTIONS if use is None or use in option.uses)


def option(name: str) -> Option:
    return _BY_NAME[name]


def check_options(use: str, **options: Any) -> dict[str, Any]:
    """The given (not None) options of `use`, each checked by its rule, before any model is loaded."""
    GenerationConfig().updated(use, **options)
    return {name: value for name, value in options.items() if value is not None}
