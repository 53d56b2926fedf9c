"""Weight-only quantisation on CPU: int8 decoder linears compute exactly with their dequantised weights (within
half a step of the originals), the head and embeddings stay, speculative decoding runs on them; int4 and unknown
modes are refused with one-line errors."""

import copy

import pytest
import torch
from test_generate_helpers import one_thread, tiny_layout, tiny_model

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.generate.engine import DecodeEngine, DecodeSettings
from lumina_mgpt.generate.speculative import SpeculativeSettings
from lumina_mgpt.model.quantize import quantize_weights
from lumina_mgpt.unirep import decode_image_block

LAYOUT = tiny_layout()
LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj", "mlp.gate_proj")
LINEARS += ("mlp.up_proj", "mlp.down_proj")


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_thread()


def test_int8_layers_compute_with_their_dequantised_weights():
    model = tiny_model(0, hidden_size=64, intermediate_size=128)
    original = copy.deepcopy(model)
    quantize_weights(model, "int8")
    reference = copy.deepcopy(original)
    with torch.no_grad():
        for layer, (before, after) in enumerate(zip(original.model.layers, model.model.layers, strict=True)):
            for name in LINEARS:
                weight = after.get_submodule(name).weight
                assert weight.qdata.dtype == torch.int8, (layer, name)
                dequantised = weight.qdata.float() * weight.scale
                step = before.get_submodule(name).weight.abs().amax(-1, keepdim=True) / 127
                assert ((dequantised - before.get_submodule(name).weight).abs() <= step / 2 + 1e-6).all()
                reference.model.layers[layer].get_submodule(name).weight.copy_(dequantised)
        ids = torch.randint(0, LAYOUT.vocab_size, (2, 9))
        assert (model(ids) - reference(ids)).abs().max() < 1e-4
        assert (model(ids) - original(ids)).abs().max() > 1e-3  # quantisation did change something
    assert torch.equal(model.lm_head.weight, original.lm_head.weight)
    assert torch.equal(model.model.embed_tokens.weight, original.model.embed_tokens.weight)


def test_speculative_decoding_runs_on_int8_weights():
    engine = DecodeEngine(quantize_weights(tiny_model(), "int8"), LAYOUT)
    settings = DecodeSettings(
        cfg_scale=2.0, max_new_tokens=200, stop_at_image_end=True, speculative=SpeculativeSettings(window=6)
    )
    prompt = [LAYOUT.bos_id, 50, LAYOUT.turn_sep_id, LAYOUT.image_start_id]
    result = engine.generate([prompt] * 2, settings, [0, 1], [(64, 32), (32, 64)])
    shapes = [decode_image_block([LAYOUT.image_start_id, *t], LAYOUT).shape for t in result.tokens]
    assert shapes == [(4, 8), (8, 4)]


@pytest.mark.parametrize(
    ("mode", "message"), [("int4", "int4 weights need a CUDA GPU"), ("fp8", "one of int8")]
)
def test_unsupported_modes_are_refused(mode, message):
    with pytest.raises(LuminaError, match=message):
        quantize_weights(tiny_model(), mode)
