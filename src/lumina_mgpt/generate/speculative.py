"""Speculative Jacobi decoding of image grids: several grid tokens per forward, each still drawn from the
distribution plain sampling would draw it from.

Inside an image grid the engine feeds a window `[last, d_0 … d_{n-2}]`: the newest token (not yet cached) and
drafts for the next n − 1 positions. One forward gives the target distribution p_i of each of the next n
positions (after guidance, temperature, top-k/top-p and the grammar). Drafts are checked left to right, the
first failure is replaced by a correctly drawn token, and the KV slots of the rejected drafts are rolled back
per row (an image's conditional and unconditional rows move together). End-of-line and image-end positions
inside the window are forced, so their drafts always pass. The forward also predicts positions whose earlier
drafts were wrong: those predictions are the next window's drafts (Jacobi recycling). Positions never predicted
start from the nearest committed code straight up their grid column (`draft_init="above"`, the exact modes'
default: flat regions repeat from row to row), or from a uniform random code (`"random"`, the reference's
default, and wherever no row above is committed yet). With "above", a prediction made more than a grid row
ahead (its context held drafts where the row above should be) also gives way to the copy once that row is
committed: in the shapes model this keeps acceptance growing with the window instead of falling past one row.

Modes (`SpeculativeSettings`):
- `exact`, `coupling=True` (default): position a of a row has its own Gumbel noise `G[a]` over the codes, a
  pure function of the row's seed and a. The token at a is `argmax(log p_a + G[a])`: an exact sample of p_a,
  because nothing before a has seen `G[a]`. A draft passes iff it equals that token, and drafts are the last
  forward's argmaxes. As p settles from forward to forward the argmaxes stop changing (Gumbel-max coupling, the
  idea of MC-SJD), so acceptance grows along the window. The tokens equal those of a one-token-at-a-time
  sampler with the same noise: drafts only decide how soon a token is known.
- `exact`, `coupling=False`: SJD with the speculative-sampling rule. Drafts are draws y ~ q (the last forward's
  p at that position, uniform codes, or a one-hot q for a copied code); draft x passes with probability
  min(1, p(x)/q(x)); the first rejection is replaced by a draw from norm(max(0, p − q)); the bonus token is
  kept when all pass.
- `reference`: Lumina-mGPT 2.0's SJD, to reproduce its images: a top-nσ filter after top-k, one-hot q for
  random drafts, acceptance against max(q, 1e-7), and on rejection a draw from p itself (from the clipped
  residual max(0, p − min(q, 0.99)) only when it holds all the mass), the filters re-applied. Not exact: it
  favours drafts.

Random numbers are a counter-based hash of (row seed, purpose, counters), computed on the device. One-token
steps (text, and grid tokens while another row of the batch is outside its grid) draw with uniforms keyed by the
row's token index; in the coupled mode their grid codes take the Gumbel noise of that index too, so a row's tokens
do not depend on the other rows of its batch (chats of any mix). In the other modes that holds when the rows
share their grid steps (text-to-image).
The reference mode's unconditional rows see the turn separator before the image block too, as v2's do (it
masks the prompt but its last token; `guidance.uncond_context`); its windows run from the first grid token up to
the image end.
"""

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch
import torch.nn.functional as F

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.generate.config import MODES, option
from lumina_mgpt.generate.constraints import BlockState, Mode
from lumina_mgpt.generate.guidance import guided, split_uncond, with_uncond
from lumina_mgpt.generate.sampling import CounterNoise, SamplingSettings, Stream, draw, target_logprobs
from lumina_mgpt.generate.tally import Tally
from lumina_mgpt.vocab import TokenLayout

if TYPE_CHECKING:
    from lumina_mgpt.model import KVCache


@dataclass(frozen=True)
class SpeculativeSettings:
    """How image grids are decoded speculatively (see the module docstring)."""

    mode: str = "exact"  # "exact" (same law as plain sampling) or "reference" (Lumina-mGPT 2.0's rule)
    window: int = 16  # tokens per forward: the newest token plus window - 1 drafts (cut to the largest grid)
    coupling: bool = True  # exact mode: Gumbel-coupled drafts; False: independent SJD drafts
    draft_init: str | None = None  # unpredicted positions: copy the code "above" or a "random" code (None:
    # "above" in the exact mode, "random" in the reference mode, as Lumina-mGPT 2.0 drafts)
    nsigma: float = 1.0  # reference mode's top-nσ filter (0 = off)

    def __post_init__(self) -> None:  # the limits are the generation config's (one rule each)
        if self.mode not in MODES:
            raise LuminaError(f"speculative mode must be one of {', '.join(MODES)}, got {self.mode!r}")
        if self.draft_init is None:
            object.__setattr__(self, "draft_init", "above" if self.mode == "exact" else "random")
        for name in ("window", "coupling", "draft_init", "nsigma"):
            option(name).check(getattr(self, name))


def speculative_settings(
    value: "bool | str | SpeculativeSettings | None", window: int | None = None
) -> SpeculativeSettings | None:
    """Settings from a user option: None/False/"off" = plain decoding, True = "exact", a mode name, or
    settings as they are; `window` overrides the window size."""
    if isinstance(value, SpeculativeSettings):
        settings = value
    elif value is None or value is False or value == "off":
        return None
    elif value is True:
        settings = SpeculativeSettings()
    elif isinstance(value, str):
        if value not in MODES:
            raise LuminaError(f"speculative must be one of {', '.join(MODES)} or off, got {value!r}")
        settings = SpeculativeSettings(mode=value)
    else:
        raise LuminaError(
            f"speculative must be a mode name ({', '.join(MODES)}), a bool or None, got {value!r}"
        )
    if window is not None:
        settings = SpeculativeSettings(**{**settings.__dict__, "window": window})
    return settings


def _code_rows(weight: torch.Tensor, codes: torch.Tensor) -> torch.Tensor:
    """The lm_head rows of the image codes: a view when the codes are consecutive ids (v1, v2, ours)."""
    first = int(codes[0])
    if torch.equal(codes, torch.arange(first, first + len(codes), device=codes.device)):
        return weight[first : first + len(codes)]
    return weight.index_select(0, codes)


# ---------------------------------------------------------------------------------------------- windows


class JacobiDecoder:
    """The speculative windows of one generate call: a step strategy of the engine's loop, which calls
    `step` whenever every unfinished row is inside an image grid (`all_in_grid`). Its interface is narrow: the
    transformer body's forward, the grammar state, the KV cache and the rows' `Tally`, moved on in place."""

    def __init__(
        self,
        hidden: Callable[[torch.Tensor, "KVCache"], torch.Tensor],
        head: torch.Tensor,
        layout: TokenLayout,
        stop_ids: torch.Tensor,
        state: BlockState,
        tally: Tally,
        noise: CounterNoise,
        spec: SpeculativeSettings,
        image: SamplingSettings,
        cfg_scale: float,
        stop_at_image_end: bool,
    ) -> None:
        """`hidden(ids, cache)`: the transformer body's hidden states; `head`: the full lm_head weight;
        `stop_ids`: the tokens that end a row; `tally`: the rows' tokens, counts, done flags and budgets;
        `image`: how image codes are sampled; `stop_at_image_end`: a row is done after its first image."""
        device = stop_ids.device
        self.spec, self.state, self.tally, self.image = spec, state, tally, image
        self.hidden, self.noise = hidden, noise
        self.cfg_scale, self.stop_at_image_end = cfg_scale, stop_at_image_end
        self.forwards = 0  # windows taken
        self.stop_ids, self.eol, self.end = stop_ids, layout.eol_id, layout.image_end_id
        self.codes = layout.image_token_ids.to(device)
        self.code_of = layout.code_of_id.to(device)
        self.head = _code_rows(head, self.codes)
        codebook = len(self.codes)
        self.exact = spec.mode == "exact"
        self.coupled = self.exact and spec.coupling
        self.nsigma = 0.0 if self.exact else spec.nsigma
        self.offsets = torch.arange(spec.window, device=device)
        batch = len(tally.kept)
        self.drafts = torch.zeros(batch, spec.window - 1, dtype=torch.long, device=device)  # code indices
        self.q = None if self.coupled else torch.zeros(batch, spec.window - 1, codebook, device=device)
        self.recycled = torch.zeros(batch, dtype=torch.long, device=device)  # leading drafts still aligned
        # whether each draft was predicted with the grid row above it committed (see _fresh_drafts)
        self.informed = torch.zeros(batch, spec.window - 1, dtype=torch.bool, device=device)

    def all_in_grid(self) -> bool:
        """Whether every unfinished row is inside an image grid (a window's turn). A host sync."""
        return bool(((self.state.mode == Mode.GRID) | self.tally.done).all())

    def one_token_codes(self, logits: torch.Tensor) -> torch.Tensor | None:
        """For a one-token step over last-token `logits` (all rows, unconditional after): in the coupled mode,
        each grid row's code as a window would commit it at its next token index (-1 for other rows), which
        the step takes where a code is due, so a row's tokens do not depend on when its batch takes windows;
        None in the other modes."""
        if not self.coupled:
            return None
        logp = target_logprobs(self._guided(logits[:, self.codes]), self.image)
        gumbel = self.noise.gumbel(self.tally.kept.unsqueeze(-1), len(self.codes)).squeeze(1)
        chosen = self.codes[(logp.double() + gumbel).argmax(-1)]
        return torch.where(self.state.mode == Mode.GRID, chosen, -1)

    def forget(self) -> None:
        """Drop the drafts (after a plain step moved the rows on)."""
        self.recycled.zero_()

    def step(self, last: torch.Tensor, cache: "KVCache") -> torch.Tensor:
        """One window forward. Every unfinished row (inside a grid) commits 1..window tokens, written to the
        tally's `out` from its `kept` offset; the tally, the grammar state and the cache move on in place.
        Returns each row's newest token (not yet cached)."""
        state, n, tally = self.state, self.spec.window, self.tally
        kept, done, out = tally.kept, tally.done, tally.out
        self.forwards += 1
        tally.forwards += ~done
        ahead = self.offsets
        line = state.cols + 1
        start = state.row * line + state.col  # grid index of each row's next token
        end_at = state.rows * line  # grid index of the image end
        index = start.unsqueeze(-1) + ahead  # grid index of the window's n predicted positions
        eol = (index % line.unsqueeze(-1) == state.cols.unsqueeze(-1)) & (index < end_at.unsqueeze(-1))
        forced = torch.where(index == end_at.unsqueeze(-1), self.end, torch.where(eol, self.eol, -1))
        active = (state.mode == Mode.GRID) & ~done
        room = torch.minimum(end_at - start + 1, tally.budget - kept).clamp(max=n)
        room = room.masked_fill(~active, 0)  # tokens a row may commit: up to its image end and budget

        self._fresh_drafts(kept, start, line, out)
        draft_ids = torch.where(forced[:, :-1] >= 0, forced[:, :-1], self.codes[self.drafts])
        logp = target_logprobs(self._code_logits(last, draft_ids, cache), self.image, self.nsigma)
        run, extra, predicted, probs = self._verify(logp, forced, kept)

        tokens = torch.cat([draft_ids, extra.unsqueeze(-1)], dim=-1)
        tokens.scatter_(1, run.unsqueeze(-1), extra.unsqueeze(-1))
        count = torch.minimum(run + 1, room)
        stop = torch.isin(tokens, self.stop_ids) & (ahead < count.unsqueeze(-1))
        stopped = stop.any(-1)
        count = torch.where(stopped, stop.long().argmax(-1) + 1, count)
        out.scatter_(1, kept.unsqueeze(-1) + ahead, torch.where(ahead < count.unsqueeze(-1), tokens, 0))
        newest = tokens.gather(1, (count - 1).clamp(min=0).unsqueeze(-1)).squeeze(-1)
        dropped = n - count  # rejected drafts and the newest token leave the cache
        cache.rollback(with_uncond(dropped, self.cfg_scale != 1.0))

        after = start + count
        ended = active & (after > end_at)  # the image end was committed
        moved = active & ~ended
        state.row.copy_(torch.where(moved, after // line, state.row).masked_fill(ended, 0))
        state.col.copy_(torch.where(moved, after % line, state.col).masked_fill(ended, 0))
        state.mode.masked_fill_(ended, Mode.TEXT)
        kept += count
        done |= stopped | (ended & self.stop_at_image_end) | (kept >= tally.budget)
        state.mode.masked_fill_(done, Mode.DONE)

        source = (count.unsqueeze(-1) + ahead[:-1]).clamp(max=n - 1)  # next window's drafts, recycled
        self.drafts = predicted.gather(1, source)
        if probs is not None:
            self.q = probs.gather(1, source.unsqueeze(-1).expand(-1, -1, probs.shape[-1]))
        self.recycled = (n - count).clamp(max=n - 1)
        self.informed = source < line.unsqueeze(-1)  # predicted with the row above committed
        return torch.where(count > 0, newest, last)

    def _verify(
        self, logp: torch.Tensor, forced: torch.Tensor, kept: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Check the drafts against the window's target log-probabilities `[B, n, C]`. Returns the number of
        leading drafts that pass, the token after them (the replacement of the first failure, or the bonus),
        each position's own prediction (the next drafts) and, unless coupled, the target probabilities."""
        n, drafts, probs = self.spec.window, self.drafts, None
        if self.coupled:  # the token at each position, should the drafts before it hold
            position = kept.unsqueeze(-1) + self.offsets
            predicted = (logp.double() + self.noise.gumbel(position, len(self.codes))).argmax(-1)
            passed = drafts == predicted[:, :-1]
        else:
            probs = logp.exp()
            uniform = self.noise.uniform(Stream.SAMPLE, kept.unsqueeze(-1), self.offsets)
            predicted = draw(probs, uniform)  # y_i ~ p_i
            p_draft = probs[:, :-1].gather(-1, drafts.unsqueeze(-1)).squeeze(-1)
            q_draft = self.q.gather(-1, drafts.unsqueeze(-1)).squeeze(-1)
            if not self.exact:
                q_draft = q_draft.clamp(min=1e-7)
            passed = (
                self.noise.uniform(Stream.ACCEPT, kept.unsqueeze(-1), self.offsets[:-1]) * q_draft < p_draft
            )
        passed |= forced[:, :-1] >= 0
        run = passed.long().cumprod(-1).sum(-1)
        extra = predicted.gather(1, run.unsqueeze(-1)).squeeze(-1)
        if probs is not None and n > 1:
            extra = torch.where(run < n - 1, self._resample(probs, run, kept), extra)
        extra_forced = forced.gather(1, run.unsqueeze(-1)).squeeze(-1)
        extra = torch.where(extra_forced >= 0, extra_forced, self.codes[extra])
        return run, extra, predicted, probs

    def _code_logits(self, last: torch.Tensor, draft_ids: torch.Tensor, cache: "KVCache") -> torch.Tensor:
        """Guided image-code logits `[B, n, C]` of the window `[last, drafts]` (float32)."""
        window = torch.cat([last.unsqueeze(-1), draft_ids], dim=-1)
        rows = with_uncond(window, self.cfg_scale != 1.0)
        return self._guided(F.linear(self.hidden(rows, cache), self.head))

    def _guided(self, logits: torch.Tensor) -> torch.Tensor:
        """Guided float32 logits of the conditional rows (the unconditional rows follow them, when guided)."""
        if self.cfg_scale == 1.0:
            return logits.float()
        return guided(*split_uncond(logits.float()), self.cfg_scale)

    def _fresh_drafts(
        self, kept: torch.Tensor, start: torch.Tensor, line: torch.Tensor, out: torch.Tensor
    ) -> None:
        """Drafts for the positions the last forward did not predict: uniform random codes (q uniform; the
        reference's q is one-hot), or with `draft_init="above"` the nearest committed code up the grid column
        (q one-hot: it is known, given the past), which also replaces predictions made without the row above."""
        codebook, ahead = len(self.codes), self.offsets[:-1]
        fresh = ahead >= self.recycled.unsqueeze(-1)
        guess = (
            (self.noise.uniform(Stream.INIT, kept.unsqueeze(-1), ahead) * codebook)
            .long()
            .clamp(max=codebook - 1)
        )
        copied = torch.zeros_like(fresh)
        if self.spec.draft_init == "above":
            line = line.unsqueeze(-1)
            rows_up = ahead // line + 1  # to the nearest committed grid row
            source = kept.unsqueeze(-1) + ahead - line * rows_up  # its token index, always < kept
            above = self.code_of[out.gather(1, source.clamp(min=0))]
            copied = (start.unsqueeze(-1) + ahead >= line * rows_up) & (above >= 0)
            guess = torch.where(copied, above, guess)
            fresh |= copied & ~self.informed
        self.drafts = torch.where(fresh, guess, self.drafts)
        if self.q is not None:
            one_hot = (copied | (not self.exact)).unsqueeze(-1)
            q = torch.where(one_hot, F.one_hot(guess, codebook).float(), 1.0 / codebook)
            self.q = torch.where(fresh.unsqueeze(-1), q, self.q)

    def _resample(self, probs: torch.Tensor, run: torch.Tensor, kept: torch.Tensor) -> torch.Tensor:
        """The code replacing each row's first rejected draft (at window position `run`)."""
        at = run.clamp(max=self.spec.window - 2).view(-1, 1, 1).expand(-1, 1, probs.shape[-1])
        p, q = probs.gather(1, at).squeeze(1), self.q.gather(1, at).squeeze(1)
        if self.exact:
            residual = (p - q).clamp(min=0)
        else:  # Lumina-mGPT 2.0: the clipped residual only when it holds all the mass, else p itself
            clipped = (p - q.clamp(max=0.99)).clamp(min=0)
            mass = clipped.sum(-1, keepdim=True)
            residual = torch.where(mass + 1e-7 > 1, clipped / mass, p)
            residual = target_logprobs(residual.log(), self.image, self.nsigma).exp()
        return draw(residual, self.noise.uniform(Stream.RESAMPLE, kept))
