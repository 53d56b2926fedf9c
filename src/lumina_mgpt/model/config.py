"""ChameleonConfig: the transformer's hyper-parameters, read from and written to an HF `config.json`."""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lumina_mgpt.errors import LuminaError

CONFIG_NAME = "config.json"

# Field name -> accepted JSON types (bool is checked apart from int, since bool subclasses int).
_INT, _FLOAT, _BOOL = "int", "float", "bool"
_FIELD_KINDS = {
    "vocab_size": _INT,
    "hidden_size": _INT,
    "intermediate_size": _INT,
    "num_hidden_layers": _INT,
    "num_attention_heads": _INT,
    "num_key_value_heads": _INT,
    "max_position_embeddings": _INT,
    "rope_theta": _FLOAT,
    "rms_norm_eps": _FLOAT,
    "swin_norm": _BOOL,
    "model_parallel_size": _INT,
    "attention_bias": _BOOL,
    "mlp_bias": _BOOL,
    "dropout": _FLOAT,
    "attention_dropout": _FLOAT,
    "z_loss_weight": _FLOAT,
    "initializer_range": _FLOAT,
    "tie_word_embeddings": _BOOL,
    "hidden_act": "str",
    "bos_token_id": "int?",
    "eos_token_id": "ids?",
    "pad_token_id": "int?",
}
_REQUIRED = ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads")


@dataclass
class ChameleonConfig:
    """Hyper-parameters of a Chameleon decoder, with transformers' `config.json` field names.

    Unknown fields (`vocabulary_map`, `vq_config`, `mask_image_logits`, ...) are kept in `extra` so that
    reading and writing a config round-trips; the model ignores them.
    """

    vocab_size: int
    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int | None = None  # None: same as num_attention_heads (MHA)
    max_position_embeddings: int = 4096
    rope_theta: float = 10000.0
    rms_norm_eps: float = 1e-5
    swin_norm: bool = False
    model_parallel_size: int = 1
    attention_bias: bool = False
    mlp_bias: bool = False
    dropout: float = 0.0  # residual dropout on both branch outputs (training only)
    attention_dropout: float = 0.0
    z_loss_weight: float = 0.0
    initializer_range: float = 0.02
    tie_word_embeddings: bool = False
    hidden_act: str = "silu"
    bos_token_id: int | None = 1
    eos_token_id: int | list[int] | None = 2
    pad_token_id: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    _source: str = field(default="ChameleonConfig", repr=False, compare=False)

    def __post_init__(self) -> None:
        if self.num_key_value_heads is None:
            self.num_key_value_heads = self.num_attention_heads
        for name in _FIELD_KINDS:
            _check_type(name, getattr(self, name), self._source)
        problem = self._size_problem()
        if problem:
            raise LuminaError(f"{self._source}: {problem}")

    @property
    def head_dim(self) -> int:
        return self.hidden_size // self.num_attention_heads

    def _size_problem(self) -> str | None:
        for name in (
            "vocab_size",
            "hidden_size",
            "intermediate_size",
            "num_hidden_layers",
            "num_attention_heads",
            "num_key_value_heads",
            "max_position_embeddings",
            "model_parallel_size",
        ):
            if getattr(self, name) < 1:
                return f"field {name!r} must be >= 1, got {getattr(self, name)}"
        heads, kv_heads = self.num_attention_heads, self.num_key_value_heads
        if self.hidden_size % heads or (self.hidden_size // heads) % 2:
            return f"hidden_size {self.hidden_size} does not split into {heads} heads of even size"
        if heads % kv_heads:
            return f"num_attention_heads {heads} is not a multiple of num_key_value_heads {kv_heads}"
        for name in ("dropout", "attention_dropout"):
            if not 0.0 <= getattr(self, name) < 1.0:
                return f"field {name!r} must be in [0, 1), got {getattr(self, name)}"
        if self.hidden_act != "silu":
            return f"hidden_act {self.hidden_act!r} is not supported (only 'silu')"
        if self.tie_word_embeddings:
            return "tie_word_embeddings=true is not supported (Chameleon's lm_head is untied)"
        return None

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = CONFIG_NAME) -> "ChameleonConfig":
        """Build from a `config.json` dictionary; `source` names the file in error messages."""
        if not isinstance(data, dict):
            raise LuminaError(f"{source}: expected a JSON object, got {type(data).__name__}")
        extra = dict(data)
        rope_theta = _pop_rope(extra, source)
        for name in _REQUIRED:
            if extra.get(name) is None:
                raise LuminaError(f"{source}: missing required field {name!r}")
        values = {name: extra.pop(name) for name in _FIELD_KINDS if name in extra}
        values = {name: value for name, value in values.items() if value is not None or name.endswith("_id")}
        return cls(**values, rope_theta=rope_theta, extra=extra, _source=source)

    def to_dict(self) -> dict[str, Any]:
        """A `config.json` dictionary that both this package and stock transformers can load."""
        data = {"architectures": ["ChameleonForConditionalGeneration"], "model_type": "chameleon"}
        data.update(self.extra)
        data.update({name: getattr(self, name) for name in _FIELD_KINDS})
        data["rope_parameters"] = {"rope_type": "default", "rope_theta": self.rope_theta}
        data.setdefault("vocabulary_map", {})  # transformers' Chameleon needs one, even empty
        return data

    @classmethod
    def from_json_file(cls, path: str | os.PathLike) -> "ChameleonConfig":
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise LuminaError(f"{path}: file not found") from None
        except OSError as err:
            raise LuminaError(f"{path}: cannot read ({err.strerror})") from None
        try:
            data = json.loads(text)
        except json.JSONDecodeError as err:
            raise LuminaError(f"{path}: invalid JSON ({err.msg} at line {err.lineno})") from None
        return cls.from_dict(data, source=str(path))

    def to_json_string(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=True) + "\n"


def _pop_rope(data: dict[str, Any], source: str) -> float:
    """Take RoPE settings from either layout: top-level `rope_theta` (transformers 4.x, the releases) or
    `rope_parameters` (transformers 5.x). Only plain (unscaled) RoPE is supported."""
    theta = data.pop("rope_theta", None)
    params = data.pop("rope_parameters", None) or {}
    scaling = data.pop("rope_scaling", None)
    if not isinstance(params, dict):
        raise LuminaError(f"{source}: field 'rope_parameters' must be an object")
    if params.get("rope_type", "default") != "default" or scaling:
        raise LuminaError(
            f"{source}: only default (unscaled) RoPE is supported, got "
            f"{params.get('rope_type') if params else scaling!r}"
        )
    theta = params.get("rope_theta", theta)
    if theta is None:
        return 10000.0
    _check_type("rope_theta", theta, source)
    return float(theta)


def _check_type(name: str, value: Any, source: str) -> None:
    kind = _FIELD_KINDS[name]
    is_int = isinstance(value, int) and not isinstance(value, bool)
    ok = {
        _INT: is_int,
        _FLOAT: is_int or isinstance(value, float),
        _BOOL: isinstance(value, bool),
        "str": isinstance(value, str),
        "int?": value is None or is_int,
        "ids?": value is None
        or is_int
        or (isinstance(value, list) and all(isinstance(v, int) and not isinstance(v, bool) for v in value)),
    }[kind]
    if not ok:
        expected = {
            _INT: "an integer",
            _FLOAT: "a number",
            _BOOL: "true or false",
            "str": "a string",
            "int?": "an integer or null",
            "ids?": "an integer, a list of integers or null",
        }[kind]
        raise LuminaError(f"{source}: field {name!r} must be {expected}, got {value!r}")
