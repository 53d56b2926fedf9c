"""Token sampling: temperature, top-k and top-p over a batch of rows, each row with its own random stream.

Everything is batched tensor work: one `topk` (which also sorts the candidates), one softmax, two cumsums and
one `searchsorted` per step, whatever the vocabulary size. Randomness comes from per-row CPU generators that
pre-draw blocks of uniforms, so a row's samples depend only on its own seed (batched == alone) and not on the
device.
"""

from dataclasses import dataclass

import torch

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.generate.config import option

MAX_SEED = 2**62  # seeds are ints in 0..MAX_SEED (the random streams hash them as 64-bit values)


@dataclass(frozen=True)
class SamplingSettings:
    """How to pick one token: `temperature` 0 means greedy; `top_k` 0 and `top_p` 1.0 mean no limit."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:  # the limits are the generation config's (one rule each)
        for name in ("temperature", "top_k", "top_p"):
            option(name).check(getattr(self, name))


def sample_tokens(
    logits: torch.Tensor,
    uniforms: torch.Tensor,
    max_k: int = 0,
    temperature: torch.Tensor | None = None,
    top_k: torch.Tensor | None = None,
    top_p: torch.Tensor | None = None,
) -> torch.Tensor:
    """Draw one token id per row of `logits[B, V]` (masked entries are -inf).

    `uniforms[B]` in [0, 1) drive inverse-CDF sampling over the candidates, the `max_k` largest logits
    (0 = the whole vocabulary; a static bound, so every row has the same number). Per-row `[B]` settings,
    each None when it changes nothing for any row: `temperature` (0 = greedy), `top_k` (0 = `max_k`),
    `top_p` (1 = all).
    """
    vocab = logits.shape[-1]
    k = vocab if max_k <= 0 else min(max_k, vocab)
    values, ids = logits.topk(k, dim=-1)  # sorted, largest first
    greedy = None
    if temperature is not None:
        greedy = (temperature <= 0).unsqueeze(-1)
        values = values / temperature.masked_fill(temperature <= 0, 1.0).unsqueeze(-1)
    if top_k is not None:
        row_k = torch.where(top_k > 0, top_k, k).unsqueeze(-1)
        values = values.masked_fill(torch.arange(k, device=logits.device) >= row_k, float("-inf"))
    probs = values.softmax(dim=-1)
    if top_p is not None:
        mass_before = probs.cumsum(dim=-1) - probs  # the first candidate always stays
        probs = probs.masked_fill((mass_before >= top_p.unsqueeze(-1)) & (top_p < 1.0).unsqueeze(-1), 0.0)
    cdf = probs.cumsum(dim=-1)
    choice = torch.searchsorted(cdf, (uniforms * cdf[:, -1]).unsqueeze(-1), right=True)
    # Candidates with probability > 0 form a prefix (values are sorted): never step past it.
    choice = torch.minimum(choice, (probs > 0).sum(dim=-1, keepdim=True) - 1)
    if greedy is not None:
        choice = choice.masked_fill(greedy, 0)
    return ids.gather(-1, choice).squeeze(-1)


class RowRandom:
    """One CPU `torch.Generator` per row; `next()` returns one uniform per row, drawn in blocks."""

    def __init__(self, seeds: list[int], device: torch.device | str = "cpu", block: int = 256) -> None:
        self.generators = [torch.Generator().manual_seed(int(seed)) for seed in seeds]
        self.device = torch.device(device)
        self.block = block
        self._buffer = torch.empty(len(seeds), 0)
        self._next = 0

    def next(self) -> torch.Tensor:
        """Uniforms `[rows]` in [0, 1) on the device: the next number of every row's own stream."""
        if self._next == self._buffer.shape[1]:
            draws = [torch.rand(self.block, generator=g) for g in self.generators]
            self._buffer = torch.stack(draws).to(self.device)
            self._next = 0
        self._next += 1
        return self._buffer[:, self._next - 1]


def row_seeds(seed: int | list[int] | torch.Generator | list[torch.Generator] | None, rows: int) -> list[int]:
    """Seeds for `rows` rows: an int gives `seed + index`; one generator gives a base seed drawn from it;
    lists give one entry per row; None draws a fresh base seed."""
    if isinstance(seed, list):
        if len(seed) != rows:
            raise LuminaError(f"got {len(seed)} seeds/generators for {rows} images; pass one per image")
        return [_seed_value(s) for s in seed]
    if seed is None:
        seed = torch.Generator().seed() % MAX_SEED
    base = _seed_value(seed)
    return [base + index for index in range(rows)]


def _seed_value(seed: int | torch.Generator) -> int:
    """An int seed as it is (checked), or one drawn from a generator."""
    if isinstance(seed, torch.Generator):
        return int(torch.randint(0, MAX_SEED, (1,), generator=seed, device=seed.device))
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= MAX_SEED:
        raise LuminaError(f"a seed must be an int in 0..2**62 or a torch.Generator, got {seed!r}")
    return seed
