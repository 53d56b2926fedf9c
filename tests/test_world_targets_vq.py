"""Every omni task's target images survive encode -> decode with the shipped image tokenizer, under the task's own
scorer: a model that reproduced the training targets' codes exactly would pass the benchmark.

The dual-panel targets (a scene half over a black map half, or the reverse) came back broken from the first
decoder, which normalises its features over the whole image (GroupNorm): 0-30 % passed. The shipped decoder was
retrained on panels with the encoder and codebook frozen (configs/vq/shapes-patch-panels.yaml: every image keeps
its codes). Measured with `python bench/vq_targets.py --tokenizer OLD --tokenizer NEW --items 10`: on 128x128
and 96x160 the four dual kinds pass 70-100 % (were 0-40 %). On 160x96 they pass 30-70 %, as the old decoder
did half by half: its halves are 160x48 scenes whose small objects the frozen 8-px codes do not hold (the
detector agrees on 40 % of plain 160x48 scenes after reconstruction, 97-100 % on 96x80). Only a new encoder
(new codes, so a retrained transformer) lifts that canvas: a strict xfail until then.
"""

import pytest
from train_fixtures import one_thread  # noqa: F401 (fixture)

from lumina_mgpt.vq import load_image_tokenizer
from lumina_mgpt.vq.loading import SHAPES_TOKENIZER
from lumina_mgpt.world.evaluate import DEFAULT_CANVASES
from lumina_mgpt.world.roundtrip import IMAGE_KINDS, target_pass_rates

ITEMS = 6  # per canvas; bench/vq_targets.py measures more
FLOOR = 0.8  # pass rate per canvas (frames: 95 % measured on 160x96; every other kind 100 %)
DUAL_PANEL = [kind for kind in IMAGE_KINDS if kind.startswith("dual_")]
PANEL_FLOOR = 0.6  # dual panels where the halves fit the codes: 67-100 % at 6 items (was 0-30 %)
SMALL_HALVES = (160, 96)  # halves of 160x48
PANEL_CANVASES = [canvas for canvas in DEFAULT_CANVASES if canvas != SMALL_HALVES]


@pytest.fixture(scope="module")
def tokenizer():
    return load_image_tokenizer(SHAPES_TOKENIZER)


@pytest.mark.parametrize("kind", [kind for kind in IMAGE_KINDS if kind not in DUAL_PANEL])
def test_target_images_survive_the_shipped_tokenizer(tokenizer, kind):
    rates = target_pass_rates(tokenizer, kind, ITEMS, DEFAULT_CANVASES)
    assert min(rates.values()) >= FLOOR, f"{kind}: reconstructed targets pass {rates}"


@pytest.mark.parametrize("kind", DUAL_PANEL)
def test_dual_panel_targets_survive_where_their_halves_fit_the_codes(tokenizer, kind):
    rates = target_pass_rates(tokenizer, kind, ITEMS, PANEL_CANVASES)
    assert min(rates.values()) >= PANEL_FLOOR, f"{kind}: reconstructed targets pass {rates}"


@pytest.mark.xfail(strict=True, reason="160x48 halves: small objects lost by the frozen 8-px codes (30-70 %)")
def test_dual_panel_targets_survive_on_160x96(tokenizer):
    rates = {kind: target_pass_rates(tokenizer, kind, ITEMS, [SMALL_HALVES]) for kind in DUAL_PANEL}
    assert min(r["160x96"] for r in rates.values()) >= FLOOR, f"reconstructed targets pass {rates}"
