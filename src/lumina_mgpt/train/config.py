"""The training configuration: one YAML file with the model, the optimiser and a list of stages.

```yaml
seed: 0
model: {vocab_size: 1024, hidden_size: 64, ...}   # ChameleonConfig fields of a from-scratch model, or:
init_from: path/or/repo                             # any checkpoint load_transformer reads (--init-from wins)
tokenizer: path/to/tokenizer/folder                 # copied into the export; the world source encodes with it
layout: ours                                        # TokenLayout kind of that tokenizer
image_tokenizer: path/to/vq                         # the world source's image tokenizer; copied into the export
data_workers: 8                                     # processes making world samples ahead of the GPU
dropout: 0.05                                       # residual dropout (overrides the model's)
global_batch_size: 32                               # samples per optimiser step, over all ranks
micro_batch_size: 4                                 # samples per forward pass on one rank
stages:                                             # FP-SFT stages / Omni-SFT mixtures, run in order
  - {name: fp-sft-256, area: 256, steps: 1000, lr: 2.0e-4,
     data: {shards: [data/t2i-256]}}
  - {name: omni, area: 256, steps: 500, lr: 1.0e-4,
     data: {world: {tasks: {t2i: 1.0, editing: 0.5}}}}
```
"""

import dataclasses
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from lumina_mgpt.errors import LuminaError

Auto = Literal["auto"]


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


@dataclass
class TrainConfig:
    stages: list[Stage]
    seed: int = 0
    model: dict[str, Any] | None = None
    init_from: str | None = None
    tokenizer: str | None = None
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


def load_config(path: str | os.PathLike) -> TrainConfig:
    """Read and check a training YAML file; any problem is a LuminaError naming the file and key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise LuminaError(f"{path}: file not found") from None
    except yaml.YAMLError as err:
        raise LuminaError(f"{path}: invalid YAML ({str(err).splitlines()[0]})") from None
    config = config_from_dict(raw, str(path))
    _resolve_paths(config, path.parent)
    return config


def config_from_dict(raw: Any, source: str = "config") -> TrainConfig:
    raw = dict(_mapping(raw, source))
    stages = raw.pop("stages", None)
    if not isinstance(stages, list) or not stages:
        raise LuminaError(f"{source}: 'stages' must be a non-empty list")
    raw["stages"] = [_stage(s, f"{source}: stages[{i}]") for i, s in enumerate(stages)]
    if "betas" in raw:
        raw["betas"] = tuple(raw["betas"])
    config = _build(TrainConfig, raw, source)
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


def _stage(raw: Any, where: str) -> Stage:
    raw = dict(_mapping(raw, where))
    data = dict(_mapping(raw.get("data"), f"{where}.data"))
    if data.get("world") is not None:
        data["world"] = _build(
            WorldData, _mapping(data["world"], f"{where}.data.world"), f"{where}.data.world"
        )
    if not data.get("shards") and data.get("world") is None:
        raise LuminaError(f"{where}.data: give 'shards' (folders) or 'world'")
    if data.get("shards") and data.get("world") is not None:
        raise LuminaError(f"{where}.data: give either 'shards' or 'world', not both")
    raw["data"] = _build(StageData, data, f"{where}.data")
    return _build(Stage, raw, where)


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise LuminaError(f"{where}: expected a mapping, got {type(value).__name__}")
    return value


def _build(cls: type, raw: dict[str, Any], where: str) -> Any:
    fields = dataclasses.fields(cls)
    names = [f.name for f in fields]
    unknown = sorted(set(raw) - set(names))
    if unknown:
        raise LuminaError(f"{where}: unknown key {unknown[0]!r} (expected one of {', '.join(names)})")
    missing = [
        f.name for f in fields if f.name not in raw and f.default is f.default_factory is dataclasses.MISSING
    ]
    if missing:
        raise LuminaError(f"{where}: missing key {missing[0]!r}")
    return cls(**raw)


def _check(config: TrainConfig, source: str) -> None:
    positive = {
        "global_batch_size": config.global_batch_size,
        "micro_batch_size": config.micro_batch_size,
        "max_length": config.max_length,
        "checkpoint_every": config.checkpoint_every,
        "keep_checkpoints": config.keep_checkpoints,
        "log_every": config.log_every,
    }
    positive |= {f"stages[{i}].steps": s.steps for i, s in enumerate(config.stages)}
    if not isinstance(config.data_workers, int) or config.data_workers < 0:
        raise LuminaError(f"{source}: data_workers must be an integer >= 0, got {config.data_workers!r}")
    for name, value in positive.items():
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise LuminaError(f"{source}: {name} must be a positive integer, got {value!r}")
    if config.global_batch_size % config.micro_batch_size:
        raise LuminaError(
            f"{source}: global_batch_size {config.global_batch_size} is not a multiple of "
            f"micro_batch_size {config.micro_batch_size}"
        )
    numbers = {
        "z_loss_weight": config.z_loss_weight,
        "context_drop": config.context_drop,
        "weight_decay": config.weight_decay,
        "grad_clip": config.grad_clip,
        "dropout": 0.0 if config.dropout is None else config.dropout,
    }
    numbers |= {f"stages[{i}].lr": s.lr for i, s in enumerate(config.stages)}
    numbers |= {f"stages[{i}].min_lr": s.min_lr for i, s in enumerate(config.stages) if s.min_lr is not None}
    for name, value in numbers.items():
        if not isinstance(value, int | float) or isinstance(value, bool) or value < 0:
            raise LuminaError(f"{source}: {name} must be a non-negative number, got {value!r}")
    if len(config.betas) != 2 or not all(isinstance(b, int | float) and 0 <= b < 1 for b in config.betas):
        raise LuminaError(f"{source}: betas must be two numbers in [0, 1), got {list(config.betas)}")
    if not 0 <= config.context_drop <= 1:
        raise LuminaError(f"{source}: context_drop must be in [0, 1], got {config.context_drop}")
    if config.model is None and config.init_from is None:
        raise LuminaError(f"{source}: give 'model' (a from-scratch ChameleonConfig) or 'init_from'")
    for i, stage in enumerate(config.stages):
        if stage.data.world is not None and (
            stage.area is None or config.tokenizer is None or config.image_tokenizer is None
        ):
            raise LuminaError(
                f"{source}: stages[{i}] draws from the world, which needs the stage's 'area' "
                "and the config's 'tokenizer' and 'image_tokenizer'"
            )
        aspect = None if stage.data.world is None else stage.data.world.max_aspect
        if aspect is not None and (
            not isinstance(aspect, int | float) or isinstance(aspect, bool) or aspect < 1
        ):
            raise LuminaError(
                f"{source}: stages[{i}].data.world.max_aspect must be a number >= 1, got {aspect!r}"
            )
        if not 0 <= stage.warmup_steps <= stage.steps:
            raise LuminaError(f"{source}: stages[{i}].warmup_steps must be in [0, steps]")
