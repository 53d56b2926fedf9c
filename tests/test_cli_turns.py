"""Multi-turn `chat` (repeated --turn/--image, or a JSON conversation file), `generate --prompts FILE` in decode
batches, and the README's task names, end to end on a tiny model folder."""

import json
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_generate_helpers import image_replies_folder, one_thread
from typer.testing import CliRunner

from lumina_mgpt.cli import app
from lumina_mgpt.errors import LuminaError
from lumina_mgpt.generate.tasks import ALIASES, TASKS, resolve_task, task_message
from lumina_mgpt.pipeline import LuminaMGPTPipeline
from lumina_mgpt.unirep import block_length

runner = CliRunner()
README = Path(__file__).parents[1] / "README.md"


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_thread()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return image_replies_folder(tmp_path_factory.mktemp("turns") / "model")  # replies are images


@pytest.fixture(scope="module")
def pipe(model):
    return LuminaMGPTPipeline.from_pretrained(model)


def scene(path: Path) -> Path:
    pixels = np.full((32, 32, 3), 128, dtype=np.uint8)
    pixels[8:20, 8:20] = (230, 25, 75)
    Image.fromarray(pixels).save(path)
    return path


def test_multi_turn_chat_edits_the_latest_image_and_writes_a_transcript(model, pipe, tmp_path):
    picture, out = scene(tmp_path / "in.png"), tmp_path / "out"
    length = str(block_length(32, 32, pipe.layout))
    common = ["--size", "32x32", "--max-new-tokens", length, "--seed", "4", "--model", str(model)]
    turns = ["--task", "editing", "--turn", "Add a blue star.", "--image", str(picture)]
    result = runner.invoke(
        app, ["chat", *turns, "--turn", "Remove the red square.", "--out", str(out), *common]
    )
    assert result.exit_code == 0, result.output
    transcript = json.loads((out / "chat.json").read_text())["messages"]
    assert [m["role"] for m in transcript] == ["user", "assistant"] * 2
    assert transcript[0]["content"] == "Add a blue star. <|image|>" and transcript[0]["images"] == [
        str(picture)
    ]
    assert transcript[2]["content"] == "Remove the red square." and transcript[2]["images"] == []
    assert transcript[1]["images"] == ["turn1_reply_000.png"] and transcript[3]["images"] == [
        "turn2_reply_000.png"
    ]
    assert result.stdout.count("\n") == 2  # one line of text per reply (here: images only, no text)
    # the same conversation through the pipeline: turn 2 sees turn 1's reply image, seeds 4 and 5
    first = pipe.chat(
        [{"role": "user", "content": "Add a blue star. <|image|>", "images": [Image.open(picture)]}],
        32,
        32,
        seed=4,
        max_new_tokens=int(length),
    )
    history = [
        {"role": "user", "content": "Add a blue star. <|image|>", "images": [Image.open(picture)]},
        {"role": "assistant", "content": first.text, "images": first.images},
        {"role": "user", "content": "Remove the red square.", "images": []},
    ]
    second = pipe.chat(history, 32, 32, seed=5, max_new_tokens=int(length))
    for name, reply in [("turn1_reply_000.png", first), ("turn2_reply_000.png", second)]:
        assert np.array_equal(np.asarray(Image.open(out / name)), np.asarray(reply.images[0]))
    # a conversation file is the same chat
    (tmp_path / "chat.json").write_text(
        json.dumps([{"text": "Add a blue star.", "images": ["in.png"]}, "Remove the red square."])
    )
    again = tmp_path / "again"
    result = runner.invoke(
        app,
        [
            "chat",
            "--task",
            "edit",
            "--conversation",
            str(tmp_path / "chat.json"),
            "--out",
            str(again),
            *common,
        ],
    )
    assert result.exit_code == 0, result.output
    for name in ["turn1_reply_000.png", "turn2_reply_000.png"]:
        assert np.array_equal(np.asarray(Image.open(again / name)), np.asarray(Image.open(out / name)))


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (["--turn", "a", "--image", "x.png", "--image", "y.png"], "got 2 --image for 1 turn(s)"),
        (
            ["--task", "captioning", "--turn", "a", "--turn", "b"],
            "turn 1: task 'caption' takes 1 --image, got 0",
        ),
        (["--conversation", "missing.json"], "conversation file missing.json does not exist"),
        (["--task", "painting", "--turn", "a"], "unknown task 'painting'"),
    ],
)
def test_bad_turns_get_one_line_errors(args, words):
    result = runner.invoke(app, ["chat", *args])
    assert result.exit_code == 2 and words in result.stderr, result.output
    assert len(result.stderr.strip().splitlines()) == 1


def test_generate_prompts_file_gives_each_prompt_its_size_and_seed(model, pipe, tmp_path):
    prompts = tmp_path / "prompts.txt"
    lines = [
        "a red star",
        json.dumps({"prompt": "a blue circle", "size": "64x32", "seed": 9}),
        "",
        "a green square",
        json.dumps({"prompt": "a red heart", "size": "64x32"}),
    ]
    prompts.write_text("\n".join(lines) + "\n")
    outs = {}
    for batch in ["1", "16"]:
        out = tmp_path / f"batch{batch}"
        args = ["generate", "--prompts", str(prompts), "--size", "32x32", "-n", "2", "--seed", "3"]
        result = runner.invoke(app, [*args, "--batch-size", batch, "--out", str(out), "--model", str(model)])
        assert result.exit_code == 0, result.output
        outs[batch] = out
    settings = json.loads((outs["16"] / "settings.json").read_text())
    assert [p["seeds"] for p in settings["prompts"]] == [[3, 4], [9, 10], [7, 8], [9, 10]]
    assert [p["size"] for p in settings["prompts"]] == ["32x32", "64x32", "32x32", "64x32"]
    assert [p["line"] for p in settings["prompts"]] == [1, 2, 4, 5]
    expected = [
        pipe("a red star", 32, 32, 2, seed=3, progress=False),
        pipe("a blue circle", 64, 32, 2, seed=9, progress=False),
        pipe("a green square", 32, 32, 2, seed=7, progress=False),
        pipe("a red heart", 64, 32, 2, seed=9, progress=False),
    ]
    for i, result in enumerate(expected):
        for j, image in enumerate(result.images):
            name = f"image_{2 * i + j:03d}.png"
            for out in outs.values():
                assert np.array_equal(np.asarray(Image.open(out / name)), np.asarray(image)), (out, name)


@pytest.mark.parametrize(
    ("lines", "words"),
    [
        (['{"prompt": "a", "sise": "32x32"}'], "prompts.txt:1: a JSON line is"),
        (["a", '{"prompt": "b", "size": "32x32\\n"}'], "prompts.txt:2: size '32x32\\n' is not 'WxH'"),
        (['{"prompt": "b", "seed": -1}'], "seed must be a whole number"),
        (["", "  "], "holds no prompts"),
    ],
)
def test_bad_prompts_files_get_one_line_errors(model, tmp_path, lines, words):
    (tmp_path / "prompts.txt").write_text("\n".join(lines))
    result = runner.invoke(
        app, ["generate", "--prompts", str(tmp_path / "prompts.txt"), "--model", str(model)]
    )
    assert result.exit_code == 2 and words in result.stderr, result.output


@pytest.mark.parametrize("size", ["١٢٨x١٢٨", "128x128\n", " 128x128", "128 x 128", "+128x128"])
def test_cli_size_takes_ascii_wxh_only(size):
    result = runner.invoke(app, ["generate", "a red star", "--size", size])
    assert result.exit_code == 2 and "is not 'WxH' in pixels with ASCII digits" in result.stderr


def test_readme_task_names_and_world_kinds_are_accepted():
    line = next(line for line in README.read_text().splitlines() if "--task editing" in line)
    names = re.search(r"omni tasks: ([^|]+)\|", line)[1].strip().split(", ")
    assert len(names) == 9
    for name in names:
        resolve_task(name)
    assert resolve_task("editing") == ("edit", None) and resolve_task("dual_i2i_edge") == ("i2i", "edge map")
    assert task_message("detection", "the red star.", 64, 64) == "Detect: the red star. <|image|>"
    assert task_message("dual_pair_edge", "a red star", 64, 128) == task_message(
        "pair", "a red star", 64, 128, map_name="edge map"
    )
    assert {task for task, _ in ALIASES.values()} <= set(TASKS)
    with pytest.raises(LuminaError, match="unknown task 'paint'"):
        resolve_task("paint")
