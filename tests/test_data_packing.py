"""Packed rows with document masks: every sample once, little padding, and exactly the losses and gradients of
the samples trained one by one."""

import numpy as np
import pytest
import torch
from train_fixtures import one_thread  # noqa: F401 (fixture)

from lumina_mgpt.data.batch import collate, micro_batches
from lumina_mgpt.data.packing import PAD_DOCUMENT, collate_packed, pack_rows, padding_fraction
from lumina_mgpt.data.shards import Sample
from lumina_mgpt.model.config import ChameleonConfig
from lumina_mgpt.model.transformer import ChameleonTransformer, Documents
from lumina_mgpt.train.losses import count_targets, lm_losses

VOCAB = 97


def _sample(rng: np.random.Generator, length: int, image_span: bool = False) -> Sample:
    ids = rng.integers(1, VOCAB, size=length).astype(np.int32)
    target = np.zeros(length, dtype=bool)
    target[length // 3 :] = True  # a prompt, then the reply
    span = (length // 3, length) if image_span else (0, 0)
    return Sample(ids=ids, target=target, image_span=span)


def _samples(seed: int = 0, n: int = 9) -> list[Sample]:
    rng = np.random.default_rng(seed)
    samples = [_sample(rng, int(rng.integers(5, 60)), image_span=k % 3 == 0) for k in range(n)]
    samples[0] = samples[0].image_only()  # a context-dropped sample: all targets, no BOS
    return samples


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    config = ChameleonConfig.from_dict(
        dict(
            vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2, num_attention_heads=4
        )
    )
    model = ChameleonTransformer(config)
    model.init_weights()
    with torch.no_grad():  # non-trivial norms too
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
    return model


def test_rows_hold_every_sample_once_within_the_row_length():
    samples = _samples(1, 40)
    rows = pack_rows(samples, 128)
    assert sorted(id(s) for row in rows for s in row) == sorted(id(s) for s in samples)
    assert all(sum(len(s) for s in row) <= 128 for row in rows)
    lengths = [sum(len(s) for s in row) for row in rows]
    assert lengths == sorted(lengths, reverse=True)
    # first fit decreasing: no two rows could have been one
    assert all(a + b > 128 for i, a in enumerate(lengths) for b in lengths[i + 1 :])
    too_long = _sample(np.random.default_rng(2), 200)
    assert len(pack_rows([too_long, *samples[:3]], 128)[0]) == 1  # a row of its own


def test_collated_rows_restart_positions_and_keep_documents_apart():
    rng = np.random.default_rng(3)
    a, b = _sample(rng, 4), _sample(rng, 3)
    batch = collate_packed([[a, b], [b]])
    assert batch.ids.shape == (2, 7)
    assert batch.ids[0].tolist() == [*a.ids, *b.ids] and batch.ids[1, :3].tolist() == b.ids.tolist()
    assert batch.positions.tolist() == [[0, 1, 2, 3, 0, 1, 2], [0, 1, 2, 0, 1, 2, 3]]
    assert batch.documents.tolist() == [[0, 0, 0, 0, 1, 1, 1], [0, 0, 0, *[PAD_DOCUMENT] * 4]]
    assert batch.labels[0, 4] == -100 and batch.labels[0, 5:].tolist() == b.labels[1:].tolist()
    assert Documents.of(batch.documents).spans == [[(0, 4), (4, 7)], [(0, 3), (3, 7)]]


def test_attention_by_document_equals_sdpa_under_a_block_diagonal_mask():
    torch.manual_seed(1)
    documents = torch.tensor([[0, 0, 0, 1, 1, 2, 2, 2, 2], [0, 0, 0, 0, 0, 0, -1, -1, -1]])
    q, k, v = (torch.randn(2, 4, 9, 8) for _ in range(3))
    allowed = (documents[:, :, None] == documents[:, None, :]) & torch.ones(9, 9, dtype=torch.bool).tril()
    expected = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=allowed[:, None])
    got = Documents.of(documents).attend(q, k, v, 0.0, False)
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-6)


def test_packing_wastes_less_than_five_percent_where_padding_wastes_a_quarter():
    rng = np.random.default_rng(4)  # lengths like the omni mix: short questions beside long image tasks
    lengths = [*rng.integers(40, 120, 30), *rng.integers(200, 700, 20), *rng.integers(900, 1300, 14)]
    samples = [_sample(rng, int(n)) for n in rng.permutation(lengths)]
    padded = micro_batches(samples, 16)
    waste = 1 - sum(len(s) for s in samples) / sum(len(g) * max(len(s) for s in g) for g in padded)
    rows = pack_rows(samples, 1400)
    assert padding_fraction(rows, 4) < 0.05 < 0.2 < waste


def test_packed_loss_and_gradients_equal_the_samples_one_by_one(model):
    samples = _samples()
    total = sum(count_targets(torch.from_numpy(s.labels)[None]) for s in samples)

    def one_by_one():
        model.zero_grad()
        ce = z = 0.0
        for s in samples:
            labels = torch.from_numpy(s.labels)[None]
            c, zz = lm_losses(model(torch.from_numpy(s.ids.astype(np.int64))[None]), labels, total)
            (c + 0.1 * zz).backward()
            ce, z = ce + c.detach(), z + zz.detach()
        return ce, z, [p.grad.clone() for p in model.parameters()]

    def packed(row_length: int):
        model.zero_grad()
        batch = collate_packed(pack_rows(samples, row_length))
        logits = model(batch.ids, positions=batch.positions, documents=batch.documents)
        c, z = lm_losses(logits, batch.labels, total)
        (c + 0.1 * z).backward()
        return c.detach(), z.detach(), [p.grad.clone() for p in model.parameters()]

    reference = one_by_one()
    for row_length in (64, 150):  # several rows of a few samples each, or few rows of many
        got = packed(row_length)
        torch.testing.assert_close(got[0], reference[0], rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(got[1], reference[1], rtol=1e-5, atol=1e-6)
        for g, r in zip(got[2], reference[2], strict=True):
            torch.testing.assert_close(g, r, rtol=1e-4, atol=1e-6)
    # the padded batches the trainer used until now give the same loss too
    ids, labels = collate(samples)
    torch.testing.assert_close(lm_losses(model(ids), labels, total)[0], reference[0], rtol=1e-5, atol=1e-6)
