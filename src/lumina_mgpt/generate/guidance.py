"""Classifier-free guidance as the releases do it: the unconditional row's context, and the CFG scale schedule.

- Unconditional context: by default the open image block alone (start token onward), as both releases' plain
  paths do. Lumina-mGPT 2.0's speculative Jacobi path instead masks the prompt except its last token, so its
  unconditional row sees the turn separator before the block too; `speculative="reference"` reproduces that.
- Scale schedule: "constant" (default; v1, and v2's speculative path) or "reference", v2's plain path: at every
  step inside an image grid (the end-of-line and image-end steps too) the scale becomes
  `max(4, s * (1 - n / (2*Hg * 2*Wg)))`, n the tokens after the image start, Hg x Wg the image in 32-px units.
  A scale below 4 is raised to 4, a larger one decays to 4 within a few dozen tokens; 1 leaves CFG off.
"""

import torch

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.generate.config import CFG_SCHEDULES
from lumina_mgpt.generate.constraints import BlockState, Mode, open_block_start
from lumina_mgpt.vocab import TokenLayout

REFERENCE_CFG_FLOOR = 4.0


def guided(cond: torch.Tensor, uncond: torch.Tensor, scale: float | torch.Tensor) -> torch.Tensor:
    """Classifier-free guidance: conditional logits pushed away from unconditional ones by `scale`."""
    return uncond + scale * (cond - uncond)


def with_uncond(rows: torch.Tensor, cfg: bool) -> torch.Tensor:
    """The rows of a guided forward: the conditional rows, then (with `cfg`) one unconditional row each, in the
    same order; `split_uncond` takes them apart."""
    return torch.cat([rows, rows]) if cfg else rows


def uncond_flags(flags: torch.Tensor) -> torch.Tensor:
    """Per-row flags `[B]` of the conditional rows as flags over a guided forward's rows, set on the
    unconditional rows only."""
    return torch.cat([torch.zeros_like(flags), flags])


def split_uncond(rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """`(conditional, unconditional)` halves of a guided forward's rows (see `with_uncond`)."""
    return rows.chunk(2)


def check_cfg_schedule(schedule: str) -> None:
    if schedule not in CFG_SCHEDULES:
        raise LuminaError(f"cfg_schedule must be one of {', '.join(CFG_SCHEDULES)}, got {schedule!r}")


def uncond_context(prompt: list[int], layout: TokenLayout, with_separator: bool = False) -> list[int]:
    """The unconditional row's prompt: the open image block at the prompt's end (start token onward; with
    `with_separator` the token before it too), or just the last token (a placeholder, replaced when an image
    starts, or kept before it with `with_separator`)."""
    start = open_block_start(prompt, layout)
    if start is None:
        return prompt[-1:]
    return prompt[max(start - 1, 0) :] if with_separator else prompt[start:]


def reference_cfg_scale(scale: torch.Tensor, state: BlockState, latent_factor: int) -> torch.Tensor:
    """Lumina-mGPT 2.0's plain-path scale after one more step (`scale[b]`: row b's scale so far; `state`: the
    grammar state before the step's token). Rows outside a grid, and rows at scale 1, keep theirs."""
    per_unit = 32 // latent_factor  # latents per 32 px
    tokens_after_start = 2 + state.row * (state.cols + 1) + state.col  # the two size tokens, then the grid
    units = (2 * state.rows // per_unit) * (2 * state.cols // per_unit)  # (2 Hg) (2 Wg), as v2 computes it
    decayed = (scale * (1 - tokens_after_start / units.clamp(min=1))).clamp(min=REFERENCE_CFG_FLOOR)
    return torch.where((state.mode == Mode.GRID.value) & (scale != 1.0), decayed, scale)
