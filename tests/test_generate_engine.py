"""The decode loop on tiny random models: Uni-Rep validity, forced sizes, batched CFG against a two-pass
reference, batched == alone, image prefixes, several images per response, stopping, text/image settings."""

from dataclasses import replace

import pytest
import torch
from test_generate_helpers import TEXT_IDS, favour_token, one_thread, tiny_layout, tiny_model

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.generate.engine import DecodeEngine, DecodeSettings, Step
from lumina_mgpt.generate.sampling import SamplingSettings
from lumina_mgpt.generate.speculative import SpeculativeSettings
from lumina_mgpt.unirep import decode_image_block, encode_image_block, find_image_blocks

LAYOUT = tiny_layout()
START, END, SEP = LAYOUT.image_start_id, LAYOUT.image_end_id, LAYOUT.turn_sep_id
SIZES = [(32, 32), (64, 32), (32, 128), (128, 64), (96, 96), (128, 32), (32, 64), (64, 128)]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_thread()


@pytest.fixture(scope="module")
def engine():
    return DecodeEngine(tiny_model(), LAYOUT)


def t2i_prompt(*text: int) -> list[int]:
    """BOS, some text, the turn separator and an opened image (the pipeline's text-to-image prompt)."""
    return [LAYOUT.bos_id, *text, SEP, START]


def settings(**kw) -> DecodeSettings:
    kw.setdefault("max_new_tokens", 200)
    return DecodeSettings(**kw)


def test_every_block_parses_at_its_requested_size_in_one_mixed_batch(engine):
    prompts = [t2i_prompt(50 + i) for i in range(len(SIZES))]
    result = engine.generate(prompts, settings(cfg_scale=2.0, stop_at_image_end=True), list(range(8)), SIZES)
    for (width, height), tokens in zip(SIZES, result.tokens, strict=True):
        codes = decode_image_block([START, *tokens], LAYOUT)
        assert codes.shape == (height // 8, width // 8)
        assert tokens[-1] == END
    assert result.stats["generated_tokens"] == sum(len(t) for t in result.tokens)
    assert result.stats["forward_passes"] == max(len(t) for t in result.tokens)


def test_sampled_sizes_still_give_valid_blocks():
    layout = tiny_layout(max_units=3)
    engine = DecodeEngine(tiny_model(seed=2), layout)
    result = engine.generate(
        [t2i_prompt(60)] * 6,
        settings(force_size=False, max_new_tokens=500, stop_at_image_end=True),
        list(range(6)),
    )
    shapes = {tuple(decode_image_block([START, *t], layout).shape) for t in result.tokens}
    assert all(1 <= h // 4 <= 3 and 1 <= w // 4 <= 3 for h, w in shapes)
    assert len(shapes) > 1  # the model chose, not us


def record_steps():
    steps: list[Step] = []
    return steps, lambda step: steps.append(
        Step(step.index, step.tokens.clone(), step.logits.clone(), step.mode.clone())
    )


def reference_logits(model, prompt: list[int], generated: list[int], scale: float) -> torch.Tensor:
    """Two plain forwards per step, no cache: `uncond + s·(cond − uncond)` where the next token is an image
    code, the conditional logits elsewhere; the unconditional context is the open image block only."""
    rows = []
    for t, token in enumerate(generated):
        context = prompt + generated[:t]
        cond = model(torch.tensor([context]))[0, -1]
        if token not in LAYOUT.image_token_ids.tolist():
            rows.append(cond)
            continue
        start = max(i for i, x in enumerate(context) if x == START)
        uncond = model(torch.tensor([context[start:]]))[0, -1]
        rows.append(uncond + scale * (cond - uncond))
    return torch.stack(rows)


def test_batched_cfg_equals_the_two_pass_reference():
    engine = DecodeEngine(tiny_model().double(), LAYOUT)  # float64: only the float32 logits round
    prompts = [t2i_prompt(50, 51, 52), t2i_prompt(60)]
    steps, callback = record_steps()
    result = engine.generate(
        prompts,
        settings(cfg_scale=3.5, stop_at_image_end=True),
        [3, 4],
        [(64, 32), (32, 64)],
        callback=callback,
    )
    for b, (prompt, tokens) in enumerate(zip(prompts, result.tokens, strict=True)):
        recorded = torch.stack([s.logits[b] for s in steps[: len(tokens)]])
        expected = reference_logits(engine.model, prompt, tokens, 3.5)
        assert (recorded - expected).abs().max() <= 1e-5


def test_unconditional_context_restarts_at_every_image_of_a_response():
    model = tiny_model(seed=2).double()
    favour_token(model, START)  # in text the model opens an image at once; images follow one another
    engine = DecodeEngine(model, LAYOUT)
    prompt = [LAYOUT.bos_id, 55, 56, SEP]
    steps, callback = record_steps()
    result = engine.generate(
        [prompt], settings(cfg_scale=2.0, max_new_tokens=60), [0], [(32, 32)], callback=callback
    )
    tokens = result.tokens[0]
    blocks = find_image_blocks(tokens, LAYOUT)
    assert len(blocks) >= 2
    assert all(decode_image_block(tokens[a:b], LAYOUT).shape == (4, 4) for a, b in blocks)
    recorded = torch.stack([s.logits[0] for s in steps])
    assert (recorded - reference_logits(model, prompt, tokens, 2.0)).abs().max() <= 1e-5


def test_batched_generation_equals_each_prompt_alone(engine):
    prompts = [t2i_prompt(50), t2i_prompt(51, 52, 53, 54), t2i_prompt(55, 56)]
    rows = [p for p in prompts for _ in range(2)]  # two images per prompt
    sizes = [(64, 32), (64, 32), (32, 32), (32, 32), (32, 64), (32, 64)]
    seeds = list(range(10, 16))
    config = settings(cfg_scale=3.0, stop_at_image_end=True, image=SamplingSettings(top_k=8, top_p=0.9))
    together = engine.generate(rows, config, seeds, sizes).tokens
    alone = [
        engine.generate([p], config, [s], [z]).tokens[0] for p, s, z in zip(rows, seeds, sizes, strict=True)
    ]
    assert together == alone
    assert together[0] != together[1]  # same prompt, different seeds


def test_cfg_scale_one_runs_only_the_conditional_rows(engine):
    batch_sizes = []
    hook = engine.model.model.embed_tokens.register_forward_hook(
        lambda m, i, o: batch_sizes.append(o.shape[0])
    )
    try:
        engine.generate([t2i_prompt(50)] * 2, settings(stop_at_image_end=True), [0, 1], [(32, 32)] * 2)
        assert set(batch_sizes) == {2}
        batch_sizes.clear()
        engine.generate(
            [t2i_prompt(50)] * 2, settings(cfg_scale=2.0, stop_at_image_end=True), [0, 1], [(32, 32)] * 2
        )
        assert set(batch_sizes) == {4}
    finally:
        hook.remove()


def test_an_image_prefix_is_continued_to_the_full_canvas(engine):
    upper = torch.randint(0, 32, (4, 8))  # the upper half of a 64x64 canvas
    prefix = encode_image_block(upper, LAYOUT)[3:-1].tolist()
    header = [START, LAYOUT.size_token_id(2), LAYOUT.size_token_id(2)]
    prompt = [LAYOUT.bos_id, 50, SEP, *header, *prefix]
    result = engine.generate([prompt], settings(cfg_scale=2.0, stop_at_image_end=True), [0])
    codes = decode_image_block(header + prefix + result.tokens[0], LAYOUT)
    assert codes.shape == (8, 8) and torch.equal(codes[:4], upper)
    assert len(result.tokens[0]) == 4 * 9 + 1


def test_text_is_greedy_and_images_use_their_own_settings(engine):
    steps, callback = record_steps()
    text_mask = torch.full((LAYOUT.vocab_size,), float("-inf"))
    text_mask[[*TEXT_IDS, START, SEP, 0, 1, 2]] = 0
    config = settings(
        max_new_tokens=12, text=SamplingSettings(temperature=0.0), image=SamplingSettings(top_k=1)
    )
    result = engine.generate([[LAYOUT.bos_id, 60, 61]], config, [7], callback=callback)
    for step, token in zip(steps, result.tokens[0], strict=False):
        assert token == int((step.logits[0] + text_mask).argmax())
    steps.clear()
    result = engine.generate([t2i_prompt(60)], config, [7], [(32, 32)], callback=callback)
    codes = LAYOUT.image_token_ids
    for step, token in zip(steps, result.tokens[0], strict=False):
        if token in codes.tolist():
            assert token == int(codes[step.logits[0, codes].argmax()])


def test_stops_at_the_turn_separator_and_at_the_budget():
    model = tiny_model(seed=3)
    favour_token(model, SEP)
    engine = DecodeEngine(model, LAYOUT)
    result = engine.generate([[LAYOUT.bos_id, 50], [LAYOUT.bos_id, 51, 52]], settings(), [0, 1])
    assert result.tokens == [[SEP], [SEP]] and result.stats["forward_passes"] == 1
    model = tiny_model(seed=3)
    favour_token(model, 70)
    result = DecodeEngine(model, LAYOUT).generate([[LAYOUT.bos_id]], settings(max_new_tokens=5), [0])
    assert len(result.tokens[0]) == 5


@pytest.mark.parametrize("speculative", [None, SpeculativeSettings(window=4)])
def test_each_row_stops_at_its_own_budget(speculative):
    """`budgets[b]` limits row b as `max_new_tokens` limits it alone; the other rows go on."""
    model = tiny_model(seed=3)
    favour_token(model, START)  # images from the start: windows for the speculative engine
    engine = DecodeEngine(model, LAYOUT)
    prompts, sizes = [[LAYOUT.bos_id, 50], [LAYOUT.bos_id, 51, 52]], [(32, 32), (64, 32)]
    config = settings(cfg_scale=2.0, max_new_tokens=40, speculative=speculative)
    together = engine.generate(prompts, config, [0, 1], sizes, budgets=[9, 40]).tokens
    alone = [
        engine.generate([prompts[0]], replace(config, max_new_tokens=9), [0], sizes[:1]).tokens[0],
        engine.generate([prompts[1]], config, [1], sizes[1:]).tokens[0],
    ]
    assert together == alone and [len(t) for t in together] == [9, 40]
    with pytest.raises(LuminaError, match=r"budget must lie in 1\.\.max_new_tokens"):
        engine.generate(prompts, config, [0, 1], sizes, budgets=[9, 41])
    with pytest.raises(LuminaError, match="2 prompts, 2 seeds, 2 sizes and 1 budgets"):
        engine.generate(prompts, config, [0, 1], sizes, budgets=[9])


@pytest.mark.parametrize("speculative", [None, SpeculativeSettings(window=8)])
@pytest.mark.parametrize(
    ("size", "message"),
    [((48, 32), "multiple of 32"), ((-32, 32), "positive multiple"), ((32, 288), "outside 1..8")],
)
def test_impossible_sizes_are_refused(engine, size, message, speculative):
    with pytest.raises(LuminaError, match=message):
        engine.generate([t2i_prompt(50)], settings(speculative=speculative), [0], [size])


@pytest.mark.parametrize("cfg_scale", [-1.0, float("nan"), float("inf"), 1e308])
def test_guidance_scales_that_overflow_are_refused(cfg_scale):
    with pytest.raises(LuminaError, match=r"cfg_scale must be in 0\.\.1000"):
        DecodeSettings(cfg_scale=cfg_scale)
