"""`lumina-mgpt eval` end to end on a tiny random model folder: every text-to-image category and the omni tasks
that take each path of the pipeline adapter (multi-turn, several images, a named canvas, a given image prefix,
text answers) run through the pipeline in decode batches, the files are written and the scores are (near)
zero."""

import json

import pytest
from test_generate_helpers import one_thread, ours_folder
from typer.testing import CliRunner

from lumina_mgpt.cli import app
from lumina_mgpt.world.evaluate import CATEGORIES

runner = CliRunner()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_thread()


ADAPTER_PATHS = ["editing_multiturn", "frames", "dual_i2i_seg", "detection", "captioning"]


def test_eval_runs_every_category_and_task_on_a_tiny_model(tmp_path):
    model = ours_folder(tmp_path / "model", max_units=8)
    out = tmp_path / "eval"
    result = runner.invoke(
        app,
        [
            "eval",
            "--model",
            str(model),
            "--out",
            str(out),
            "--prompts",
            "3",
            "--batch-size",
            "2",
            "--canvas",
            "96x96",
            "--canvas",
            "96x96",  # a repeated canvas is evaluated once
            "--tasks",
            ",".join(ADAPTER_PATHS),
        ],
    )
    assert result.exit_code == 0, result.output
    summary = json.loads((out / "summary.json").read_text())
    items = [json.loads(line) for line in (out / "items.jsonl").read_text().splitlines()]
    assert {i["category"] for i in items if i["type"] == "t2i"} == set(CATEGORIES)
    assert {i["kind"] for i in items if i["type"] == "omni"} == set(ADAPTER_PATHS)
    assert "overall" in result.output
    assert summary["t2i"]["all"]["overall"] <= 0.5  # random weights: near zero
    assert json.loads((out / "settings.json").read_text())["canvases"] == [[96, 96]]


def test_the_pipeline_adapter_gives_a_conversation_too_long_for_the_model_an_empty_reply(tmp_path):
    from lumina_mgpt.pipeline import LuminaMGPTPipeline
    from lumina_mgpt.world.cli import pipeline_chat_fn

    pipe = LuminaMGPTPipeline.from_pretrained(ours_folder(tmp_path / "model", max_units=8))
    short = [{"role": "user", "content": "Describe the image.", "images": []}]
    long = [{"role": "user", "content": "red star " * 2000, "images": []}]
    replies = pipeline_chat_fn(pipe, batch_size=1)([long, short, long], [0, 1, 2])
    assert [sorted(r) for r in replies] == [
        ["error", "images", "text"],
        ["images", "text"],
        ["error", "images", "text"],
    ]
    assert (
        replies[0]["text"] == ""
        and replies[0]["images"] == []
        and "the model holds 2048" in replies[0]["error"]
    )
    alone = pipe.chat(short, seed=1)
    assert replies[1]["text"] == alone.text


def test_a_file_as_output_folder_or_nothing_to_evaluate_is_refused_in_one_line(tmp_path):
    (tmp_path / "afile").touch()
    for args in (
        ["eval", "--out", str(tmp_path / "afile"), "--prompts", "1", "--tasks", "none"],
        ["train-tokenizer", "--out", str(tmp_path / "afile" / "sub")],
    ):
        result = runner.invoke(app, args)
        assert result.exit_code == 2, result.output
        assert result.output == f"error: {tmp_path / 'afile'} exists and is not a folder\n"
    result = runner.invoke(app, ["eval", "--out", str(tmp_path / "eval"), "--seed", "-5"])
    assert result.exit_code == 2 and "Invalid value for '--seed'" in result.output
    result = runner.invoke(app, ["eval", "--out", str(tmp_path / "eval"), "--tasks", "none", "--no-t2i"])
    assert result.exit_code == 2
    assert result.output == "error: nothing to evaluate: --no-t2i with --tasks none\n"
    assert not (tmp_path / "eval").exists()


def test_eval_rejects_a_bad_canvas_in_one_line(tmp_path):
    result = runner.invoke(app, ["eval", "--model", str(tmp_path), "--canvas", "96by96"])
    assert result.exit_code == 2
    assert "error: canvas '96by96' is not 'WxH' in pixels" in result.output
