"""Learning-rate schedule: linear warm-up, then a half cosine down to a floor."""

import math


def learning_rate(step: int, *, lr: float, min_lr: float, warmup_steps: int, total_steps: int) -> float:
    """The rate for 0-based `step` of a stage of `total_steps`: it rises linearly to `lr` over `warmup_steps`
    (reaching it at step `warmup_steps - 1`), then follows a half cosine to `min_lr` at the last step."""
    if step < warmup_steps:
        return lr * (step + 1) / warmup_steps
    decay_steps = total_steps - warmup_steps - 1
    progress = 1.0 if decay_steps <= 0 else min(1.0, (step - warmup_steps) / decay_steps)
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + math.cos(math.pi * progress))
