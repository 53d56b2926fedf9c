"""`lumina-mgpt train CONFIG.yaml [--out DIR] [--init-from PATH]`, single process or under torchrun."""

from pathlib import Path
from typing import Annotated

import typer

from lumina_mgpt.errors import LuminaError, check_output_folder
from lumina_mgpt.train.config import load_config


def train(
    config: Annotated[Path, typer.Argument(help="Training YAML (model, stages, data, batch sizes).")],
    out: Annotated[
        Path | None,
        typer.Option(
            "--out",
            help="Output folder; a run resumes from its latest checkpoint. Default: runs/CONFIG-NAME.",
        ),
    ] = None,
    init_from: Annotated[
        str | None,
        typer.Option(
            "--init-from", help="Start from this model folder or hub id (overrides the config's init_from)."
        ),
    ] = None,
    time_limit: Annotated[
        float | None,
        typer.Option(
            "--time-limit",
            min=0.0,
            help="Minutes: checkpoint and stop after the first step that ends past them; the "
            "same command resumes the run.",
        ),
    ] = None,
    export: Annotated[
        Path | None,
        typer.Option(
            "--export",
            help="Do not train: write OUT's latest checkpoint to this folder as a model, e.g. to "
            "evaluate a run while it trains.",
        ),
    ] = None,
) -> None:
    """Train or fine-tune a model (FP-SFT stages, Omni-SFT mixtures); launch with torchrun for several GPUs.

    Checkpoints go to OUT/checkpoints, logs to OUT/tensorboard and OUT/metrics.jsonl, the final model to
    OUT/model (an HF-format folder with its tokenizers).
    """
    import torch.distributed as dist  # torch: imported on use, so that `lumina-mgpt --help` stays quick

    from lumina_mgpt.train.trainer import export_latest
    from lumina_mgpt.train.trainer import train as run_training

    settings = load_config(config, init_from)
    out = out or Path("runs") / config.stem
    for path in filter(None, (out, export)):
        check_output_folder(path)
    if export and out.resolve() in (export.resolve(), *export.resolve().parents):
        raise LuminaError(
            f"--export {export} is inside the run's --out folder {out}: give a folder outside it"
        )
    try:
        if export:
            folder = export_latest(settings, out, export, init_from)
        else:
            folder = run_training(settings, out, init_from, None if time_limit is None else 60 * time_limit)
        if dist.get_rank() == 0 and folder is not None:
            typer.echo(f"model written to {folder}")
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
