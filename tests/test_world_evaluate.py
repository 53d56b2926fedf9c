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


def noise_chat(messages, seed):
    image = (
        next(m["images"][-1] for m in reversed(messages) if m["images"])
        if any(m["images"] for m in messages)
        else np.zeros((128, 128, 3), np.uint8)
    )
    return {"text": "maybe", "images": [_noise(image.shape, seed)]}


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

    def marked_chat(messages, seed):  # marks its images in the text, as the pipeline's chat does
        reply = oracle_chat(messages, seed)
        return {"text": reply["text"] + "<|image|>" * len(reply["images"]), "images": reply["images"]}

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
    with pytest.raises(LuminaError, match="chat_fn must return"):
        run_benchmark(
            None,
            lambda messages, seed: "text",
            n_prompts=1,
            tasks=["captioning"],
            out_dir=tmp_path,
            progress=False,
        )
