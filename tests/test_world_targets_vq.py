"""Every omni task's target images survive encode -> decode with the shipped image tokenizer, under the task's own
scorer: a model that reproduced the training targets' codes exactly would pass the benchmark.

The dual-panel targets (a grey scene half over a black map half) do not: the shipped decoder normalises its
features over the whole image (GroupNorm), and a half-black canvas moves those statistics away from the plain
scenes and maps it was trained on. Measured with `python bench/vq_targets.py --items 20` (20 items per canvas):
dual_pair_seg and dual_pair_edge pass 0 % on every canvas, dual_i2i_seg 15 % and dual_i2i_edge 20-30 %;
decoding each half apart (the same codes, as the encoder is patch-local) gives 45-100 % (pair) and 40-95 %
(i2i), the 160x96 canvas (48 px halves) worst. Those kinds are strict xfails until the tokenizer is retrained on panels.
"""

import pytest
from train_fixtures import one_thread  # noqa: F401 (fixture)

from lumina_mgpt.vq import load_image_tokenizer
from lumina_mgpt.vq.loading import SHAPES_TOKENIZER
from lumina_mgpt.world.evaluate import DEFAULT_CANVASES
from lumina_mgpt.world.roundtrip import IMAGE_KINDS, target_pass_rates

ITEMS = 6  # per canvas; bench/vq_targets.py measures more
FLOOR = 0.8  # pass rate per canvas (frames: 95 % measured on 160x96; every other kind 100 %)
DUAL_PANEL = {
    "dual_pair_seg": "0 % pass (20 items per canvas)",
    "dual_pair_edge": "0 % pass (20 items per canvas)",
    "dual_i2i_seg": "15 % pass (20 items per canvas)",
    "dual_i2i_edge": "20-30 % pass (20 items per canvas)",
}


@pytest.fixture(scope="module")
def tokenizer():
    return load_image_tokenizer(SHAPES_TOKENIZER)


KINDS = [
    pytest.param(k, marks=pytest.mark.xfail(strict=True, reason=f"shipped tokenizer: {DUAL_PANEL[k]}"))
    if k in DUAL_PANEL
    else k
    for k in IMAGE_KINDS
]


@pytest.mark.parametrize("kind", KINDS)
def test_target_images_survive_the_shipped_tokenizer(tokenizer, kind):
    rates = target_pass_rates(tokenizer, kind, ITEMS, DEFAULT_CANVASES)
    assert min(rates.values()) >= FLOOR, f"{kind}: reconstructed targets pass {rates}"
