"""The one exception type for problems a user can fix (bad files, sizes, inputs), and checks that raise it."""

from pathlib import Path


class LuminaError(ValueError):
    """A user-facing error whose message is one line naming the thing and the problem."""


def check_output_folder(path: Path) -> None:
    """Raise LuminaError if `path`, a folder to create or write into, or its nearest existing parent is a file."""
    for part in (path, *path.parents):
        if part.exists():
            if not part.is_dir():
                raise LuminaError(f"{part} exists and is not a folder")
            return
