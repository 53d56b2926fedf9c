"""`lumina-mgpt download MODEL [--dir D]`: prepare a machine once, run offline after."""

from pathlib import Path

import typer

from lumina_mgpt.hub import download as fetch_all


def download(
    model: str = typer.Argument(
        ..., help="a hub repo id: a release (e.g. Alpha-VLLM/Lumina-mGPT-2.0) or ours"
    ),
    dir: Path | None = typer.Option(None, "--dir", help="the hub cache to fill (default: HF_HUB_CACHE)"),
) -> None:
    """Fetch every file MODEL needs (model, text and image tokenizer) into the Hugging Face cache, checked."""
    fetch_all(model, dir, echo=typer.echo)
    cache = f"HF_HUB_CACHE={dir} " if dir is not None else ""
    typer.echo(f"ready: {cache}HF_HUB_OFFLINE=1 lumina-mgpt generate --model {model} 'a prompt'")
