"""Sampling: exact distributions of temperature / top-k / top-p, masks, greedy, per-row random streams."""

import pytest
import torch

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.generate.sampling import CounterNoise, SamplingSettings, row_seeds, sample_tokens

N = 4000  # evenly spaced uniforms: inverse-CDF counts equal probabilities within 1/N


def frequencies(logits, temperature=1.0, top_k=0, top_p=1.0, max_k=0):
    """Sample one row of logits with N evenly spaced uniforms; return the empirical distribution."""
    rows = logits.expand(N, -1)
    uniforms = (torch.arange(N) + 0.5) / N
    tokens = sample_tokens(
        rows, uniforms, max_k, torch.full((N,), temperature), torch.full((N,), top_k), torch.full((N,), top_p)
    )
    return torch.bincount(tokens, minlength=logits.shape[-1]).double() / N


LOGITS = torch.tensor([[0.3, 2.0, -1.0, 1.2, 0.0, 1.9]])


def test_full_distribution_is_softmax():
    assert torch.allclose(frequencies(LOGITS), LOGITS[0].double().softmax(-1), atol=1 / N)


def test_temperature_scales_logits():
    expected = (LOGITS[0].double() / 2.5).softmax(-1)
    assert torch.allclose(frequencies(LOGITS, temperature=2.5), expected, atol=1 / N)


def test_top_k_renormalises_the_k_largest():
    expected = torch.zeros(6, dtype=torch.double)
    top = torch.tensor([1, 5, 3])
    expected[top] = LOGITS[0, top].double().softmax(-1)
    assert torch.allclose(frequencies(LOGITS, top_k=3, max_k=3), expected, atol=1 / N)
    # a row's k below the static bound
    assert torch.allclose(frequencies(LOGITS, top_k=3, max_k=5), expected, atol=1 / N)


def test_top_p_keeps_the_smallest_prefix_reaching_p():
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    expected = torch.tensor([0.5 / 0.8, 0.3 / 0.8, 0.0, 0.0], dtype=torch.double)
    assert torch.allclose(frequencies(logits, top_p=0.79), expected, atol=1 / N)
    expected = torch.tensor([0.5 / 0.95, 0.3 / 0.95, 0.15 / 0.95, 0.0], dtype=torch.double)
    assert torch.allclose(frequencies(logits, top_p=0.81), expected, atol=1 / N)


def test_masked_tokens_are_never_drawn_even_at_the_top_of_the_unit_interval():
    logits = torch.tensor([[float("-inf"), 1.0, float("-inf"), 0.5, float("-inf")]])
    for u in (0.0, 0.5, 0.99999994):
        token = sample_tokens(logits, torch.tensor([u]))
        assert int(token) in (1, 3)
    assert frequencies(logits)[[0, 2, 4]].sum() == 0


def test_greedy_and_per_row_settings_in_one_batch():
    logits = torch.tensor([[0.1, 3.0, 2.9], [5.0, 0.0, 4.0], [0.0, 0.0, 9.0]])
    temperature = torch.tensor([0.0, 1.0, 1.0])
    top_k = torch.tensor([0, 1, 0])
    uniforms = torch.tensor([0.99, 0.99, 0.5])
    tokens = sample_tokens(logits, uniforms, 0, temperature, top_k, torch.ones(3))
    assert tokens.tolist() == [1, 0, 2]
    assert sample_tokens(logits, uniforms, max_k=1).tolist() == [1, 0, 2]  # a static k of 1: argmax


def test_row_noise_does_not_depend_on_the_batch_and_is_uniform():
    together, alone = CounterNoise([5, 7], "cpu"), CounterNoise([7], "cpu")
    index = torch.arange(4000)
    assert torch.equal(together.uniform(6, index.expand(2, -1))[1], alone.uniform(6, index[None])[0])
    draws = together.uniform(6, index.expand(2, -1))
    assert ((draws > 0) & (draws < 1)).all() and not torch.equal(draws[0], draws[1])
    counts = torch.bincount((draws[0] * 10).long(), minlength=10).double()
    assert float(((counts - 400) ** 2 / 400).sum()) < 27.9  # chi-square, 9 dof, upper 0.1%


def test_row_seeds():
    assert row_seeds(10, 3) == [10, 11, 12]
    assert row_seeds([4, 2], 2) == [4, 2]
    a = row_seeds(torch.Generator().manual_seed(1), 2)
    assert a == row_seeds(torch.Generator().manual_seed(1), 2) and a[1] == a[0] + 1
    with pytest.raises(LuminaError, match="one per image"):
        row_seeds([1, 2], 3)
    for bad in (-1, 2**62 + 1, 2**64, 1.5, True, "7", [0, -2]):
        with pytest.raises(LuminaError, match=r"a seed must be an int in 0\.\.2\*\*62"):
            row_seeds(bad, 2)


@pytest.mark.parametrize(
    ("kwargs", "word"),
    [
        ({"temperature": -1}, "temperature"),
        ({"temperature": float("nan")}, "temperature"),
        ({"temperature": float("inf")}, "temperature"),
        ({"temperature": 1e-45}, "temperature"),  # logits / 1e-45 overflow to inf
        ({"top_p": float("nan")}, "top_p"),
        ({"top_k": -2}, "top_k"),
        ({"top_p": 0.0}, "top_p"),
        ({"top_p": 1.5}, "top_p"),
    ],
)
def test_bad_settings_are_refused(kwargs, word):
    with pytest.raises(LuminaError, match=word):
        SamplingSettings(**kwargs)
