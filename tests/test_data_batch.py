"""Padding, label layout and the CFG context drop."""

import numpy as np

from lumina_mgpt.data.batch import PAD_ID, collate, context_drop_flags, drop_context, micro_batches
from lumina_mgpt.data.shards import Sample


def _sample(ids, target, span=(0, 0)):
    return Sample(ids=np.array(ids, np.int32), target=np.array(target, bool), image_span=span)


def test_collate_pads_right_with_ignored_labels():
    ids, labels = collate([_sample([0, 7, 8, 9], [0, 0, 1, 1]), _sample([0, 5], [0, 1])])
    assert ids.tolist() == [[0, 7, 8, 9], [0, 5, PAD_ID, PAD_ID]]
    assert labels.tolist() == [[-100, -100, 8, 9], [-100, 5, -100, -100]]


def test_context_drop_keeps_only_the_image_block():
    t2i = _sample([0, 11, 12, 3, 20, 21, 22, 4, 2], [0, 0, 0, 0, 1, 1, 1, 1, 1], span=(4, 8))
    chat = _sample([0, 11, 2, 13, 2], [0, 0, 0, 1, 1])  # no target image: never dropped
    out = drop_context([t2i, chat, t2i], np.array([True, True, False]))
    assert out[0].ids.tolist() == [20, 21, 22, 4] and out[0].target.all()
    assert out[1] is chat and out[2] is t2i


def test_context_drop_flags_are_reproducible():
    flags = context_drop_flags(seed=7, step=3, batch_size=16, probability=0.5)
    assert np.array_equal(flags, context_drop_flags(7, 3, 16, 0.5))
    assert not np.array_equal(flags, context_drop_flags(7, 4, 16, 0.5))
    assert not context_drop_flags(7, 3, 16, 0.0).any() and context_drop_flags(7, 3, 16, 1.0).all()
    rate = np.mean([context_drop_flags(0, step, 100, 0.1).mean() for step in range(100)])
    assert abs(rate - 0.1) < 0.01


def test_micro_batches_group_samples_of_like_length():
    samples = [_sample([0] * n, [1] * n) for n in (9, 2, 7, 3, 3)]
    groups = micro_batches(samples, 2)
    assert [[len(s) for s in g] for g in groups] == [[2, 3], [3, 7], [9]]
    assert groups[0][1] is samples[3] and groups[1][0] is samples[4]  # ties keep their order
    assert sum(collate(g)[0].numel() for g in groups) == 2 * 3 + 2 * 7 + 9  # unsorted: 2 * 9 + 2 * 7 + 3
