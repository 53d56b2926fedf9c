"""The decode loop: prompts in, new tokens out, on one preallocated KV cache.

One loop (`DecodeEngine.generate`) runs a step strategy: each forward moves every unfinished row on by one
token (plain decoding: a static-shape step that `torch.compile` captures once per call shape) or, with
`DecodeSettings.speculative`, by a speculative Jacobi window inside image grids (`speculative.py`; text and
size tokens still take one-token steps). The step strategies share the grammar state, the KV cache and the
per-row `Tally`; the loop's only host sync is its stop check, every few forwards.

One forward runs over `[conditional rows; unconditional rows]`. The unconditional row of a prompt sees only
the image block being generated (from its image start, positions from 0), as both releases do; its logits
guide image-code steps only, and with `cfg_scale == 1` the unconditional rows are not run at all. The Uni-Rep
grammar picks each row's mask, the sampler draws one token per row from its own random stream.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields, replace

import torch

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.generate.config import MAX_CFG_SCALE
from lumina_mgpt.generate.constraints import BlockState, Kind, Mode, UniRepGrammar
from lumina_mgpt.generate.guidance import (
    check_cfg_schedule,
    guided,
    reference_cfg_scale,
    split_uncond,
    uncond_context,
    uncond_flags,
    with_uncond,
)
from lumina_mgpt.generate.sampling import CounterNoise, SamplingSettings, Stream, sample_tokens
from lumina_mgpt.generate.speculative import JacobiDecoder, SpeculativeSettings
from lumina_mgpt.generate.tally import Tally
from lumina_mgpt.model import ChameleonTransformer, KVCache
from lumina_mgpt.model.parallel import cache_heads, full_weight
from lumina_mgpt.vocab import TokenLayout

STOP_CHECK_EVERY = 16  # plain decoding looks this often whether every row is done (the loop's one host sync)


@dataclass(frozen=True)
class DecodeSettings:
    """Sampling settings of text and image tokens (switched at image start/end), guidance and stopping."""

    text: SamplingSettings = field(default_factory=SamplingSettings)
    image: SamplingSettings = field(default_factory=SamplingSettings)
    cfg_scale: float = 1.0
    cfg_schedule: str = "constant"  # or "reference": v2's plain-path floor and decay (guidance.py)
    force_size: bool = True  # size tokens come from the requested (W, H); False samples them
    max_new_tokens: int = 1024
    stop_at_image_end: bool = False  # a row is done after its first image (text-to-image)
    speculative: SpeculativeSettings | None = None  # None: one token per forward

    def __post_init__(self) -> None:
        if not 0 <= self.cfg_scale <= MAX_CFG_SCALE:  # also refuses NaN
            raise LuminaError(f"cfg_scale must be in 0..{MAX_CFG_SCALE}, got {self.cfg_scale}")
        check_cfg_schedule(self.cfg_schedule)
        if self.cfg_schedule == "reference" and self.speculative is not None:
            raise LuminaError(
                "cfg_schedule='reference' is v2's plain path; its speculative path keeps the scale constant"
            )
        if self.max_new_tokens < 1:
            raise LuminaError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")


@dataclass
class Step:
    """What a step callback sees: the step index, every row's new token, the logits it was sampled from
    (after guidance, before masks), and each row's mode after the token.

    In speculative decoding a step is one token index, reported once every unfinished row has reached it;
    `logits` is then None and `mode` is the rows' mode at that time."""

    index: int
    tokens: torch.Tensor  # [B]
    logits: torch.Tensor | None  # [B, V]
    mode: torch.Tensor  # [B], constraints.Mode


@dataclass
class DecodeResult:
    tokens: list[list[int]]  # new tokens per row, up to and including its stop token
    stats: dict[str, float]


class DecodeEngine:
    """Generates continuations of token prompts with a `ChameleonTransformer` under the Uni-Rep grammar."""

    def __init__(
        self,
        model: ChameleonTransformer,
        layout: TokenLayout,
        compile: bool = False,
        cuda_graphs: bool = True,
    ) -> None:
        """`compile`: capture the one-token decode step (forward and token choice) with
        `torch.compile(fullgraph=True)`, once per call shape, and the speculative windows with dynamic shapes;
        the first call of a shape compiles, which takes a while. `cuda_graphs`: on CUDA, replay the compiled
        step as a CUDA graph (`mode="reduce-overhead"`)."""
        self.model = model
        self.layout = layout
        self.device = next(model.parameters()).device
        graphs = cuda_graphs and self.device.type == "cuda"
        self._graphs = compile and graphs
        mode = "reduce-overhead" if graphs else None
        self._step = (
            torch.compile(
                self._one_token_step,
                fullgraph=True,
                dynamic=False,
                mode=mode,
                options=None if graphs else {"cpp_wrapper": True},
            )
            if compile
            else self._one_token_step
        )
        self._hidden = torch.compile(model.model, dynamic=True) if compile else model.model
        self.grammar = UniRepGrammar(layout, self.device, vocab_size=model.config.vocab_size)
        self.stop_ids = torch.tensor(sorted({*layout.stop_ids, layout.turn_sep_id}), device=self.device)

    @torch.inference_mode()
    def generate(
        self,
        prompts: list[list[int]],
        settings: DecodeSettings,
        seeds: list[int],
        sizes: list[tuple[int, int] | None] | None = None,
        callback: Callable[[Step], None] | None = None,
        budgets: list[int] | None = None,
    ) -> DecodeResult:
        """Continue every prompt (one row each) until a stop token or `settings.max_new_tokens`.

        `sizes[b]` is the `(W, H)` in pixels of the images row b generates (forced size tokens), `seeds[b]` its
        random stream, `budgets[b]` (at most `max_new_tokens`) its own limit of new tokens. A prompt may end
        inside an open image block (a given image prefix). The tensors a callback sees are reused from step to
        step: clone what you keep.
        """
        began = time.perf_counter()
        run = self._start(prompts, settings, seeds, sizes, budgets)
        token, reported = run.choose(run.logits, _window_codes(run, run.logits)), 0
        # every forward moves each unfinished row on by >= 1 token: the budget bounds the forwards
        for forward in range(1, settings.max_new_tokens):
            if callback is not None or forward % run.check_every == 0:  # the loop's one host sync
                reached, finished = run.tally.reached()
                reported = _report(callback, run, reported, reached)
                if finished:
                    break
            token = run.step(run, token)
        _report(callback, run, reported, run.tally.reached()[0])
        return _result(run, prompts, began)

    def _one_token_step(self, run: "_Run", token: torch.Tensor) -> torch.Tensor:
        """One static-shape step free of host syncs (what `compile` captures): feed every row's newest token,
        choose the next."""
        logits = self._next_logits(run, token)
        return run.choose(logits, _window_codes(run, logits))

    def _speculative_step(self, run: "_Run", token: torch.Tensor) -> torch.Tensor:
        """A forward of speculative decoding: a Jacobi window while every unfinished row is inside an image
        grid, else a one-token step (whose grid codes are those a window would commit)."""
        windows = run.windows
        if windows.all_in_grid():  # a host sync: the two forwards differ in shape
            return windows.step(token, run.cache)
        windows.forget()
        idle = with_uncond(run.tally.done.long(), run.cfg)
        token = self._one_token_step(run, token)
        run.cache.rollback(idle)  # finished rows hold still (windows roll them back too): the cache holds
        return token

    def _start(
        self,
        prompts: list[list[int]],
        settings: DecodeSettings,
        seeds: list[int],
        sizes: list[tuple[int, int] | None] | None,
        budgets: list[int] | None,
    ) -> "_Run":
        """Check the request, build the grammar state, tally and KV cache, prefill, and pick the step."""
        batch, cfg, spec = len(prompts), settings.cfg_scale != 1.0, settings.speculative
        sizes = sizes if sizes is not None else [None] * batch
        budgets = budgets if budgets is not None else [settings.max_new_tokens] * batch
        if len(seeds) != batch or len(sizes) != batch or len(budgets) != batch:
            raise LuminaError(
                f"got {batch} prompts, {len(seeds)} seeds, {len(sizes)} sizes and {len(budgets)} budgets"
            )
        if any(len(p) == 0 for p in prompts):
            raise LuminaError("a prompt is empty")
        if not all(1 <= b <= settings.max_new_tokens for b in budgets):
            raise LuminaError(f"every row's budget must lie in 1..max_new_tokens ({settings.max_new_tokens})")
        forced = sizes if settings.force_size else [None] * batch
        if spec is not None:  # no wider than the largest grid
            spec = replace(spec, window=min(spec.window, self.grammar.longest_grid(forced)))
        state = self.grammar.start(prompts, forced)
        separator = spec is not None and spec.mode == "reference"
        rows = prompts + ([uncond_context(p, self.layout, separator) for p in prompts] if cfg else [])
        slack = 1 if spec is None else spec.window  # the most tokens a forward adds to a row
        cache = KVCache(
            self.model.config,
            len(rows),
            max(len(p) for p in prompts) + settings.max_new_tokens + (0 if spec is None else slack),
            _model_dtype(self.model),
            self.device,
            kv_heads=cache_heads(self.model),
        )
        logits = self._prefill(rows, cache)
        tally = Tally.start(budgets, settings.max_new_tokens + slack, self.device)
        choose = _TokenChooser(self, state, settings, CounterNoise(seeds, self.device), tally)
        run = _Run(state, cache, tally, choose, cfg, logits, int(separator), self._step, STOP_CHECK_EVERY)
        if spec is None:
            cache.make_static()
            if self._graphs:  # the buffers the step updates in place stay where the CUDA graph expects them
                for buffer in _step_buffers(run):
                    torch._dynamo.mark_static_address(buffer)
            return run
        head = full_weight(self.model.lm_head.weight)
        run.windows = JacobiDecoder(
            self._hidden,
            head,
            self.layout,
            self.stop_ids,
            state,
            tally,
            choose.noise,
            spec,
            settings.image,
            settings.cfg_scale,
            settings.stop_at_image_end,
        )
        run.step, run.check_every = self._speculative_step, 1
        return run

    def _next_logits(self, run: "_Run", token: torch.Tensor) -> torch.Tensor:
        """Feed every row's newest token; its last-token logits `[rows, V]`. An unconditional row whose image
        just started restarts from that image start token (after what it keeps), on the device."""
        if run.cfg:
            run.cache.restart(uncond_flags(run.choose.opened), run.uncond_kept)
        return self.model(with_uncond(token, run.cfg).unsqueeze(-1), run.cache)[:, -1]

    def _prefill(self, rows: list[list[int]], cache: KVCache) -> torch.Tensor:
        """One right-padded forward over all rows; returns each row's last-token logits `[rows, V]`."""
        lengths = torch.tensor([len(r) for r in rows], device=self.device)
        ids = torch.zeros(len(rows), int(lengths.max()), dtype=torch.long, device=self.device)
        for b, row in enumerate(rows):
            ids[b, : len(row)] = torch.tensor(row, device=self.device)
        hidden = self.model.model(ids, cache)
        cache.set_lengths(lengths)
        return self.model.logits(hidden[torch.arange(len(rows), device=self.device), lengths - 1])


@dataclass
class _Run:
    """One generate call's decoding state after the prefill, and its step strategy."""

    state: BlockState
    cache: KVCache
    tally: Tally
    choose: "_TokenChooser"
    cfg: bool
    logits: torch.Tensor  # the prefill's last-token logits [rows, V]
    uncond_kept: int  # tokens an unconditional row keeps when an image starts (1: the turn separator)
    step: Callable[["_Run", torch.Tensor], torch.Tensor]  # one forward: the rows' newest tokens to the next
    check_every: int  # forwards between stop checks
    windows: JacobiDecoder | None = None  # speculative decoding's windows


def _window_codes(run: _Run, logits: torch.Tensor) -> torch.Tensor | None:
    """The codes a speculative window would commit at the rows' next token (coupled mode; else None)."""
    return None if run.windows is None else run.windows.one_token_codes(logits)


def _result(run: _Run, prompts: list[list[int]], began: float) -> DecodeResult:
    """The new tokens of each row and the call's statistics (forwards: those of the longest-running row;
    accepted per forward: per row while unfinished, 1 in plain decoding)."""
    tokens, forwards = run.tally.tokens(), run.tally.forwards
    generated = sum(len(t) for t in tokens)
    stats = {
        "prompt_tokens": sum(len(p) for p in prompts),
        "generated_tokens": generated,
        "forward_passes": int(forwards.max()),
        "accepted_per_forward": generated / int(forwards.sum()),
        "seconds": time.perf_counter() - began,
    }
    if run.windows is not None:
        stats |= {"window_forwards": run.windows.forwards, "window": run.windows.spec.window}
    return DecodeResult(tokens, stats)


def _report(callback: Callable[[Step], None] | None, run: _Run, reported: int, reached: int) -> int:
    """Call back for token indices `reported..reached-1` (with the step's logits in plain decoding, where
    every unfinished row takes one index per step); returns the new count reported."""
    if callback is not None:
        logits = run.choose.step_logits if run.windows is None else None
        for index in range(reported, reached):
            callback(Step(index, run.tally.out[:, index], logits, run.state.mode))
    return max(reported, reached)


class _TokenChooser:
    """One step's token choice for the whole batch: guidance, grammar masks, sampling, stop checks, grammar
    state and tally update, in place on buffers of fixed shape and without host syncs."""

    def __init__(
        self,
        engine: DecodeEngine,
        state: BlockState,
        settings: DecodeSettings,
        noise: CounterNoise,
        tally: Tally,
    ) -> None:
        batch, device = len(state.mode), engine.device
        self.grammar, self.stop_ids, self.latent_factor = (
            engine.grammar,
            engine.stop_ids,
            engine.layout.latent_factor,
        )
        self.state, self.settings, self.noise, self.tally = state, settings, noise, tally
        self.knobs = _row_settings(settings, device)
        vocab = engine.model.config.vocab_size
        self.step_logits = torch.zeros(batch, vocab, device=device)  # after guidance, before masks
        self.opened = torch.zeros(batch, dtype=torch.bool, device=device)  # an image started in this step
        self.cfg_scale = torch.full((batch, 1), settings.cfg_scale, device=device)  # each row's, per schedule

    def __call__(self, logits: torch.Tensor, chosen: torch.Tensor | None = None) -> torch.Tensor:
        """Each row's next token from the forward's last-token logits `[rows, V]` (conditional rows first);
        `chosen[b]` >= 0 takes that token instead of a sample where the grammar expects an image code. Row b
        samples with the uniform of its token index."""
        state, settings, tally = self.state, self.settings, self.tally
        kind, forced = self.grammar.next_kind(state)
        cond = logits
        if settings.cfg_scale != 1.0:  # guidance on image codes only
            cond, uncond = split_uncond(logits)
            scale = settings.cfg_scale
            if settings.cfg_schedule == "reference":
                self.cfg_scale.copy_(
                    reference_cfg_scale(self.cfg_scale[:, 0], state, self.latent_factor)[:, None]
                )
                scale = self.cfg_scale
            cond = torch.where((kind == Kind.CODE.value).unsqueeze(-1), guided(cond, uncond, scale), cond)
        self.step_logits.copy_(cond)
        masked = cond + self.grammar.masks[kind]
        uniforms = self.noise.uniform(Stream.TOKEN, tally.kept).float()
        token = sample_tokens(masked, uniforms, self.knobs.max_k, *self.knobs.pick(state.in_image))
        if chosen is not None:
            token = torch.where((chosen >= 0) & (kind == Kind.CODE.value), chosen, token)
        token = torch.where(forced >= 0, forced, token).masked_fill(tally.done, 0)
        stop = (token.unsqueeze(-1) == self.stop_ids).any(-1)
        if settings.stop_at_image_end:
            stop |= kind == Kind.END.value
        self.grammar.advance(state, token, kind)
        tally.out.scatter_(
            1, tally.kept.unsqueeze(-1), token.unsqueeze(-1)
        )  # a finished row's 0 goes past it
        tally.forwards += ~tally.done
        tally.kept += ~tally.done
        tally.done |= stop | (tally.kept >= tally.budget)
        state.mode.masked_fill_(tally.done, Mode.DONE.value)
        self.opened.copy_(state.mode == Mode.SIZE_H.value)
        return token


@dataclass(frozen=True)
class _RowKnobs:
    """Text and image sampling settings as tensors, picked per row by whether the row is inside an image;
    a setting that changes nothing in either is left out (None)."""

    text: tuple[torch.Tensor | None, ...]
    image: tuple[torch.Tensor | None, ...]
    max_k: int  # the larger top-k of the two (0: neither has one)

    def pick(self, in_image: torch.Tensor) -> tuple[torch.Tensor | None, ...]:
        """Per-row `(temperature, top_k, top_p)` for the rows' next tokens."""
        return tuple(
            None if t is None else torch.where(in_image, i, t)
            for t, i in zip(self.text, self.image, strict=True)
        )


def _row_settings(settings: DecodeSettings, device: torch.device) -> _RowKnobs:
    pair = (settings.text, settings.image)
    ks = [s.top_k for s in pair]
    max_k = max(ks)  # the static bound of the top-k (a row's 0 stays unlimited)
    used = (any(s.temperature != 1.0 for s in pair), ks[0] != ks[1], any(s.top_p < 1.0 for s in pair))

    def tensors(s: SamplingSettings) -> tuple[torch.Tensor | None, ...]:
        values = (s.temperature, s.top_k, s.top_p)
        return tuple(torch.tensor(v, device=device) if u else None for v, u in zip(values, used, strict=True))

    return _RowKnobs(tensors(settings.text), tensors(settings.image), max_k)


def _step_buffers(run: _Run) -> list[torch.Tensor]:
    """The tensors a one-token step reads and updates in place: cache, grammar state, tally, chooser state."""
    cache, choose = run.cache, run.choose
    state = [getattr(run.state, f.name) for f in fields(run.state)]
    tally = [getattr(run.tally, f.name) for f in fields(run.tally)]
    chooser = [choose.step_logits, choose.opened, choose.cfg_scale]
    return [
        *cache.keys,
        *cache.values,
        cache.lengths,
        cache.positions,
        cache.key_mask,
        *state,
        *tally,
        *chooser,
    ]


def _model_dtype(model: torch.nn.Module) -> torch.dtype:
    return next(model.parameters()).dtype
