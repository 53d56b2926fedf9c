"""Shapes-world batches: deterministic, the same stream on any number of ranks, resumable."""

import pytest
from train_fixtures import one_thread, tiny_image_tokenizer, tiny_text_tokenizer  # noqa: F401 (fixture)

from lumina_mgpt.data.world_source import WorldSource, WorldSpec
from lumina_mgpt.errors import LuminaError
from lumina_mgpt.unirep import block_length
from lumina_mgpt.vocab import TokenLayout


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    root = tmp_path_factory.mktemp("world")
    return dict(
        tokenizer=tiny_text_tokenizer(root / "tok"), image_tokenizer=tiny_image_tokenizer(root / "vq")
    )


def _source(paths, tasks=None, area=96, rank=0, world_size=1, max_aspect=None, **kwargs):
    spec = WorldSpec(
        tasks or {"t2i": 1.0, "count_qa": 1.0},
        area,
        str(paths["tokenizer"]),
        "ours",
        str(paths["image_tokenizer"]),
        seed=5,
        max_aspect=max_aspect,
    )
    return WorldSource(spec, batch_size=4, rank=rank, world_size=world_size, **kwargs)


def _key(samples):
    return [(s.task, s.canvas, s.ids.tolist(), s.target.tolist()) for s in samples]


def test_ranks_share_one_stream_and_resume(paths):
    single = _source(paths)
    batches = [next(single) for _ in range(3)]
    halves = [_source(paths, rank=r, world_size=2) for r in (0, 1)]
    assert [_key(next(halves[0]) + next(halves[1])) for _ in range(3)] == [_key(b) for b in batches]
    resumed = _source(paths)
    resumed.load_state_dict(single.state_dict() | {"batch": 2})
    assert _key(next(resumed)) == _key(batches[2])
    workers = _source(paths, workers=2)  # two processes make the same batches, ahead of time
    assert [_key(next(workers)) for _ in range(3)] == [_key(b) for b in batches]


def test_samples_are_whole_conversations_on_bucket_canvases(paths):
    layout = TokenLayout.from_tokenizer(paths["tokenizer"], "ours")
    source = _source(paths)
    samples = [s for _ in range(4) for s in next(source)]
    for sample in samples:
        assert min(sample.canvas) >= 48
        assert sample.ids[0] == layout.bos_id and sample.ids[-1] == layout.turn_sep_id and sample.target[-1]
        if sample.task == "t2i":
            start, end = sample.image_span
            assert end - start == block_length(*sample.canvas, layout) and sample.target[start:].all()
            assert not sample.target[:start].any()
        else:
            assert sample.image_span == (0, 0)  # the answer is text
    assert {s.task for s in samples} == {"t2i", "count_qa"}
    assert len({s.canvas for s in samples}) > 1  # canvases vary between batches


def test_each_canvas_draws_only_the_kinds_that_fit_it(paths):
    source = _source(paths, {"t2i": 1.0, "dual_pair_edge": 3.0})
    assert source.sampler.canvases == [(128, 64), (96, 64), (96, 96), (64, 96), (64, 128)]
    # a dual panel needs a height that halves into >= 48 px: only t2i on the 64 px tall canvases
    assert [w.tolist() for w in source.sampler.weights] == [
        [0.0, 1.0],
        [0.0, 1.0],
        [0.75, 0.25],
        [0.75, 0.25],
        [0.75, 0.25],
    ]
    samples = [s for _ in range(6) for s in next(source)]
    assert all(s.canvas[1] >= 96 for s in samples if s.task == "dual_pair_edge")
    assert {s.task for s in samples} == {"t2i", "dual_pair_edge"}


def test_max_aspect_keeps_the_near_square_buckets(paths):
    assert _source(paths, area=128, max_aspect=1.7).sampler.canvases == [
        (160, 96),
        (128, 96),
        (128, 128),
        (96, 128),
        (96, 160),
    ]
    source = _source(paths, area=96, max_aspect=1.5)
    assert source.sampler.canvases == [(96, 64), (96, 96), (64, 96)]
    assert {s.canvas for _ in range(6) for s in next(source)} <= {(96, 64), (96, 96), (64, 96)}


def test_bad_settings_fail_at_once(paths):
    with pytest.raises(LuminaError, match="unknown world task 'painting'"):
        _source(paths, {"painting": 1.0})
    with pytest.raises(LuminaError, match="'dual_pair_seg' cannot be drawn on any canvas of area 64"):
        _source(paths, {"dual_pair_seg": 1.0}, area=64)
    with pytest.raises(LuminaError, match="global batch of 4 does not split over 3 ranks"):
        _source(paths, world_size=3)
