"""Cross-entropy on targets only, the z-loss, and the warm-up + cosine schedule."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F

from lumina_mgpt.train.losses import count_targets, lm_losses
from lumina_mgpt.train.schedule import learning_rate


def test_cross_entropy_counts_only_shifted_targets():
    torch.manual_seed(0)
    logits = torch.randn(2, 5, 11)
    labels = torch.tensor([[-100, -100, 3, 4, 5], [-100, 7, -100, -100, -100]])
    cross_entropy, z_loss = lm_losses(logits, labels, count_targets(labels))
    # position t predicts label t+1: targets at (0,1)->3, (0,2)->4, (0,3)->5, (1,0)->7
    rows = torch.stack([logits[0, 1], logits[0, 2], logits[0, 3], logits[1, 0]])
    wanted = torch.tensor([3, 4, 5, 7])
    assert count_targets(labels) == 4
    torch.testing.assert_close(cross_entropy, F.cross_entropy(rows, wanted), rtol=1e-6, atol=0)
    torch.testing.assert_close(
        cross_entropy, F.cross_entropy(logits[:, :-1].transpose(1, 2), labels[:, 1:]), rtol=1e-6, atol=0
    )
    torch.testing.assert_close(z_loss, torch.logsumexp(rows, -1).square().mean(), rtol=1e-6, atol=0)


def test_z_loss_exact_value():
    logits = torch.zeros(1, 2, 4)  # logsumexp = log 4 everywhere
    cross_entropy, z_loss = lm_losses(logits, torch.tensor([[-100, 1]]), 1)
    assert z_loss.item() == pytest.approx(math.log(4) ** 2, rel=1e-6)
    assert cross_entropy.item() == pytest.approx(math.log(4), rel=1e-6)


def test_global_normaliser_makes_split_batches_add_up():
    torch.manual_seed(1)
    logits, labels = torch.randn(4, 6, 9), torch.randint(0, 9, (4, 6))
    labels[:, :2] = -100
    labels[3, 4:] = -100
    total = count_targets(labels)
    whole = lm_losses(logits, labels, total)
    parts = [lm_losses(logits[i : i + 2], labels[i : i + 2], total) for i in (0, 2)]
    for k in range(2):
        torch.testing.assert_close(parts[0][k] + parts[1][k], whole[k], rtol=1e-6, atol=0)


def test_no_targets_gives_zero_losses():
    cross_entropy, z_loss = lm_losses(torch.randn(1, 3, 5), torch.full((1, 3), -100), 1)
    assert cross_entropy.item() == 0 and z_loss.item() == 0


def test_schedule_warm_up_then_cosine():
    rates = [learning_rate(s, lr=1.0, min_lr=0.1, warmup_steps=4, total_steps=10) for s in range(10)]
    assert rates[:4] == [0.25, 0.5, 0.75, 1.0]
    assert rates[4] == 1.0 and rates[-1] == pytest.approx(0.1)
    assert rates[6] == pytest.approx(0.1 + 0.45 * (1 + math.cos(math.pi * 2 / 5)))
    assert all(a >= b for a, b in itertools.pairwise(rates[3:]))
    assert learning_rate(0, lr=2.0, min_lr=2.0, warmup_steps=0, total_steps=1) == 2.0
