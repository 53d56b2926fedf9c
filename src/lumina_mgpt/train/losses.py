"""Training losses: next-token cross-entropy on target tokens and the z-loss on their log-partition."""

import torch

from lumina_mgpt.text import IGNORE_INDEX


def lm_losses(
    logits: torch.Tensor, labels: torch.Tensor, num_targets: int | torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Cross-entropy and z-loss `logsumexp(logits)²`, each summed over the target positions of `labels`
    (shifted: position t predicts label t+1; -100 is no target) and divided by `num_targets`.

    Dividing by the target count of the whole global batch, not of this micro-batch, makes the gradient the
    same however a global batch is split over ranks and accumulation steps.
    """
    targets = labels[:, 1:]
    mask = targets != IGNORE_INDEX
    scores = logits[:, :-1][mask].float()  # [N, V]
    log_partition = torch.logsumexp(scores, dim=-1)
    target_scores = scores.gather(-1, targets[mask].unsqueeze(-1)).squeeze(-1)
    cross_entropy = (log_partition - target_scores).sum() / num_targets
    z_loss = log_partition.square().sum() / num_targets
    return cross_entropy, z_loss


def count_targets(labels: torch.Tensor) -> int:
    """Number of positions `lm_losses` scores for these (unshifted) labels."""
    return int((labels[:, 1:] != IGNORE_INDEX).sum())
