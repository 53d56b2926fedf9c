"""KVCache bookkeeping and errors, and transformer behaviours that need no reference model."""

import pytest
import torch
from model_fixtures import single_thread

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.model import ChameleonConfig, ChameleonTransformer, KVCache
from lumina_mgpt.model.kv_cache import SPAN_MULTIPLE


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with single_thread():
        yield


def tiny_config(**overrides) -> ChameleonConfig:
    fields = dict(
        vocab_size=97,
        hidden_size=32,
        intermediate_size=48,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        initializer_range=0.2,
    )
    return ChameleonConfig(**(fields | overrides))


def tiny_model(**overrides) -> ChameleonTransformer:
    torch.manual_seed(0)
    model = ChameleonTransformer(tiny_config(**overrides))
    model.init_weights()
    return model.eval()


@pytest.fixture(scope="module")
def model() -> ChameleonTransformer:
    return tiny_model()


def ids(*shape: int, seed: int = 0) -> torch.Tensor:
    return torch.randint(0, 97, shape, generator=torch.Generator().manual_seed(seed))


def test_cache_layout_and_mask_span(model):
    cache = KVCache(model.config, batch_size=2, max_length=100)
    assert len(cache.keys) == 2 and cache.keys[0].shape == (2, 2, 100, 8)  # layers of [B, kv_heads, S, hd]
    assert cache.key_mask.all() and cache.lengths.tolist() == [0, 0]
    positions, mask = cache.begin(5)
    assert positions.tolist() == [list(range(5))] * 2
    assert mask.shape == (2, 1, 5, SPAN_MULTIPLE)  # the used slots rounded up, not the whole buffer
    assert torch.equal(mask[0, 0, :, :5], torch.ones(5, 5).tril().bool()) and not mask[:, :, :, 5:].any()
    cache.set_lengths([3, 5])
    cache.hide(1, 1, 3)
    positions, mask = cache.begin(2)
    assert positions.tolist() == [[3, 4], [5, 6]]
    assert mask[0, 0, :, :7].long().tolist() == [[1, 1, 1, 1, 0, 0, 0], [1, 1, 1, 1, 1, 0, 0]]
    assert mask[1, 0, :, :7].long().tolist() == [[1, 0, 0, 1, 1, 1, 0], [1, 0, 0, 1, 1, 1, 1]]
    cache.begin(90)
    assert cache.begin(1)[1].shape == (2, 1, 1, 100)  # capped at max_length


@torch.no_grad()
def test_overflow_names_row_and_capacity(model):
    cache = KVCache(model.config, batch_size=2, max_length=8)
    model(ids(2, 6), cache)
    cache.set_lengths([6, 3])
    with pytest.raises(LuminaError, match=r"^KV cache overflow: row 0 needs 9 slots, capacity 8$"):
        model(ids(2, 3), cache)
    assert cache.lengths.tolist() == [6, 3]  # a refused step changes nothing
    model(ids(2, 2), cache)
    assert cache.lengths.tolist() == [8, 5]


def test_bad_bookkeeping_calls_raise(model):
    cache = KVCache(model.config, batch_size=2, max_length=8)
    cache.begin(4)
    with pytest.raises(LuminaError, match="rollback of 5 tokens"):
        cache.rollback(5)
    with pytest.raises(LuminaError, match="rollback"):
        cache.rollback(torch.tensor([1, 5]))
    with pytest.raises(LuminaError, match="set_lengths"):
        cache.set_lengths([2, 6])
    with pytest.raises(LuminaError, match="expected 2 lengths"):
        cache.set_lengths([2])
    with pytest.raises(LuminaError, match=r"hide: slot range 3\.\.9"):
        cache.hide(0, 3, 9)
    with pytest.raises(LuminaError, match=r"positions must have shape \(2, 1\)"):
        cache.begin(1, torch.zeros(2, 2, dtype=torch.long))
    assert cache.lengths.tolist() == [4, 4]


@torch.no_grad()
def test_rolled_back_slots_forget_hiding_and_reset_restores(model):
    tokens = ids(1, 10, seed=3)
    fresh = model(tokens, KVCache(model.config, batch_size=1, max_length=10))
    cache = KVCache(model.config, batch_size=1, max_length=10)
    model(tokens[:, :6], cache)
    cache.hide(0, 3, 6)
    cache.rollback(4)  # slots 2..5 dropped; 3..5 must become visible again
    assert cache.key_mask[0].tolist() == [True] * 10
    assert (model(tokens[:, 2:10], cache) - fresh[:, 2:]).abs().max() < 1e-5
    cache.hide(0, 7, 9)
    cache.rollback(torch.tensor([3]))  # the per-row path forgets too
    assert cache.key_mask[0].tolist() == [True] * 10
    cache.hide(0, 0, 4)
    cache.reset()
    assert cache.lengths.tolist() == [0] and cache.key_mask.all()
    assert (model(tokens, cache) - fresh).abs().max() < 1e-5


@torch.no_grad()
def test_set_lengths_with_explicit_positions(model):
    """A right-padded prefill whose rows start at other positions (e.g. a resumed context)."""
    tokens = ids(2, 6, seed=4)
    cache = KVCache(model.config, batch_size=2, max_length=8)
    start = torch.tensor([[10, 11, 12, 13, 14, 15], [0, 1, 2, 3, 4, 5]])
    model(tokens, cache, start)
    cache.set_lengths([4, 6], positions=torch.tensor([14, 6]))
    step = model(tokens[:, :1], cache)
    alone = model(torch.cat([tokens[:1, :4], tokens[:1, :1]], 1), positions=torch.arange(10, 15)[None])
    assert (step[0, 0] - alone[0, -1]).abs().max() < 1e-5
    assert cache.positions.tolist() == [15, 7]


@torch.no_grad()
def test_residual_dropout_only_in_training():
    model = tiny_model(dropout=0.5)
    tokens = ids(1, 8)
    evaluated = model(tokens)
    assert torch.equal(evaluated, model(tokens))
    model.train()
    assert not torch.allclose(model(tokens), evaluated)
    undropped = tiny_model(dropout=0.0).train()
    assert torch.equal(undropped(tokens), evaluated)


def test_training_step_backpropagates():
    model = tiny_model().train()
    tokens = ids(2, 8)
    logits = model(tokens[:, :-1])
    loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 97), tokens[:, 1:].reshape(-1))
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in model.parameters())
    assert isinstance(model.model.layers, torch.nn.ModuleList) and len(model.model.layers) == 2


@torch.no_grad()
def test_meta_construction_then_init_weights():
    with torch.device("meta"):
        model = ChameleonTransformer(tiny_config(swin_norm=True))
    model.to_empty(device="cpu")
    model.init_weights()
    reference = ChameleonTransformer(tiny_config(swin_norm=True))
    assert torch.equal(model.model.rotary.inv_freq, reference.model.rotary.inv_freq)
    logits = model(ids(1, 5))
    assert logits.isfinite().all() and logits.std() > 0.1


@torch.no_grad()
def test_bfloat16_returns_float32_logits(model):
    tokens = ids(2, 7)
    reference = model(tokens)
    half = tiny_model().to(torch.bfloat16)
    assert torch.equal(half.model.rotary.inv_freq, model.model.rotary.inv_freq)  # kept in float32
    cache = KVCache(half.config, batch_size=2, max_length=7, dtype=torch.bfloat16)
    logits = torch.cat([half(tokens[:, :4], cache), half(tokens[:, 4:], cache)], dim=1)
    assert logits.dtype == torch.float32
    assert (logits - reference).abs().max() < 0.1 * reference.abs().max()
