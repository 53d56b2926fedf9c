"""Token sampling: temperature, top-k and top-p over a batch of rows, each row with its own random stream.

Everything is batched tensor work: one `topk` (which also sorts the candidates), one softmax, two cumsums and
one `searchsorted` per step, whatever the vocabulary size. Randomness has one source, `CounterNoise`: a
counter-based hash of (row seed, purpose, counters) computed on the device, so a row's samples depend only on
its own seed and token index (batched == alone, any device), and a step draws them without host work.
"""

from dataclasses import dataclass
from enum import IntEnum

import torch

from lumina_mgpt.errors import LuminaError

MAX_SEED = 2**62  # seeds are ints in 0..MAX_SEED (the random streams hash them as 64-bit values)
MIN_TEMPERATURE, MAX_TEMPERATURE = 1e-3, 1e3  # beyond them float32 logits overflow or flatten into NaNs


@dataclass(frozen=True)
class SamplingSettings:
    """How to pick one token: `temperature` 0 means greedy; `top_k` 0 and `top_p` 1.0 mean no limit."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:
        if not (self.temperature == 0 or MIN_TEMPERATURE <= self.temperature <= MAX_TEMPERATURE):
            raise LuminaError(
                f"temperature must be 0 (greedy) or in {MIN_TEMPERATURE}..{MAX_TEMPERATURE}, got {self.temperature}"
            )
        if self.top_k < 0:
            raise LuminaError(f"top_k must be >= 0 (0 = no limit), got {self.top_k}")
        if not 0.0 < self.top_p <= 1.0:
            raise LuminaError(f"top_p must be in (0, 1], got {self.top_p}")


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
    # sorted, largest first (a full sort is much faster than a topk of the whole vocabulary)
    values, ids = logits.sort(dim=-1, descending=True) if k == vocab else logits.topk(k, dim=-1)
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


class Stream(IntEnum):
    """What random numbers are for: each purpose is an independent stream of a row's `CounterNoise`."""

    ACCEPT = 1  # speculative draft acceptance
    SAMPLE = 2  # speculative draws from the target
    RESAMPLE = 3  # speculative draws replacing a rejected draft
    INIT = 4  # random drafts
    GUMBEL = 5  # Gumbel noise over the image codes
    TOKEN = 6  # one-token steps: the sampling uniform of a row's token index


_MASK32 = 0xFFFFFFFF
_GOLDEN = 0x9E3779B9


def _mul32(x: torch.Tensor, c: int) -> torch.Tensor:
    """(x * c) mod 2**32 for int64 x in [0, 2**32), without overflowing int64."""
    return (x * (c & 0xFFFF) + (((x * (c >> 16)) & 0xFFFF) << 16)) & _MASK32


def _mix32(x: torch.Tensor) -> torch.Tensor:
    """A 32-bit integer hash (Wellons' lowbias32) of int64 values in [0, 2**32)."""
    x = x ^ (x >> 16)
    x = _mul32(x, 0x7FEB352D)
    x = x ^ (x >> 15)
    x = _mul32(x, 0x846CA68B)
    return x ^ (x >> 16)


class CounterNoise:
    """Random numbers as a pure function of (row seed, keys): per row, reproducible, made on the device."""

    def __init__(self, seeds: list[int], device: torch.device | str) -> None:
        """`seeds`: any Python ints (taken modulo 2**64)."""
        low = torch.tensor([s & _MASK32 for s in seeds], device=device)
        high = torch.tensor([(s >> 32) & _MASK32 for s in seeds], device=device)
        self.rows = _mix32(low ^ _mix32((high + _GOLDEN) & _MASK32))
        self._code_keys: torch.Tensor | None = None

    def bits(self, *keys: torch.Tensor | int) -> torch.Tensor:
        """32 random bits (int64) per row and key combination; keys broadcast against `[rows, ...]`."""
        dims = max([1, *[k.dim() for k in keys if isinstance(k, torch.Tensor)]])
        h = self.rows.view(-1, *[1] * (dims - 1))
        for key in keys:
            key = key if isinstance(key, torch.Tensor) else torch.tensor(int(key), device=h.device)
            h = _mix32(h ^ _mix32((key + _GOLDEN) & _MASK32))
        return h

    def uniform(self, *keys: torch.Tensor | int) -> torch.Tensor:
        """Uniforms in (0, 1), float64."""
        return (self.bits(*keys).double() + 0.5) / 2**32

    def gumbel(self, positions: torch.Tensor, codebook: int) -> torch.Tensor:
        """Gumbel noise `[rows, n, codebook]` for the token positions `[rows, n]` (float64): each position of a
        row has its own fixed noise over the codes."""
        if self._code_keys is None or len(self._code_keys) != codebook:
            codes = torch.arange(codebook, device=self.rows.device)
            self._code_keys = _mix32((codes + _GOLDEN) & _MASK32)
        h = _mix32(self.bits(Stream.GUMBEL, positions).unsqueeze(-1) ^ self._code_keys)
        return -torch.log(-torch.log((h.double() + 0.5) / 2**32))


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
