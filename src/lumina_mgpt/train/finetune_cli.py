"""`lumina-mgpt finetune DATA.jsonl --out RUN [--base MODEL] [--lora R] ...`: pretokenise, train, export."""

from pathlib import Path
from typing import Annotated

import typer

from lumina_mgpt.errors import check_output_folder


def finetune(
    records: Annotated[
        Path,
        typer.Argument(
            help="JSONL file: {image, caption} or {conversations, images} lines (docs/finetune.md)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Run folder; the same command resumes it.")],
    base: Annotated[
        str | None, typer.Option("--base", help="Model folder or hub id to start from (default: shipped).")
    ] = None,
    image_tokenizer: Annotated[
        str | None,
        typer.Option(
            "--image-tokenizer", help="Image tokenizer (e.g. from train-vq --images); default: base's."
        ),
    ] = None,
    lora: Annotated[
        int | None, typer.Option("--lora", min=1, help="Train LoRA adapters of this rank (default: full).")
    ] = None,
    lora_alpha: Annotated[
        float | None, typer.Option("--lora-alpha", min=0.0, help="LoRA alpha (default: 2 x rank).")
    ] = None,
    lora_targets: Annotated[
        list[str] | None,
        typer.Option(
            "--lora-targets", help="Linears to adapt (repeat; default: all of q/k/v/o/gate/up/down_proj)."
        ),
    ] = None,
    steps: Annotated[int, typer.Option("--steps", min=1, help="Optimiser steps.")] = 200,
    area: Annotated[
        int | None,
        typer.Option("--area", min=32, help="Target area side in px (default: the model's largest)."),
    ] = None,
    lr: Annotated[
        float | None, typer.Option("--lr", min=0.0, help="Peak learning rate (default: 1e-4, LoRA 1e-3).")
    ] = None,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Samples per optimiser step.")] = 8,
    micro_batch_size: Annotated[
        int | None, typer.Option("--micro-batch-size", min=1, help="Samples per forward (default: batch).")
    ] = None,
    val_fraction: Annotated[
        float, typer.Option("--val-fraction", min=0.0, max=0.9, help="Share of records held out.")
    ] = 0.1,
    validate_every: Annotated[
        int, typer.Option("--validate-every", min=1, help="Steps between validation losses.")
    ] = 25,
    sample_every: Annotated[
        int, typer.Option("--sample-every", min=0, help="Steps between sample grids (0: none).")
    ] = 100,
    checkpoint_every: Annotated[int, typer.Option("--checkpoint-every", min=1)] = 50,
    seed: Annotated[int, typer.Option("--seed", min=0)] = 0,
    time_limit: Annotated[
        float | None,
        typer.Option(
            "--time-limit", min=0.0, help="Minutes: checkpoint and stop after them; rerun to resume."
        ),
    ] = None,
    force: Annotated[
        bool, typer.Option("--force", help="Go on although the image tokenizer reconstructs the data badly.")
    ] = False,
) -> None:
    """Fine-tune a model on your records: pretokenise (cached in OUT), train (full or LoRA), export OUT/model.

    The run's whole recipe is OUT/config.yaml (`lumina-mgpt train OUT/config.yaml` trains the same model).
    """
    import torch.distributed as dist  # torch: imported on use, so that `lumina-mgpt --help` stays quick

    from lumina_mgpt.train.config import load_config
    from lumina_mgpt.train.finetune import FinetuneSettings, prepare
    from lumina_mgpt.train.trainer import train

    check_output_folder(out)
    settings = FinetuneSettings(
        base=base,
        image_tokenizer=image_tokenizer,
        lora=lora,
        lora_alpha=lora_alpha,
        lora_targets=lora_targets or [],
        steps=steps,
        area=area,
        lr=lr,
        batch_size=batch_size,
        micro_batch_size=micro_batch_size,
        val_fraction=val_fraction,
        validate_every=validate_every,
        sample_every=sample_every,
        checkpoint_every=checkpoint_every,
        seed=seed,
        force=force,
    )
    config = prepare(records, out, settings, typer.echo)
    try:
        folder = train(load_config(config), out, time_limit=None if time_limit is None else 60 * time_limit)
        if folder is not None:
            typer.echo(f"model written to {folder}")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
