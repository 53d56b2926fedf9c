"""One-command fine-tuning: split the records, check the image tokenizer, pre-tokenise, write the training
config, train (full or LoRA) and export.

Everything the run does is the YAML it writes to RUN/config.yaml: `lumina-mgpt train RUN/config.yaml --out
OTHER` trains the same model. Repeating the command resumes: finished shards are kept, training resumes from
the latest checkpoint.

RUN/
  config.yaml                  the training config (init_from: the base model)
  data/train.jsonl, val.jsonl  the records split (image paths relative to data/)
  data/train/, data/val/       their token shards
  checkpoints/ tensorboard/ metrics.jsonl loss.png samples/   as `lumina-mgpt train` writes them
  model/                       the export: weights, tokenizers, sampling.json, README.md (model card)
"""

import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from lumina_mgpt.errors import LuminaError

VALIDATION_CAPTIONS = 4  # fixed captions drawn in the sample grids


@dataclass
class FinetuneSettings:
    """What `lumina-mgpt finetune` is asked to do (its options)."""

    base: str | None = None  # model folder or hub id; None: the shipped model
    image_tokenizer: str | None = None  # None: the base model's
    lora: int | None = None  # rank; None: full fine-tuning
    lora_alpha: float | None = None
    lora_targets: list[str] = field(default_factory=list)  # empty: the config's default
    steps: int = 200
    area: int | None = None
    lr: float | None = None  # None: 1e-4 full, 1e-3 LoRA
    batch_size: int = 8
    micro_batch_size: int | None = None  # None: the batch size
    val_fraction: float = 0.1
    validate_every: int = 25
    sample_every: int = 100
    checkpoint_every: int = 50
    seed: int = 0
    force: bool = False


def prepare(records: str | os.PathLike, run: str | os.PathLike, settings: FinetuneSettings, echo) -> Path:
    """Split, check and pre-tokenise `records` into `run` and write `run/config.yaml`; returns its path.
    `echo` prints a line."""
    from lumina_mgpt.data.guard import check_fit, measure_fit, reference_psnr
    from lumina_mgpt.data.pretokenize import default_area, pretokenize
    from lumina_mgpt.hub import resolve_model
    from lumina_mgpt.text import TextTokenizer
    from lumina_mgpt.vocab import TokenLayout, detect_kind
    from lumina_mgpt.vq import load_image_tokenizer

    records, run = Path(records), Path(run)
    files = resolve_model(settings.base, image_tokenizer=settings.image_tokenizer)
    if files.image_tokenizer is None:
        raise LuminaError(f"{files.folder} has no image tokenizer (vq/): pass --image-tokenizer")
    tokenizer = TextTokenizer.from_file(files.text_tokenizer)
    layout = TokenLayout.from_tokenizer(files.text_tokenizer, detect_kind(tokenizer))
    area = settings.area or default_area(layout)
    data = run / "data"
    split = split_records(records, data, settings.val_fraction, settings.seed)
    config = training_config(settings, files, layout.name, area, split.captions)
    check_same_config(run / "config.yaml", config)  # before anything in the run folder changes
    split.write(data)
    image_tokenizer = load_image_tokenizer(files.image_tokenizer)
    fit = measure_fit(data / "train.jsonl", image_tokenizer, area, reference_psnr(files.image_tokenizer))
    echo(check_fit(fit, str(settings.image_tokenizer or files.image_tokenizer), settings.force))
    for part in ("train", "val"):
        report = pretokenize(
            data / f"{part}.jsonl",
            data / part,
            tokenizer=tokenizer,
            layout=layout,
            image_tokenizer=image_tokenizer,
            area=area,
            seed=settings.seed,
        )
        echo(
            f"{part}: {report.samples} samples tokenised, {report.shards_already_done} shards already done, "
            f"{len(report.skipped)} records skipped"
        )
    return write_config(run / "config.yaml", config)


@dataclass
class Split:
    """The records (JSONL lines) of each part and the first validation captions (for the sample grids)."""

    parts: dict[str, list[str]]
    captions: list[str]

    def write(self, folder: Path) -> None:
        """`folder/train.jsonl` and `folder/val.jsonl`, rewritten only when they change."""
        folder.mkdir(parents=True, exist_ok=True)
        for name, rows in self.parts.items():
            path, text = folder / f"{name}.jsonl", "".join(row + "\n" for row in rows)
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                tmp = path.with_name(f".{path.name}.tmp")
                tmp.write_text(text, encoding="utf-8")
                os.replace(tmp, path)


def split_records(records: Path, folder: Path, val_fraction: float, seed: int) -> Split:
    """The records split: a seeded `val_fraction` of them (at least one) held out, image paths made relative
    to `folder` (where `Split.write` puts them)."""
    try:
        lines = [line for line in records.read_text(encoding="utf-8").splitlines() if line.strip()]
    except FileNotFoundError:
        raise LuminaError(f"{records}: file not found") from None
    except (OSError, UnicodeDecodeError) as err:
        raise LuminaError(f"{records}: cannot read as UTF-8 text ({err})") from None
    if len(lines) < 2:
        raise LuminaError(
            f"{records}: {len(lines)} record(s); fine-tuning needs at least 2 (one is held out)"
        )
    held = max(1, round(val_fraction * len(lines)))
    if held >= len(lines):
        raise LuminaError(f"--val-fraction {val_fraction} holds out every record of {records}; lower it")
    order = np.random.default_rng(seed).permutation(len(lines))
    val_rows = set(order[:held].tolist())
    moved = [_relocate(line, records.parent, folder) for line in lines]
    parts = {
        "train": [m for i, m in enumerate(moved) if i not in val_rows],
        "val": [m for i, m in enumerate(moved) if i in val_rows],
    }
    captions = [c for c in map(_caption, parts["val"]) if c is not None][:VALIDATION_CAPTIONS]
    return Split(parts, captions)


def _relocate(line: str, source: Path, folder: Path) -> str:
    """The record with its image paths relative to `folder` instead of `source` (a line that is not a record
    is kept as it is: pre-tokenisation reports it)."""
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return line
    if not isinstance(record, dict):
        return line

    def moved(path: Any) -> Any:
        if not isinstance(path, str):
            return path
        return os.path.relpath(os.path.abspath(source / path), os.path.abspath(folder))

    for key in ("image", "image_path", "images"):
        if key in record:
            value = record[key]
            record[key] = [moved(p) for p in value] if isinstance(value, list) else moved(value)
    return json.dumps(record, ensure_ascii=False)


def _caption(line: str) -> str | None:
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        return None
    caption = record.get("caption", record.get("prompt")) if isinstance(record, dict) else None
    return caption if isinstance(caption, str) else None


def training_config(settings: FinetuneSettings, files, layout: str, area: int, captions: list[str]) -> dict:
    """The training YAML (as a mapping) of a fine-tune: one stage on data/train, validation on data/val."""
    lr = settings.lr if settings.lr is not None else (1e-4 if settings.lora is None else 1e-3)
    config: dict[str, Any] = {
        "seed": settings.seed,
        "init_from": str(Path(files.folder).resolve()),
        "tokenizer": str(Path(files.text_tokenizer).resolve()),
        "layout": layout,
        "image_tokenizer": str(Path(files.image_tokenizer).resolve()),
        "global_batch_size": settings.batch_size,
        "micro_batch_size": settings.micro_batch_size or settings.batch_size,
        "checkpoint_every": settings.checkpoint_every,
        "log_every": min(10, settings.steps),
    }
    if settings.lora is not None:
        config["lora"] = {"rank": settings.lora}
        if settings.lora_alpha is not None:
            config["lora"]["alpha"] = settings.lora_alpha
        if settings.lora_targets:
            config["lora"]["targets"] = list(settings.lora_targets)
    config["validation"] = {
        "shards": ["data/val"],
        "every": settings.validate_every,
        "captions": captions,
        "sample_every": settings.sample_every,
        "seed": settings.seed,
    }
    warmup = min(settings.steps, max(1, settings.steps // 10))
    config["stages"] = [
        {
            "name": "finetune",
            "steps": settings.steps,
            "area": area,
            "lr": lr,
            "warmup_steps": warmup,
            "data": {"shards": ["data/train"]},
        }
    ]
    return config


def check_same_config(path: Path, config: dict) -> None:
    """Check `config`; refuse a run folder whose config.yaml says otherwise (its checkpoints belong to other
    settings)."""
    from lumina_mgpt.train.config import config_from_dict, read_yaml

    config_from_dict(config, str(path))
    if not path.is_file():
        return
    old = _mapping_or_empty(read_yaml(path))
    if old != config:
        key = next(k for k in sorted(set(old) | set(config)) if old.get(k) != config.get(k))
        raise LuminaError(
            f"{path} was written for other settings ({key!r} differs): rerun with the same options to "
            "resume that run, or use another --out"
        )


def _mapping_or_empty(value: Any) -> dict:
    return value if isinstance(value, dict) else {}


def write_config(path: Path, config: dict) -> Path:
    """Write the run's config.yaml (atomically; kept when it is there already)."""
    if path.is_file():
        return path
    header = (
        "# Written by `lumina-mgpt finetune`; `lumina-mgpt train THIS_FILE --out OTHER_RUN` trains the same model.\n"
        "# Relative paths are taken from this file's folder.\n"
    )
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(header + yaml.safe_dump(config, sort_keys=False, allow_unicode=True), encoding="utf-8")
    os.replace(tmp, path)
    return path
