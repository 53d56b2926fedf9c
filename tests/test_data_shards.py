"""Token shards: round trip, lazy reads across shards, the context-drop form, bad files."""

import numpy as np
import pytest
from train_fixtures import synthetic_samples, write_synthetic_shards

from lumina_mgpt.data.shards import Sample, Shard, ShardSet, write_shard
from lumina_mgpt.errors import LuminaError


def test_round_trip_over_several_shards(tmp_path):
    write_synthetic_shards(tmp_path, count=48, per_shard=20)
    expected = synthetic_samples(48)
    samples = ShardSet([tmp_path])
    assert len(samples) == 48 and len(samples.shards) == 3
    np.testing.assert_array_equal(samples.lengths, [len(s) for s in expected])
    np.testing.assert_array_equal(samples.canvas, [s.canvas for s in expected])
    assert samples.tasks.tolist() == [s.task for s in expected]
    for i in (0, 19, 20, 39, 40, 47):
        got, want = samples[i], expected[i]
        np.testing.assert_array_equal(got.ids, want.ids)
        np.testing.assert_array_equal(got.target, want.target)
        assert (got.canvas, got.image_span, got.task, got.record) == (
            want.canvas,
            want.image_span,
            want.task,
            want.record,
        )


def test_labels_and_image_only():
    sample = Sample(
        ids=np.array([0, 5, 6, 7, 8, 9, 3], np.int32),
        target=np.array([0, 0, 1, 1, 1, 1, 1], bool),
        image_span=(2, 6),
        record=4,
    )
    np.testing.assert_array_equal(sample.labels, [-100, -100, 6, 7, 8, 9, 3])
    dropped = sample.image_only()
    np.testing.assert_array_equal(dropped.ids, [6, 7, 8, 9])
    np.testing.assert_array_equal(dropped.labels, [6, 7, 8, 9])
    assert dropped.image_span == (0, 4) and dropped.record == 4
    text_only = Sample(ids=np.array([0, 5], np.int32), target=np.array([0, 1], bool), record=9)
    assert not text_only.droppable
    with pytest.raises(LuminaError, match="record 9"):
        text_only.image_only()


def test_unfinished_and_foreign_files_are_handled(tmp_path):
    write_shard(tmp_path / "shard-00000.safetensors", synthetic_samples(3), ["edit", "t2i"], {})
    (tmp_path / "shard-00001.safetensors.tmp").write_bytes(b"half written")
    assert len(ShardSet([tmp_path])) == 3  # the temporary file of an interrupted write is not a shard
    (tmp_path / "shard-00002.safetensors").write_bytes(b"not a shard")
    with pytest.raises(LuminaError, match=r"shard-00002\.safetensors: not a readable shard"):
        ShardSet([tmp_path])
    with pytest.raises(LuminaError, match="shard folder not found"):
        ShardSet([tmp_path / "missing"])


def test_other_safetensors_file_is_refused(tmp_path):
    from safetensors.numpy import save_file

    save_file({"x": np.zeros(2)}, str(tmp_path / "shard-00000.safetensors"))
    with pytest.raises(LuminaError, match="not a lumina-mgpt-shard/1 file"):
        Shard(tmp_path / "shard-00000.safetensors")
