"""The model card of an export: README.md with where the model comes from, its data, steps and losses."""

import json
import os
from pathlib import Path

from lumina_mgpt.data.shards import ShardSet
from lumina_mgpt.train.config import TrainConfig

CARD_FILE = "README.md"


def write_model_card(folder: Path, config: TrainConfig, run: Path) -> Path:
    """Write `folder/README.md` for the model a run of `config` in `run` exported (atomically)."""
    rows = []
    if (run / "metrics.jsonl").is_file():
        rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text(encoding="utf-8").splitlines()]
    losses = [row for row in rows if "loss" in row]
    validation = [row for row in rows if "val_loss" in row]
    method = "full fine-tuning" if config.lora is None else _lora_line(config)
    base = config.init_from or "none (trained from scratch)"
    lines = [
        f"# {run.resolve().name}",
        "",
        f"Lumina-mGPT model trained with `lumina-mgpt train` ({method}).",
        "",
        f"- base model: {base}",
        f"- steps: {config.total_steps} (global batch {config.global_batch_size} samples, seed {config.seed})",
    ]
    for stage in config.stages:
        lines.append(f"- stage {stage.name!r}: {stage.steps} steps at lr {stage.lr:g}, {_data_line(stage)}")
    if config.validation is not None:
        lines.append(f"- validation data: {_shard_size(config.validation.shards)}")
    if losses:
        first, last = losses[0], losses[-1]
        lines.append(
            f"- training loss: {first['loss']:.4f} at step {first['step']} -> {last['loss']:.4f} "
            f"at step {last['step']}"
        )
    if validation:
        first, last = validation[0], validation[-1]
        lines.append(
            f"- validation loss: {first['val_loss']:.4f} at step {first['step']} -> "
            f"{last['val_loss']:.4f} at step {last['step']}"
        )
    lines += [
        "",
        "The folder holds the weights, the text tokenizer, the image tokenizer (`vq/`) and the sampling preset,",
        "so it loads with no other argument:",
        "",
        "```",
        f'lumina-mgpt generate "a prompt" --model {folder.name} --out samples',
        "```",
        "",
        "```python",
        "from lumina_mgpt.pipeline import LuminaMGPTPipeline",
        "",
        f'pipe = LuminaMGPTPipeline.from_pretrained("{folder.name}")',
        "```",
        "",
    ]
    path, tmp = folder / CARD_FILE, folder / f".{CARD_FILE}.tmp"
    tmp.write_text("\n".join(lines), encoding="utf-8")
    os.replace(tmp, path)
    return path


def _lora_line(config: TrainConfig) -> str:
    lora = config.lora
    alpha = 2 * lora.rank if lora.alpha is None else lora.alpha
    return f"LoRA rank {lora.rank}, alpha {alpha:g} on {', '.join(lora.targets)}, merged into the weights"


def _data_line(stage) -> str:
    if stage.data.world is not None:
        return f"shapes-world samples ({', '.join(stage.data.world.tasks)})"
    return _shard_size(stage.data.shards)


def _shard_size(folders: list[str]) -> str:
    samples = ShardSet(folders)
    return f"{len(samples):,} samples, {int(samples.lengths.sum()):,} tokens ({', '.join(map(str, folders))})"
