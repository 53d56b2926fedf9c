"""The benchmark runner end to end: the oracle scores 1.0, noise scores about 0, outputs are written."""

import json

import numpy as np
import pytest
from PIL import Image

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.world.evaluate import DEFAULT_CANVASES, format_table, run_benchmark
from lumina_mgpt.world.oracle import oracle_chat, oracle_generate
from lumina_mgpt.world.spec import CATEGORIES
from lumina_mgpt.world.tasks import OMNI_KINDS


def _noise(shape, seed):
    return Image.fromarray(np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8))


def noise_generate(prompts, width, height, num_images_per_prompt, seed):
    return [
        [_noise((height, width, 3), [seed, i, k]) for k in range(num_images_per_prompt)]
        for i in range(len(prompts))
    ]


def noise_chat(conversations, seeds):
    replies = []
    for messages, seed in zip(conversations, seeds, strict=True):
        image = (
            next(m["images"][-1] for m in reversed(messages) if m["images"])
            if any(m["images"] for m in messages)
            else np.zeros((128, 128, 3), np.uint8)
        )
        replies.append({"text": "maybe", "images": [_noise(image.shape, seed)]})
    return replies


def test_oracle_scores_one_everywhere(tmp_path):
    summary = run_benchmark(
        oracle_generate,
        oracle_chat,
        seed=0,
        n_prompts=1,
        images_per_prompt=1,
        out_dir=tmp_path,
        progress=False,
    )
    assert summary["canvases"] == ["128x128", "160x96", "96x160"] and summary["tasks"] == list(OMNI_KINDS)
    for name in [*summary["canvases"], "all"]:
        assert summary["t2i"][name] == {**dict.fromkeys(CATEGORIES, 1.0), "overall": 1.0}
        assert summary["omni"][name] == dict.fromkeys(OMNI_KINDS, 1.0)
    lines = [json.loads(line) for line in (tmp_path / "items.jsonl").read_text().splitlines()]
    assert len(lines) == (len(CATEGORIES) + len(OMNI_KINDS)) * len(DEFAULT_CANVASES)
    assert all(item["passed"] for item in lines)
    t2i = next(item for item in lines if item["type"] == "t2i")
    assert Image.open(t2i["image"]).size == (128, 128) and t2i["prompt"].startswith(
        "Generate an image of 128x128"
    )
    assert json.loads((tmp_path / "summary.json").read_text()) == summary
    table = format_table(summary)
    assert "overall" in table and "dual_i2i_edge" in table and "96x160" in table


def test_noise_scores_about_zero(tmp_path):
    summary = run_benchmark(
        noise_generate,
        noise_chat,
        seed=1,
        n_prompts=2,
        images_per_prompt=2,
        canvases=[(128, 128)],
        out_dir=tmp_path,
        progress=False,
    )
    assert summary["t2i"]["all"]["overall"] == 0.0
    for kind, score in summary["omni"]["all"].items():
        assert score < (0.5 if kind in ("segmentation", "edges") else 0.01), kind
    passed = [json.loads(line)["passed"] for line in (tmp_path / "items.jsonl").read_text().splitlines()]
    assert not any(passed)


def test_halves_can_be_skipped_and_runs_repeat(tmp_path):
    a = run_benchmark(
        oracle_generate,
        None,
        seed=4,
        n_prompts=1,
        images_per_prompt=1,
        canvases=[(64, 64)],
        out_dir=tmp_path / "a",
        progress=False,
    )
    b = run_benchmark(
        oracle_generate,
        None,
        seed=4,
        n_prompts=1,
        images_per_prompt=1,
        canvases=[(64, 64)],
        out_dir=tmp_path / "b",
        progress=False,
    )
    assert a == b and a["omni"] == {} and a["tasks"] == []
    assert (tmp_path / "a" / "items.jsonl").read_text().replace("/a/", "/b/") == (
        tmp_path / "b" / "items.jsonl"
    ).read_text()

    def marked_chat(conversations, seeds):  # marks its images in the text, as the pipeline's chat does
        return [
            {"text": reply["text"] + "<|image|>" * len(reply["images"]), "images": reply["images"]}
            for reply in oracle_chat(conversations, seeds)
        ]

    c = run_benchmark(
        None,
        marked_chat,
        seed=4,
        n_prompts=1,
        canvases=[(128, 128)],
        tasks=["captioning", "editing_multiturn"],
        out_dir=tmp_path / "c",
        progress=False,
    )
    assert c["t2i"] == {} and c["omni"]["all"] == {"captioning": 1.0, "editing_multiturn": 1.0}
    assert "captioning" in format_table(c)


def test_bad_callables_and_tasks_raise(tmp_path):
    with pytest.raises(LuminaError, match="unknown omni task"):
        run_benchmark(None, oracle_chat, tasks=["t2i"], out_dir=tmp_path, progress=False)
    with pytest.raises(LuminaError, match="generate_fn must return"):
        run_benchmark(lambda prompts, w, h, n, seed: [], None, n_prompts=1, out_dir=tmp_path, progress=False)
    for wrong, message in [
        (lambda conversations, seeds: "text", "chat_fn must return a list of 2 replies"),
        (lambda conversations, seeds: [{"text": "a"}], "chat_fn must return a list of 2 replies"),
        (lambda conversations, seeds: ["a", "b"], "chat_fn's replies must be dicts"),
    ]:
        with pytest.raises(LuminaError, match=message):
            run_benchmark(None, wrong, n_prompts=2, tasks=["captioning"], out_dir=tmp_path, progress=False)


def test_chat_fn_answers_each_turn_of_a_task_set_in_one_batch(tmp_path):
    """One call per canvas, task and turn, holding every item still talking (editing_multiturn's third item
    has two turns), each conversation extended by its own earlier replies; seeds are per item, so the scores
    are those of answering one conversation at a time."""
    calls = []

    def recording_chat(conversations, seeds):
        calls.append((len(conversations), [len(c) for c in conversations], list(seeds)))
        return oracle_chat(conversations, seeds)

    def one_at_a_time(conversations, seeds):
        return [oracle_chat([c], [s])[0] for c, s in zip(conversations, seeds, strict=True)]

    options = dict(seed=0, n_prompts=3, canvases=[(128, 128)], progress=False)
    options["tasks"] = ["captioning", "editing_multiturn"]
    batched = run_benchmark(None, recording_chat, out_dir=tmp_path / "a", **options)
    single = run_benchmark(None, one_at_a_time, out_dir=tmp_path / "b", **options)
    assert [(n, lengths) for n, lengths, _ in calls] == [
        (3, [1, 1, 1]),  # captioning: the user's turn
        (3, [1, 1, 1]),  # editing_multiturn: first instruction of each item
        (3, [3, 3, 3]),  # + first reply + second instruction
        (2, [5, 5]),  # the two items with a third instruction
    ]
    assert calls[1][2] == calls[2][2] and calls[3][2] == calls[1][2][:2]  # an item keeps its seed
    assert len(set(calls[0][2] + calls[1][2])) == 6
    assert batched == single and batched["omni"]["all"] == {"captioning": 1.0, "editing_multiturn": 1.0}
