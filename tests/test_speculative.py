"""Speculative Jacobi decoding on tiny random models: the exact modes sample the plain sampler's law (chi-square
against the exact joint law of the first codes) and Lumina-mGPT 2.0's rule does not; coupled drafts give the
tokens of a one-token Gumbel sampler (any window, no-cache reference); drafts copied up the grid column; every
block parses; rollback under full acceptance; chat replies mixing text and images; batched == alone; callbacks;
settings errors; a compiled engine draws the eager one's tokens."""

import math

import pytest
import torch
from test_generate_helpers import favour_token, one_thread, tiny_layout, tiny_model

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.generate.constraints import BlockState
from lumina_mgpt.generate.engine import DecodeEngine, DecodeSettings, Step
from lumina_mgpt.generate.sampling import CounterNoise, SamplingSettings, target_logprobs
from lumina_mgpt.generate.speculative import (
    JacobiDecoder,
    SpeculativeSettings,
    speculative_settings,
)
from lumina_mgpt.generate.tally import Tally
from lumina_mgpt.unirep import decode_image_block, find_image_blocks
from lumina_mgpt.vocab import TokenLayout

LAYOUT = tiny_layout()
START, END, SEP, EOL = LAYOUT.image_start_id, LAYOUT.image_end_id, LAYOUT.turn_sep_id, LAYOUT.eol_id
SIZES = [(32, 32), (64, 32), (32, 128), (128, 64), (96, 96), (128, 32), (32, 64), (64, 128)]
EXACT = SpeculativeSettings(window=5)
INDEPENDENT = SpeculativeSettings(window=5, coupling=False)
REFERENCE = SpeculativeSettings(window=5, mode="reference")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_thread()


def t2i(*text: int) -> list[int]:
    return [LAYOUT.bos_id, *text, SEP, START]


def settings(spec: SpeculativeSettings | None, **kw) -> DecodeSettings:
    kw.setdefault("max_new_tokens", 300)
    kw.setdefault("stop_at_image_end", True)
    return DecodeSettings(speculative=spec, **kw)


# ------------------------------------------------------------------------------ the law of the samples

# A 4-code layout whose 32 px images are 2x2 grids: after the image start come H, W, c1, c2, eol, c3, ...
CODES = 4
SMALL = TokenLayout(
    name="ours",
    vocab_size=24,
    bos_id=0,
    turn_sep_id=3,
    stop_ids=(3,),
    image_start_id=4,
    image_end_id=5,
    eol_id=6,
    latent_factor=16,
    image_token_ids=torch.arange(11, 11 + CODES),
    size_token_ids=torch.tensor([-1, 7, 8, 9, 10]),
)
PROMPT, CFG, TOP_K, SAMPLES = [0, 15, 16, 3, 4], 2.0, 3, 4000


@pytest.fixture(scope="module")
def small_model():
    return tiny_model(0, vocab=SMALL.vocab_size)


@pytest.fixture(scope="module")
def joint_law(small_model) -> torch.Tensor:
    """The exact law of the first three codes under plain sampling (CFG, top-k), from no-cache forwards."""
    image, size = SamplingSettings(top_k=TOP_K), SMALL.size_token_id(1)

    def law(context: list[int]) -> torch.Tensor:
        cond = small_model(torch.tensor([PROMPT + context]))[0, -1]
        uncond = small_model(torch.tensor([[SMALL.image_start_id, *context]]))[0, -1]
        guided = uncond + CFG * (cond - uncond)
        return target_logprobs(guided[SMALL.image_token_ids], image).exp()

    codes = SMALL.image_token_ids.tolist()
    joint = torch.zeros(CODES, CODES, CODES, dtype=torch.float64)
    with torch.no_grad():
        first = law([size, size])
        for a in range(CODES):
            second = law([size, size, codes[a]])
            for b in range(CODES):
                third = law([size, size, codes[a], codes[b], SMALL.eol_id])
                joint[a, b] = first[a] * second[b] * third
    return joint.flatten()


def chi_square_threshold(dof: int, z: float = 3.09) -> float:
    """Upper 0.1% point of chi-square (Wilson-Hilferty)."""
    return dof * (1 - 2 / (9 * dof) + z * math.sqrt(2 / (9 * dof))) ** 3


@pytest.mark.parametrize(
    ("spec", "exact"),
    [
        (SpeculativeSettings(window=4), True),
        (SpeculativeSettings(window=4, coupling=False), True),
        (SpeculativeSettings(window=4, mode="reference", nsigma=0.0), False),  # the residual quirk alone
        (SpeculativeSettings(window=4, mode="reference"), False),  # plus top-nσ
    ],
    ids=["exact-coupled", "exact-independent", "reference-residual", "reference"],
)
def test_exact_modes_sample_the_plain_law_and_the_reference_rule_does_not(
    small_model, joint_law, spec, exact
):
    engine = DecodeEngine(small_model, SMALL)
    config = DecodeSettings(
        image=SamplingSettings(top_k=TOP_K),
        cfg_scale=CFG,
        max_new_tokens=6,
        stop_at_image_end=True,
        speculative=spec,
    )
    result = engine.generate([PROMPT] * SAMPLES, config, list(range(SAMPLES)), [(32, 32)] * SAMPLES)
    tokens = torch.tensor(result.tokens)
    assert (tokens[:, 4] == SMALL.eol_id).all()
    codes = SMALL.code_of(tokens[:, [2, 3, 5]])
    counts = torch.bincount(codes[:, 0] * CODES**2 + codes[:, 1] * CODES + codes[:, 2], minlength=CODES**3)
    support = joint_law > 0
    assert counts[~support].sum() == 0  # nothing outside top-k, ever
    expected = SAMPLES * joint_law[support]
    statistic = float(((counts[support] - expected) ** 2 / expected).sum())
    threshold = chi_square_threshold(int(support.sum()) - 1)
    assert (statistic < threshold) == exact, (statistic, threshold)
    assert result.stats["accepted_per_forward"] > 1.2


# ------------------------------------------------------------------------------ coupled drafts, rollback


def gumbel_reference(model, prompt, size, seed, cfg, image) -> list[int]:
    """One token at a time without a cache: forced size, eol and end tokens; each code the argmax of the
    target log-probabilities plus the row's Gumbel noise at that token index."""
    (width, height), noise = size, CounterNoise([seed], "cpu")
    columns, rows = width // LAYOUT.latent_factor, height // LAYOUT.latent_factor
    out = [LAYOUT.size_token_id(height // 32), LAYOUT.size_token_id(width // 32)]
    for index in range(2, 2 + rows * (columns + 1) + 1):
        grid = index - 2
        if grid == rows * (columns + 1):
            out.append(END)
            continue
        if grid % (columns + 1) == columns:
            out.append(EOL)
            continue
        cond = model(torch.tensor([prompt + out]))[0, -1, LAYOUT.image_token_ids]
        uncond = model(torch.tensor([[START, *out]]))[0, -1, LAYOUT.image_token_ids]
        logp = target_logprobs(uncond + cfg * (cond - uncond), image)
        code = (logp.double() + noise.gumbel(torch.tensor([[index]]), len(logp))[0, 0]).argmax()
        out.append(int(LAYOUT.image_token_ids[code]))
    return out


def test_coupled_tokens_equal_a_one_token_gumbel_sampler_for_every_window():
    model = tiny_model(1).double()  # float64: window and one-token forwards round alike
    engine = DecodeEngine(model, LAYOUT)
    prompts = [t2i(50 + i) for i in range(4)]
    sizes, seeds = [(64, 32), (32, 64), (96, 32), (32, 32)], [5, 6, 7, 8]
    image = SamplingSettings(top_k=12, top_p=0.95)
    runs = {
        window: engine.generate(
            prompts,
            settings(SpeculativeSettings(window=window), cfg_scale=2.5, image=image),
            seeds,
            sizes,
        )
        for window in (1, 3, 16, 10**9)
    }
    assert runs[1].tokens == runs[3].tokens == runs[16].tokens == runs[10**9].tokens
    longest_grid = 4 * 13 + 1  # 96x32: 4 rows of 12 codes and an end-of-line each, then the end
    assert runs[10**9].stats["window"] == longest_grid  # a window past the call's grids is cut to them
    assert runs[16].stats["forward_passes"] < runs[1].stats["forward_passes"]
    with torch.no_grad():
        expected = gumbel_reference(model, prompts[0], sizes[0], seeds[0], 2.5, image)
    assert runs[16].tokens[0] == expected


def test_a_confident_model_accepts_whole_windows_and_rolls_back_the_rest():
    model = tiny_model(2)
    favour_token(model, int(LAYOUT.image_token_ids[7]))  # every code position: code 7, with probability ~1
    engine = DecodeEngine(model, LAYOUT)
    window, grid_tokens = 8, 8 * 9 + 1  # a 64x64 image: 8 rows of 8 codes and an eol each, then the end
    for coupling in (True, False):
        for init, most in (("random", 2 + 2 * math.ceil(grid_tokens / (window + 1))), ("above", 2 + 10)):
            spec = SpeculativeSettings(window=window, coupling=coupling, draft_init=init)
            result = engine.generate([t2i(50)], settings(spec, cfg_scale=2.0), [3], [(64, 64)])
            assert (decode_image_block([START, *result.tokens[0]], LAYOUT) == 7).all()
            # random: a full window, then one whose fresh random drafts fail, and so on. above: the first
            # window fails, the second fills row 0, then copies of the row above pass: 2 + 1 + 1 + 8 forwards
            assert result.stats["forward_passes"] <= most, (coupling, init, result.stats)


def test_above_drafts_copy_the_nearest_committed_code_up_the_column():
    model, spec = tiny_model(), SpeculativeSettings(window=12)
    one = torch.tensor([0])
    state = BlockState(*(one.clone() for _ in range(7)))
    stop_ids, noise, tally = torch.tensor([SEP]), CounterNoise([0], "cpu"), Tally.start([1024], 1040, "cpu")
    image = SamplingSettings()
    decoder = JacobiDecoder(
        model.model, model.lm_head.weight, LAYOUT, stop_ids, state, tally, noise, spec, image, 1.0, True
    )
    code = LAYOUT.image_token_ids
    # a 4-column grid (a line is 4 codes and an eol): row 0 done, row 1 up to its third code
    out = torch.tensor(
        [[LAYOUT.size_token_id(1), LAYOUT.size_token_id(1), *code[[1, 2, 3, 4]], EOL, *code[[5, 6]]]]
    )
    out = torch.cat([out, torch.zeros(1, 20, dtype=torch.long)], dim=1)
    kept, start, line = torch.tensor([9]), torch.tensor([7]), torch.tensor([5])
    decoder.drafts = torch.full((1, 11), 30)  # the last forward's predictions for the 6 first slots
    decoder.recycled = torch.tensor([6])
    decoder.informed = torch.tensor([[True] * 3 + [False] * 8])  # slots 3-5 were predicted over a row ahead
    decoder._fresh_drafts(kept, start, line, out)
    drafts = decoder.drafts[0].tolist()
    # grid indices 7..17: kept predictions, an eol slot (random), row 1's codes, then row 0's two rows up
    assert drafts[:3] == [30, 30, 30] and drafts[3:7] == [5, 6, 3, 4]
    assert drafts[8:] == [5, 6, 3]
    assert drafts[7] != 30  # fresh: a random code (the eol itself is forced)


@pytest.mark.parametrize(
    "spec", [EXACT, INDEPENDENT, REFERENCE, SpeculativeSettings(window=16, draft_init="random")]
)
@pytest.mark.parametrize("cfg", [1.0, 3.0])
def test_every_speculative_block_parses_at_its_requested_size(spec, cfg):
    engine = DecodeEngine(tiny_model(), LAYOUT)
    prompts = [t2i(50 + i) for i in range(len(SIZES))]
    image = SamplingSettings(temperature=0.9, top_k=10)
    result = engine.generate(prompts, settings(spec, cfg_scale=cfg, image=image), list(range(8)), SIZES)
    for (width, height), tokens in zip(SIZES, result.tokens, strict=True):
        assert decode_image_block([START, *tokens], LAYOUT).shape == (height // 8, width // 8)
        assert tokens[-1] == END
    assert result.stats["generated_tokens"] == sum(len(t) for t in result.tokens)
    assert result.stats["window_forwards"] > 0


@pytest.mark.parametrize("spec", [INDEPENDENT, REFERENCE])
def test_batched_generation_equals_each_prompt_alone(spec):
    engine = DecodeEngine(tiny_model(), LAYOUT)
    prompts = [t2i(50), t2i(51, 52), t2i(53)]
    sizes, seeds = [(64, 32), (32, 64), (96, 96)], [11, 12, 13]
    config = settings(spec, cfg_scale=3.0, image=SamplingSettings(top_k=8))
    together = engine.generate(prompts, config, seeds, sizes).tokens
    alone = [
        engine.generate([p], config, [s], [z]).tokens[0]
        for p, s, z in zip(prompts, seeds, sizes, strict=True)
    ]
    assert together == alone


def test_chat_replies_switch_between_text_steps_and_windows():
    model = tiny_model(2).double()
    favour_token(model, START)  # text opens images at once: a reply of several blocks and text between
    engine = DecodeEngine(model, LAYOUT)
    prompt = [LAYOUT.bos_id, 55, 56, SEP]
    replies = [
        engine.generate(
            [prompt],
            settings(
                SpeculativeSettings(window=w), cfg_scale=2.0, max_new_tokens=70, stop_at_image_end=False
            ),
            [4],
            [(32, 32)],
        )
        for w in (1, 6)
    ]
    tokens = replies[1].tokens[0]
    assert tokens == replies[0].tokens[0]
    blocks = find_image_blocks(tokens, LAYOUT)
    assert len(blocks) >= 2
    assert all(decode_image_block(tokens[a:b], LAYOUT).shape == (4, 4) for a, b in blocks)


def test_callback_reports_each_token_index_once_in_order():
    engine = DecodeEngine(tiny_model(), LAYOUT)
    steps: list[Step] = []
    result = engine.generate(
        [t2i(50), t2i(51)],
        settings(EXACT, cfg_scale=2.0),
        [0, 1],
        [(64, 32), (32, 32)],
        callback=lambda s: steps.append(Step(s.index, s.tokens.clone(), s.logits, s.mode.clone())),
    )
    assert [s.index for s in steps] == list(range(max(len(t) for t in result.tokens)))
    for b, tokens in enumerate(result.tokens):
        assert [int(s.tokens[b]) for s in steps[: len(tokens)]] == tokens


def test_seeds_beyond_int64_and_negative_seeds_work():
    engine = DecodeEngine(tiny_model(), LAYOUT)
    result = engine.generate([t2i(50)] * 2, settings(EXACT), [2**63, -7], [(32, 32)] * 2)
    assert all(decode_image_block([START, *t], LAYOUT).shape == (4, 4) for t in result.tokens)


def test_settings_are_checked_and_parsed():
    for bad in (dict(window=0), dict(mode="fast"), dict(draft_init="left"), dict(nsigma=-1.0)):
        with pytest.raises(LuminaError):
            SpeculativeSettings(**bad)
    assert speculative_settings(None) is None and speculative_settings(False) is None
    assert speculative_settings("off") is None
    assert speculative_settings(True) == SpeculativeSettings()
    assert SpeculativeSettings().draft_init == "above"
    assert SpeculativeSettings(mode="reference").draft_init == "random"
    assert speculative_settings("reference", window=8) == SpeculativeSettings(mode="reference", window=8)
    with pytest.raises(LuminaError, match="speculative"):
        speculative_settings(3)
    with pytest.raises(LuminaError, match="one of exact, reference or off, got 'bogus'"):
        speculative_settings("bogus")


def test_a_compiled_engine_draws_the_tokens_of_the_eager_one():
    model = tiny_model(1).double()  # float64: compiled and eager kernels round alike
    prompts, sizes, seeds = [t2i(50), t2i(51, 52)], [(64, 32), (32, 32)], [3, 4]
    compiled_engine = DecodeEngine(model, LAYOUT, compile=True)  # its one-token step has no graph break
    for spec in (None, EXACT):
        config = settings(spec, cfg_scale=2.0, image=SamplingSettings(top_k=12))
        eager = DecodeEngine(model, LAYOUT).generate(prompts, config, seeds, sizes)
        compiled = compiled_engine.generate(prompts, config, seeds, sizes)
        assert compiled.tokens == eager.tokens
    config = settings(None, cfg_scale=2.0, image=SamplingSettings(top_k=12))
    with torch._dynamo.config.patch(error_on_recompile=True):  # a call of the same shape reuses the step
        again = compiled_engine.generate([t2i(60), t2i(61, 62)], config, [7, 8], sizes)
    assert (
        again.tokens
        == DecodeEngine(model, LAYOUT).generate([t2i(60), t2i(61, 62)], config, [7, 8], sizes).tokens
    )
