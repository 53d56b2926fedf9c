"""The training configuration: one YAML file with the model, the optimiser and a list of stages.

```yaml
seed: 0
model: {vocab_size: 1024, hidden_size: 64, ...}   # ChameleonConfig fields of a from-scratch model, or:
init_from: path/or/repo                             # any checkpoint load_transformer reads (--init-from wins)
tokenizer: path/to/tokenizer/folder                 # copied into the export; the world source encodes with it
grow_vocabulary: false                              # true: init_from's embedding and head gain rows for the
                                                    #   tokens the tokenizer has beyond its vocab_size
layout: ours                                        # TokenLayout kind of that tokenizer
image_tokenizer: path/to/vq                         # the world source's image tokenizer; copied into the export
data_workers: 8                                     # processes making world samples ahead of the GPU
dropout: 0.05                                       # residual dropout (overrides the model's)
global_batch_size: 32                               # samples per optimiser step, over all ranks
micro_batch_size: 4                                 # samples per forward pass on one rank
lora: {rank: 8, alpha: 16, targets: [q_proj, v_proj]} # train LoRA adapters (peft) only; merged on export
validation: {shards: [data/val], every: 50, captions: [a red disc], sample_every: 100}
pack_length: 2048                                   # optional: rows of packed samples (micro_batch_size rows)
stages:                                             # FP-SFT stages / Omni-SFT mixtures, run in order
  - {name: fp-sft-256, area: 256, steps: 1000, lr: 2.0e-4,
     data: {shards: [data/t2i-256]}}
  - {name: omni, area: 256, steps: 500, lr: 1.0e-4,
     data: {world: {tasks: {t2i: 1.0, editing: 0.5}}}}
```
"""

import contextlib
import dataclasses
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from types import NoneType, UnionType
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints

import yaml

from lumina_mgpt.errors import LuminaError

Auto = Literal["auto"]
AREA_UNIT = 32  # px: bucket sides are multiples of it (unirep.buckets)
_POSITIVE = (
    "global_batch_size",
    "micro_batch_size",
    "max_length",
    "checkpoint_every",
    "keep_checkpoints",
    "log_every",
)


@dataclass
class WorldData:
    """Shapes-world samples made on the fly: task kind -> mixing weight; `max_aspect` keeps only the area's
    buckets whose long side is at most that many times the short one (None: every bucket)."""

    tasks: dict[str, float]
    max_aspect: float | None = None


@dataclass
class StageData:
    """Where a stage's samples come from: pre-tokenised shard folders (mixed by `task_ratios`, a task's
    samples per epoch relative to its count) or the shapes world."""

    shards: list[str] = field(default_factory=list)
    task_ratios: dict[str, float] = field(default_factory=dict)
    world: WorldData | None = None


@dataclass
class Stage:
    """A run of `steps` optimiser steps at one target area with its own warm-up + cosine schedule."""

    name: str
    steps: int
    data: StageData
    area: int | None = None  # bucket area side in px: checked against shards, sets the world's canvases
    lr: float = 2e-5
    min_lr: float | None = None  # None: constant after warm-up, as the releases train
    warmup_steps: int = 0


LORA_TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]


@dataclass
class LoraSettings:
    """Low-rank adapters (peft) on the decoder's linear layers named `targets`; only they train, and the
    export merges them into the weights. `alpha` defaults to 2 x rank."""

    rank: int
    alpha: float | None = None
    targets: list[str] = field(default_factory=lambda: list(LORA_TARGETS))
    dropout: float = 0.0


@dataclass
class Validation:
    """Held-out shards scored every `every` steps (and at the last); every `sample_every` steps (0: never)
    images for `captions` are drawn with `seed` and saved as one grid, OUT/samples/step-N.png."""

    shards: list[str]
    every: int = 100
    captions: list[str] = field(default_factory=list)
    sample_every: int = 0
    seed: int = 0


@dataclass
class TrainConfig:
    stages: list[Stage]
    seed: int = 0
    model: dict[str, Any] | None = None
    init_from: str | None = None
    tokenizer: str | None = None
    grow_vocabulary: bool = False  # init_from's vocabulary grows to the tokenizer's (new tokens: mean rows)
    layout: str = "ours"
    image_tokenizer: str | None = None
    dropout: float | None = None
    z_loss_weight: float = 1e-5
    context_drop: float = 0.1
    global_batch_size: int = 8
    micro_batch_size: int = 1
    max_length: int = 4096
    betas: tuple[float, float] = (0.9, 0.95)
    weight_decay: float = 0.1
    grad_clip: float = 4.0
    checkpoint_every: int = 1000
    keep_checkpoints: int = 2
    log_every: int = 10
    bf16: bool | Auto = "auto"  # auto: on CUDA
    activation_checkpointing: bool | Auto = "auto"  # auto: on CUDA
    device: str | None = None  # default: this rank's CUDA device, else the CPU
    data_workers: int = 0  # processes making world samples ahead (0: in the training process)
    lora: LoraSettings | None = None  # None: full fine-tuning
    validation: Validation | None = None
    pack_length: int | None = None  # pack samples into rows of this many tokens (micro_batch_size: rows)

    @property
    def total_steps(self) -> int:
        return sum(stage.steps for stage in self.stages)

    def stage_at(self, step: int) -> tuple[int, int]:
        """(stage index, step within that stage) of global 0-based `step`."""
        for index, stage in enumerate(self.stages):
            if step < stage.steps:
                return index, step
            step -= stage.steps
        raise LuminaError(f"step {step} is past the last stage")


def read_yaml(path: str | os.PathLike) -> Any:
    """Parse a YAML file (the trainers' configs); a missing, unreadable, non-UTF-8 or invalid file is one
    LuminaError naming it."""
    path = Path(path)
    try:
        return yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LuminaError(f"{path}: file not found") from None
    except OSError as err:
        raise LuminaError(f"{path}: cannot read ({err.strerror})") from None
    except UnicodeDecodeError as err:
        raise LuminaError(f"{path}: not UTF-8 text (byte {err.start})") from None
    except yaml.YAMLError as err:
        raise LuminaError(f"{path}: invalid YAML ({str(err).splitlines()[0]})") from None


def load_config(path: str | os.PathLike, init_from: str | None = None) -> TrainConfig:
    """Read and check a training YAML file; any problem is a LuminaError naming the file and key.
    `init_from` (the `--init-from` option) replaces the file's `init_from` and `model`."""
    path = Path(path)
    raw = read_yaml(path)
    if init_from is not None:  # --init-from replaces the config's model (its shape comes from the checkpoint)
        raw = {k: v for k, v in _mapping(raw or {}, str(path)).items() if k != "model"}
        raw["init_from"] = init_from
    config = config_from_dict(raw, str(path))
    _resolve_paths(config, path.parent)
    return config


def config_from_dict(raw: Any, source: str = "config") -> TrainConfig:
    """Build a TrainConfig from parsed YAML: every value is checked against its field's type, then its range."""
    config = _build(TrainConfig, raw, source, "")
    _check(config, source)
    return config


def _resolve_paths(config: TrainConfig, base: Path) -> None:
    """Relative paths that exist beside the config file are taken from there (others stay as given: paths
    from the working directory, or hub repo ids)."""

    def near(value: str | None) -> str | None:
        if value is None or Path(value).is_absolute() or not (base / value).exists():
            return value
        return os.path.normpath(base / value)

    config.init_from, config.tokenizer = near(config.init_from), near(config.tokenizer)
    config.image_tokenizer = near(config.image_tokenizer)
    for stage in config.stages:
        stage.data.shards = [near(folder) for folder in stage.data.shards]
    if config.validation is not None:
        config.validation.shards = [near(folder) for folder in config.validation.shards]


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise LuminaError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _build(cls: type, raw: Any, source: str, key: str) -> Any:
    """The dataclass `cls` from the mapping `raw` found at `key` (a key path, "" for the top level)."""
    where = f"{source}: {key}" if key else source
    raw = _mapping(raw, where)
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    unknown = sorted(set(raw) - set(names), key=str)
    if unknown:
        raise LuminaError(f"{where}: unknown key {unknown[0]!r} (expected one of {', '.join(names)})")
    missing = [
        f.name for f in fields if f.name not in raw and f.default is f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise LuminaError(f"{where}: missing key {missing[0]!r}")
    kinds = get_type_hints(cls)
    return cls(
        **{
            name: _typed(value, kinds[name], source, f"{key}.{name}".lstrip("."))
            for name, value in raw.items()
        }
    )


_KINDS = {bool: "true or false", int: "an integer", float: "a finite number", str: "a string"}
_PLURALS = {int: "integers", float: "finite numbers", str: "strings", Any: "values"}


def _typed(value: Any, kind: Any, source: str, key: str) -> Any:
    """`value` checked against the field type `kind` (ints taken as floats where a float is due); a
    LuminaError naming `key` if it does not fit."""
    origin, args = get_origin(kind), get_args(kind)
    if dataclasses.is_dataclass(kind):
        return _build(kind, value, source, key)
    if origin in (Union, UnionType):
        options = [option for option in args if option is not NoneType]
        if value is None and len(options) < len(args):
            return None
        if len(options) == 1:  # errors inside it name the inner key
            return _typed(value, options[0], source, key)
        for option in options:
            with contextlib.suppress(LuminaError):
                return _typed(value, option, source, key)
    elif origin is Literal:
        if isinstance(value, str) and value in args:
            return value
    elif origin is list:
        if isinstance(value, list):
            return [_typed(item, args[0], source, f"{key}[{i}]") for i, item in enumerate(value)]
    elif origin is tuple:
        if isinstance(value, list | tuple) and len(value) == len(args):
            return tuple(
                _typed(v, k, source, f"{key}[{i}]") for i, (v, k) in enumerate(zip(value, args, strict=True))
            )
    elif origin is dict:
        if isinstance(value, dict):
            return {
                _typed(name, args[0], source, key): _typed(item, args[1], source, f"{key}.{name}")
                for name, item in value.items()
            }
    elif (
        kind is Any or (kind is bool and isinstance(value, bool)) or (kind is str and isinstance(value, str))
    ):
        return value
    elif isinstance(value, int | float) and not isinstance(value, bool):
        if kind is int and isinstance(value, int):
            return value
        if kind is float and math.isfinite(value):
            return float(value)
    raise LuminaError(f"{source}: {key} must be {_describe(kind)}, got {value!r}")


def _describe(kind: Any) -> str:
    origin, args = get_origin(kind), get_args(kind)
    if origin is list:
        return f"a list of {_PLURALS.get(args[0], 'mappings')}"
    if origin is tuple:
        return f"a list of {len(args)} {_PLURALS[args[0]]}"
    if origin is dict:
        return f"a mapping of {_PLURALS[args[0]]} to {_PLURALS[args[1]]}"
    if origin is Literal:
        return " or ".join(map(repr, args))
    if origin in (Union, UnionType):
        return " or ".join(_describe(option) for option in args if option is not NoneType)
    return _KINDS.get(kind, "a mapping")


def _check(config: TrainConfig, source: str) -> None:
    """Ranges and combinations that the field types do not say."""
    if not config.stages:
        raise LuminaError(f"{source}: 'stages' must be a non-empty list")
    if config.model is None and config.init_from is None:
        raise LuminaError(f"{source}: give 'model' (a from-scratch ChameleonConfig) or 'init_from'")
    if config.model is not None and config.init_from is not None:
        raise LuminaError(f"{source}: give either 'model' or 'init_from', not both")
    if config.grow_vocabulary and config.init_from is None:
        raise LuminaError(f"{source}: grow_vocabulary grows init_from's vocabulary: give 'init_from'")
    from lumina_mgpt.model.config import ChameleonConfig  # imports torch: not at `lumina-mgpt --help`

    fields = sorted(f.name for f in dataclasses.fields(ChameleonConfig) if f.name not in ("extra", "_source"))
    unknown = sorted(set(config.model or ()) - set(fields))
    if unknown:
        raise LuminaError(
            f"{source}: model: unknown key {unknown[0]!r} (expected one of {', '.join(fields)})"
        )
    rules = [
        (name, getattr(config, name), getattr(config, name) >= 1, "a positive integer") for name in _POSITIVE
    ]
    rules += [
        ("seed", config.seed, config.seed >= 0, ">= 0"),
        ("data_workers", config.data_workers, config.data_workers >= 0, ">= 0"),
        ("pack_length", config.pack_length, config.pack_length is None or config.pack_length >= 1, ">= 1"),
        ("z_loss_weight", config.z_loss_weight, config.z_loss_weight >= 0, ">= 0"),
        ("weight_decay", config.weight_decay, config.weight_decay >= 0, ">= 0"),
        ("grad_clip", config.grad_clip, config.grad_clip > 0, "> 0"),
        ("context_drop", config.context_drop, 0 <= config.context_drop <= 1, "in [0, 1]"),
        ("dropout", config.dropout, config.dropout is None or 0 <= config.dropout < 1, "in [0, 1)"),
        ("betas", list(config.betas), all(0 <= beta < 1 for beta in config.betas), "in [0, 1)"),
    ]
    if config.lora is not None:
        lora = config.lora
        rules += [
            ("lora.rank", lora.rank, lora.rank >= 1, "a positive integer"),
            ("lora.alpha", lora.alpha, lora.alpha is None or lora.alpha > 0, "> 0"),
            ("lora.dropout", lora.dropout, 0 <= lora.dropout < 1, "in [0, 1)"),
            (
                "lora.targets",
                lora.targets,
                bool(lora.targets) and set(lora.targets) <= set(LORA_TARGETS),
                f"a non-empty list of {', '.join(LORA_TARGETS)}",
            ),
        ]
    if config.validation is not None:
        check = config.validation
        rules += [
            ("validation.shards", check.shards, bool(check.shards), "a non-empty list of folders"),
            ("validation.every", check.every, check.every >= 1, "a positive integer"),
            ("validation.sample_every", check.sample_every, check.sample_every >= 0, ">= 0"),
            ("validation.seed", check.seed, check.seed >= 0, ">= 0"),
        ]
    for i, stage in enumerate(config.stages):
        world, area = stage.data.world, stage.area
        rules += [
            (f"stages[{i}].steps", stage.steps, stage.steps >= 1, "a positive integer"),
            (f"stages[{i}].lr", stage.lr, stage.lr >= 0, ">= 0"),
            (
                f"stages[{i}].min_lr",
                stage.min_lr,
                stage.min_lr is None or 0 <= stage.min_lr <= stage.lr,
                f"in [0, lr] = [0, {stage.lr}]",
            ),
            (
                f"stages[{i}].warmup_steps",
                stage.warmup_steps,
                0 <= stage.warmup_steps <= stage.steps,
                f"in [0, steps] = [0, {stage.steps}]",
            ),
            (
                f"stages[{i}].area",
                area,
                area is None or (area > 0 and area % AREA_UNIT == 0),
                f"a positive multiple of {AREA_UNIT} (px)",
            ),
        ]
        if world is not None:
            weights = world.tasks.values()
            rules += [
                (
                    f"stages[{i}].data.world.tasks",
                    world.tasks,
                    all(w >= 0 for w in weights) and sum(weights) > 0,
                    "weights >= 0 with a positive sum",
                ),
                (
                    f"stages[{i}].data.world.max_aspect",
                    world.max_aspect,
                    world.max_aspect is None or world.max_aspect >= 1,
                    "a number >= 1",
                ),
            ]
    for key, value, ok, rule in rules:
        if not ok:
            raise LuminaError(f"{source}: {key} must be {rule}, got {value!r}")
    if config.global_batch_size % config.micro_batch_size:
        raise LuminaError(
            f"{source}: global_batch_size {config.global_batch_size} is not a multiple of "
            f"micro_batch_size {config.micro_batch_size}"
        )
    for i, stage in enumerate(config.stages):
        if not stage.data.shards and stage.data.world is None:
            raise LuminaError(f"{source}: stages[{i}].data: give 'shards' (folders) or 'world'")
        if stage.data.shards and stage.data.world is not None:
            raise LuminaError(f"{source}: stages[{i}].data: give either 'shards' or 'world', not both")
        if stage.data.world is not None and (
            stage.area is None or config.tokenizer is None or config.image_tokenizer is None
        ):
            raise LuminaError(
                f"{source}: stages[{i}] draws from the world, which needs the stage's 'area' "
                "and the config's 'tokenizer' and 'image_tokenizer'"
            )
