"""Length-grouped, bucketed global batches: exact composition, determinism, resume, task ratios, ranks."""

from collections import Counter

import numpy as np
import pytest

from lumina_mgpt.data.sampler import LengthGroupedSampler, rank_share
from lumina_mgpt.errors import LuminaError

# samples 0-4 on a 64x32 canvas, 5-7 on 32x64; lengths all distinct
LENGTHS = np.array([50, 10, 40, 20, 30, 35, 15, 25])
CANVAS = np.array([(64, 32)] * 5 + [(32, 64)] * 3)


def test_batches_group_by_canvas_then_length_exactly():
    sampler = LengthGroupedSampler(LENGTHS, CANVAS, batch_size=2, seed=3)
    batches = sampler.epoch_batches(0)
    # 64x32 by length: 1(10) 3(20) | 4(30) 2(40) | 0(50) left over; 32x64: 6(15) 7(25) | 5(35) left over;
    # the leftovers 0 and 5 form the last batch; the order of batches is shuffled
    assert sorted(sorted(b.tolist()) for b in batches) == [[0, 5], [1, 3], [2, 4], [6, 7]]
    for batch in batches:
        assert np.all(np.diff(LENGTHS[batch]) >= 0)  # each batch is length-sorted


def test_windows_limit_sorting_and_keep_canvases_apart():
    rng = np.random.default_rng(0)
    lengths, canvas = rng.integers(1, 1000, 400), np.array([(32, 32), (64, 32)])[rng.integers(0, 2, 400)]
    sampler = LengthGroupedSampler(lengths, canvas, batch_size=4, seed=0, window=5)
    batches = sampler.epoch_batches(0)
    mixed = [b for b in batches if len({tuple(c) for c in canvas[b]}) > 1]
    assert len(mixed) <= 1  # only the batch of pooled leftovers may mix canvases
    assert sorted(np.concatenate(batches).tolist()) == sorted(set(np.concatenate(batches).tolist()))
    assert len(np.concatenate(batches)) >= 400 - 4 * 3  # at most a few leftovers dropped per epoch

    def spread(window: int) -> float:
        batches = LengthGroupedSampler(lengths, canvas, batch_size=4, seed=0, window=window).epoch_batches(0)
        return float(np.mean([np.ptp(lengths[b]) for b in batches]))

    # length range inside a batch: ~600 unsorted, ~4/21 of 1000 with windows of 5 batches, ~20 when whole
    # canvases are sorted at once
    assert spread(100) < 40 < spread(5) < 250 < spread(1)


def test_order_is_a_function_of_seed_and_epoch():
    a = LengthGroupedSampler(LENGTHS, CANVAS, batch_size=2, seed=3)
    b = LengthGroupedSampler(LENGTHS, CANVAS, batch_size=2, seed=3)
    assert [x.tolist() for x in a.epoch_batches(5)] == [x.tolist() for x in b.epoch_batches(5)]
    orders = {tuple(map(tuple, a.epoch_batches(e))) for e in range(8)}
    assert len(orders) > 1


def test_resume_mid_epoch_continues_the_same_stream():
    sampler = LengthGroupedSampler(LENGTHS, CANVAS, batch_size=2, seed=1)
    stream = [next(sampler).tolist() for _ in range(6)]  # crosses into epoch 1 (4 batches per epoch)
    assert sampler.state_dict() == {"epoch": 1, "batch": 2}
    resumed = LengthGroupedSampler(LENGTHS, CANVAS, batch_size=2, seed=1)
    resumed.load_state_dict({"epoch": 0, "batch": 3})
    assert [next(resumed).tolist() for _ in range(3)] == stream[3:]


def test_task_ratios_repeat_and_subsample_exactly():
    tasks = np.array(["t2i"] * 6 + ["edit"] * 4 + ["qa"] * 2, dtype=object)
    sampler = LengthGroupedSampler(
        np.arange(12) + 5,
        np.zeros((12, 2)),
        batch_size=1,
        seed=0,
        tasks=tasks,
        task_ratios={"edit": 2.0, "t2i": 0.5},
    )
    seen = Counter(np.concatenate(sampler.epoch_batches(0)).tolist())
    assert sorted(seen[i] for i in range(6)) == [0, 0, 0, 1, 1, 1]  # half of t2i, once each
    assert [seen[i] for i in range(6, 12)] == [2, 2, 2, 2, 1, 1]  # edit twice, qa (no ratio) once
    with pytest.raises(LuminaError, match="task ratio for 'ocr'"):
        LengthGroupedSampler(np.ones(12), np.zeros((12, 2)), 2, 0, tasks=tasks, task_ratios={"ocr": 1.0})


def test_too_long_samples_are_left_out():
    sampler = LengthGroupedSampler(LENGTHS, CANVAS, batch_size=2, seed=0, max_length=40)
    assert sampler.too_long == 1
    assert 0 not in np.concatenate(sampler.epoch_batches(0))
    with pytest.raises(LuminaError, match="fewer usable samples than one global batch"):
        LengthGroupedSampler(LENGTHS, CANVAS, batch_size=8, seed=0, max_length=40)


def test_rank_share():
    batch = np.arange(8)
    assert [rank_share(batch, r, 4).tolist() for r in range(4)] == [[0, 1], [2, 3], [4, 5], [6, 7]]
    with pytest.raises(LuminaError, match="does not split over 3 ranks"):
        rank_share(batch, 0, 3)
