"""The `lumina-mgpt` command line. Each verb's work lives in its own module; this file only wires them."""

import functools
from collections.abc import Callable

import typer

from lumina_mgpt.data.cli import pretokenize
from lumina_mgpt.errors import LuminaError
from lumina_mgpt.generate.cli import chat, generate
from lumina_mgpt.hub_cli import download
from lumina_mgpt.serve.cli import serve
from lumina_mgpt.train.cli import train
from lumina_mgpt.train.finetune_cli import finetune
from lumina_mgpt.vq.cli import reconstruct, train_vq
from lumina_mgpt.world.cli import evaluate, extend_tokenizer, train_tokenizer

app = typer.Typer(
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    help="Lumina-mGPT: generate, chat, train, evaluate, serve.",
)


def _one_line_errors(command: Callable) -> Callable:
    """Print a LuminaError as one `error: ...` line on stderr and exit with status 2."""

    @functools.wraps(command)
    def run(*args, **kwargs):
        try:
            return command(*args, **kwargs)
        except LuminaError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(2) from None

    return run


for name, command in [
    ("generate", generate),
    ("chat", chat),
    ("eval", evaluate),
    ("reconstruct", reconstruct),
    ("pretokenize", pretokenize),
    ("train", train),
    ("finetune", finetune),
    ("train-vq", train_vq),
    ("train-tokenizer", train_tokenizer),
    ("extend-tokenizer", extend_tokenizer),
    ("serve", serve),
    ("download", download),
]:
    app.command(name)(_one_line_errors(command))
