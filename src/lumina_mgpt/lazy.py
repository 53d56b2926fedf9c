"""Lazy package exports: names imported on first use, so that light entry points (`--help`) skip torch."""

import importlib
from collections.abc import Callable
from typing import Any


def lazy_exports(package: str, modules: dict[str, str]) -> Callable[[str], Any]:
    """A module-level `__getattr__` for `package`: `modules[name]` is the (absolute, or relative to `package`)
    module that defines `name`."""

    def __getattr__(name: str) -> Any:
        if name in modules:
            return getattr(importlib.import_module(modules[name], package), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
