"""Logit parity with transformers' ChameleonForConditionalGeneration: full forward, cached decoding,
multi-token steps, rollback, ragged batches and hidden slots, for pre-norm/swin-norm, MHA/GQA and both
q/k-norm layouts."""

import pytest
import torch
from model_fixtures import VOCAB, hf_logits, save_hf_folder, single_thread, tiny_hf_model

from lumina_mgpt.model import KVCache, load_transformer

pytest.importorskip("transformers")

TOL = 1e-4
CASES = [(swin, kv, rows) for swin in (False, True) for kv in (4, 2) for rows in (None, 1, 2)]


def case_id(case) -> str:
    swin, kv, rows = case
    layout = "hf-qknorm" if rows is None else f"mp{rows}-qknorm"
    return f"{'swin' if swin else 'prenorm'}-{'mha' if kv == 4 else 'gqa'}-{layout}"


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module", params=CASES, ids=case_id)
def models(request, tmp_path_factory):
    """(transformers model, our model loaded by `load_transformer` from its saved folder)."""
    swin, kv, rows = request.param
    hf = tiny_hf_model(swin, kv, rows)
    folder = save_hf_folder(hf, tmp_path_factory.mktemp("hf"), rows)
    return hf, load_transformer(folder)


def random_ids(*shape: int, seed: int = 1) -> torch.Tensor:
    return torch.randint(4, VOCAB, shape, generator=torch.Generator().manual_seed(seed))


def max_delta(ours: torch.Tensor, ref: torch.Tensor) -> float:
    assert ours.dtype == torch.float32 and ours.shape == ref.shape
    return (ours - ref).abs().max().item()


@torch.no_grad()
def test_full_forward(models):
    hf, ours = models
    ids = random_ids(2, 16)
    ref = hf_logits(hf, ids)
    assert ref.abs().max() > 1.0  # the random model is far from uniform, so a wrong op shows
    assert max_delta(ours(ids), ref) <= TOL
    positions = torch.tensor([[3, 4, 5, 9, 10, 11, 12, 13], [0, 1, 2, 3, 4, 5, 6, 7]])
    assert max_delta(ours(ids[:, :8], positions=positions), hf_logits(hf, ids[:, :8], positions)) <= TOL


@torch.no_grad()
def test_prefill_then_token_by_token(models):
    hf, ours = models
    ids = random_ids(2, 16)
    cache = KVCache(ours.config, batch_size=2, max_length=20)
    steps = [ours(ids[:, :6], cache)] + [ours(ids[:, t : t + 1], cache) for t in range(6, 16)]
    assert max_delta(torch.cat(steps, dim=1), hf_logits(hf, ids)) <= TOL
    assert cache.lengths.tolist() == [16, 16] and cache.positions.tolist() == [16, 16]


@torch.no_grad()
def test_multi_token_steps(models):
    hf, ours = models
    ids = random_ids(2, 17)
    cache = KVCache(ours.config, batch_size=2, max_length=17)
    steps, start = [ours(ids[:, :3], cache)], 3
    for k in (2, 3, 4, 5):
        steps.append(ours(ids[:, start : start + k], cache))
        start += k
    assert max_delta(torch.cat(steps, dim=1), hf_logits(hf, ids)) <= TOL


@torch.no_grad()
def test_rollback_equals_recompute(models):
    hf, ours = models
    ids = random_ids(2, 14)
    ref = hf_logits(hf, ids)
    cache = KVCache(ours.config, batch_size=2, max_length=14)
    ours(ids[:, :6], cache)
    draft = torch.cat([ids[:, 6:7], random_ids(2, 3, seed=7)], dim=1)  # one right token, three wrong
    assert max_delta(ours(draft, cache)[:, 0], ref[:, 6]) <= TOL
    cache.rollback(3)
    assert cache.lengths.tolist() == [7, 7] and cache.positions.tolist() == [7, 7]
    after = torch.cat([ours(ids[:, 7:10], cache), ours(ids[:, 10:11], cache)], dim=1)
    assert max_delta(after, ref[:, 7:11]) <= TOL


@torch.no_grad()
def test_per_row_rollback(models):
    hf, ours = models
    ids = random_ids(2, 12)
    cache = KVCache(ours.config, batch_size=2, max_length=12)
    ours(ids[:, :6], cache)
    draft = ids[:, 6:10].clone()
    draft[0, 2:] = random_ids(2, seed=8)  # row 0 keeps 2 of 4 drafted tokens
    draft[1, :] = random_ids(4, seed=9)  # row 1 keeps none
    ours(draft, cache)
    cache.rollback(torch.tensor([2, 4]))
    assert cache.lengths.tolist() == [8, 6] and cache.positions.tolist() == [8, 6]
    step = ours(torch.stack([ids[0, 8:9], ids[1, 6:7]]), cache)
    assert max_delta(step[0, 0], hf_logits(hf, ids[:1, :9])[0, 8]) <= TOL
    assert max_delta(step[1, 0], hf_logits(hf, ids[1:, :7])[0, 6]) <= TOL
    cache.rollback(1, rows=[1])  # drop row 1's last token only, then feed it again
    assert cache.lengths.tolist() == [9, 6]
    step = ours(torch.stack([ids[0, 9:10], ids[1, 6:7]]), cache)
    assert max_delta(step[0, 0], hf_logits(hf, ids[:1, :10])[0, 9]) <= TOL
    assert max_delta(step[1, 0], hf_logits(hf, ids[1:, :7])[0, 6]) <= TOL


@torch.no_grad()
def test_ragged_batch_equals_rows_alone(models):
    hf, ours = models
    lengths, total = [5, 9, 7], 13
    rows = [random_ids(1, total, seed=20 + b)[0] for b in range(3)]
    prompts = torch.zeros(3, max(lengths), dtype=torch.long)  # right-padded with id 0
    for b, n in enumerate(lengths):
        prompts[b, :n] = rows[b][:n]
    cache = KVCache(ours.config, batch_size=3, max_length=16)
    prefill = ours(prompts, cache)
    cache.set_lengths(lengths)
    assert cache.positions.tolist() == lengths
    one = ours(torch.stack([rows[b][n : n + 1] for b, n in enumerate(lengths)]), cache)
    three = ours(torch.stack([rows[b][n + 1 : n + 4] for b, n in enumerate(lengths)]), cache)
    for b, n in enumerate(lengths):
        ref = hf_logits(hf, rows[b][None, : n + 4])[0]
        assert max_delta(prefill[b, :n], ref[:n]) <= TOL
        assert max_delta(one[b, 0], ref[n]) <= TOL
        assert max_delta(three[b], ref[n + 1 : n + 4]) <= TOL


@torch.no_grad()
@pytest.mark.parametrize("restart_positions", [False, True], ids=["positions-kept", "positions-restart"])
def test_hidden_prefix(models, restart_positions):
    """Row 1 repeats row 0's tokens with the first `hidden` prompt slots masked (v2-style CFG): it must equal
    the same tokens computed with those slots absent, at kept (or, v2-style, restarted) positions."""
    hf, ours = models
    prompt, hidden, total = 8, 7, 12
    ids = random_ids(1, total, seed=30).expand(2, total)
    cache = KVCache(ours.config, batch_size=2, max_length=total)
    cache.hide(1, 0, hidden)
    positions = None
    if restart_positions:
        positions = torch.stack([torch.arange(prompt), (torch.arange(prompt) - hidden).clamp(min=0)])
    logits = [ours(ids[:, :prompt], cache, positions)] + [
        ours(ids[:, t : t + 1], cache) for t in range(prompt, total)
    ]
    logits = torch.cat(logits, dim=1)
    assert max_delta(logits[0], hf_logits(hf, ids[:1])[0]) <= TOL
    visible = ids[1:, hidden:]
    kept = None if restart_positions else torch.arange(hidden, total)[None]
    ref = hf_logits(hf, visible, kept)[0]
    assert max_delta(logits[1, hidden:], ref) <= TOL
    assert (logits[1, hidden:] - logits[0, hidden:]).abs().max() > 1e-2  # hiding the prefix changed something
