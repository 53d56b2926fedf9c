"""The `lumina-mgpt` command line. Each verb's work lives in its own module; this file only wires them."""

import typer

app = typer.Typer(no_args_is_help=True, add_completion=False, help="Lumina-mGPT: generate, chat, train, evaluate, serve.")


@app.callback()
def main() -> None:
    """Lumina-mGPT command line."""
