"""`python -m lumina_mgpt.train CONFIG.yaml ...`: the train command without the main CLI (e.g. for torchrun -m)."""

import sys

import typer

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.train.cli import train

if __name__ == "__main__":  # guarded: data worker processes import this module again
    try:
        typer.run(train)
    except LuminaError as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
