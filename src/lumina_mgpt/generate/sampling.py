"""Token sampling: temperature, top-k and top-p over a batch of rows, each row with its own random stream.

One rule, `filter_logits`, gives the law a token is drawn from (plain steps and speculative verification alike);
everything is batched tensor work over the vocabulary: one `topk`, one softmax, one cumsum and one
`searchsorted` per step (top-p adds a sort). Randomness has one source, `CounterNoise`: a
counter-based hash of (row seed, purpose, counters) computed on the device, so a row's samples depend only on
its own seed and token index (batched == alone, any device), and a step draws them without host work.
"""

from dataclasses import dataclass
from enum import IntEnum

import torch

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.generate.config import option

MAX_SEED = 2**62  # seeds are ints in 0..MAX_SEED (the random streams hash them as 64-bit values)
NEG_INF = float("-inf")


@dataclass(frozen=True)
class SamplingSettings:
    """How to pick one token: `temperature` 0 means greedy; `top_k` 0 and `top_p` 1.0 mean no limit."""

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 1.0

    def __post_init__(self) -> None:  # the limits are the generation config's (one rule each)
        for name in ("temperature", "top_k", "top_p"):
            option(name).check(getattr(self, name))


def filter_logits(
    logits: torch.Tensor,
    temperature: torch.Tensor | float | None = None,
    top_k: torch.Tensor | int | None = None,
    top_p: torch.Tensor | float | None = None,
    max_k: int = 0,
    nsigma: float = 0.0,
) -> torch.Tensor:
    """The logits `[..., V]` of the law a token is drawn from, -inf outside its support: the one rule of plain
    sampling and of speculative verification.

    Divided by the temperature (0 = greedy: only the largest stays), then only the top-k largest (ties with the
    k-th stay; 0 = no limit), then with `nsigma` > 0 the values within n standard deviations of the largest
    (Lumina-mGPT 2.0's top-nσ), then the smallest most-likely set holding `top_p` of the mass (1 = all; the most
    likely token always stays). Settings are numbers for every row or tensors `[...]`, one per row; None changes
    nothing. `max_k`: a static bound on the rows' top-k (0: the whole vocabulary); with `top_k` None every row
    keeps `max_k`.
    """
    x, vocab = logits, logits.shape[-1]
    if temperature is not None:
        t = _per_row(temperature, x)
        greedy = t <= 0
        best = torch.full_like(x, NEG_INF).scatter_(-1, x.argmax(-1, keepdim=True), 0.0)
        x = torch.where(greedy, best, x / torch.where(greedy, 1.0, t))
    if max_k > 0 or isinstance(top_k, torch.Tensor) or (top_k or 0) > 0:
        k = min(max_k or (top_k if isinstance(top_k, int) else vocab), vocab)
        largest = x.sort(-1, descending=True).values if k == vocab else x.topk(k, dim=-1).values
        row_k = _per_row(k if top_k is None else top_k, x).long()
        kth = largest.gather(-1, row_k.clamp(1, k) - 1)
        x = x.masked_fill((row_k > 0) & (x < kth), NEG_INF)
    if nsigma > 0:
        x = top_nsigma(x, nsigma)
    if top_p is not None:
        p = _per_row(top_p, x)
        probs, order = x.softmax(-1).sort(-1, descending=True)
        drop = ((probs.cumsum(-1) - probs) >= p) & (p < 1.0)
        x = x.masked_fill(torch.zeros_like(drop).scatter_(-1, order, drop), NEG_INF)
    return x


def target_logprobs(logits: torch.Tensor, image: SamplingSettings, nsigma: float = 0.0) -> torch.Tensor:
    """Log-probabilities `[..., C]` of the law `filter_logits` gives for one set of settings (image codes)."""
    return filter_logits(logits, image.temperature, image.top_k, image.top_p, nsigma=nsigma).log_softmax(-1)


def top_nsigma(x: torch.Tensor, n: float) -> torch.Tensor:
    """Keep the values within n population standard deviations (over the finite values) of the largest."""
    finite = x.isfinite()
    count = finite.sum(-1, keepdim=True)
    mean = x.where(finite, 0.0).sum(-1, keepdim=True) / count
    std = (((x - mean).where(finite, 0.0) ** 2).sum(-1, keepdim=True) / count).sqrt()
    return x.masked_fill(x < x.amax(-1, keepdim=True) - n * std, NEG_INF)


def draw(weights: torch.Tensor, uniforms: torch.Tensor) -> torch.Tensor:
    """Inverse-CDF draws from non-negative weights `[..., V]` (any positive total) with uniforms `[...]` in
    [0, 1); never an index of weight 0, even where rounding puts the target at the very top."""
    cdf = weights.cumsum(-1)
    choice = torch.searchsorted(cdf, (uniforms.to(cdf.dtype) * cdf[..., -1]).unsqueeze(-1), right=True)
    last = weights.shape[-1] - 1 - (weights > 0).flip(-1).long().argmax(-1, keepdim=True)
    return torch.minimum(choice, last).squeeze(-1)


def sample_tokens(
    logits: torch.Tensor,
    uniforms: torch.Tensor,
    max_k: int = 0,
    temperature: torch.Tensor | None = None,
    top_k: torch.Tensor | None = None,
    top_p: torch.Tensor | None = None,
) -> torch.Tensor:
    """Draw one token id per row of `logits[B, V]` (masked entries are -inf) from the law of `filter_logits`
    with per-row settings `[B]` (or None), with `uniforms[B]` in [0, 1)."""
    return draw(filter_logits(logits, temperature, top_k, top_p, max_k).softmax(-1), uniforms)


def _per_row(value: torch.Tensor | float, x: torch.Tensor) -> torch.Tensor | float:
    """A setting, per row `[...]` or one number, broadcastable against values `[..., V]`."""
    return value.unsqueeze(-1) if isinstance(value, torch.Tensor) else torch.full_like(x[..., :1], value)


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
