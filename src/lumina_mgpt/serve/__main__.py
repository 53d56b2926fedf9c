"""`python -m lumina_mgpt.serve ...`: the `lumina-mgpt serve` command on its own."""

import typer

from lumina_mgpt.serve.cli import serve

typer.run(serve)
