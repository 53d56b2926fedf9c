"""Checking the torch device a user names."""

import torch

from lumina_mgpt.errors import LuminaError

SUPPORTED = ("cpu", "cuda", "mps")


def resolve_device(device: torch.device | str | None, default: str = "cpu") -> torch.device:
    """The torch device `device` names (None: `default`; "auto": CUDA when there is one, else the CPU), or a
    one-line error when it is malformed, unsupported or absent from this machine."""
    device = default if device is None else device
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise LuminaError(f"unknown device {device!r} (use cpu, cuda, cuda:N, mps or auto)") from None
    if resolved.type not in SUPPORTED:
        raise LuminaError(f"device {device!r}: not supported (use cpu, cuda, cuda:N, mps or auto)")
    if resolved.type == "cuda":
        count = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if count == 0:
            raise LuminaError(f"device {device!r}: this machine (or this torch build) has no CUDA device")
        if resolved.index is not None and resolved.index >= count:
            raise LuminaError(f"device {device!r}: there are only {count} CUDA devices")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise LuminaError(f"device {device!r}: MPS is not available on this machine")
    return resolved
