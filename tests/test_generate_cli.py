"""`lumina-mgpt generate` / `chat` on a tiny model folder: files written, settings recorded, and one-line errors
(exit 2) for impossible sizes, missing models, non-image files, unknown tasks and bad --speculative, --window,
--best-of and --quantize values."""

import json
import shutil

import numpy as np
import pytest
from PIL import Image
from test_generate_helpers import one_thread, ours_folder
from typer.testing import CliRunner

from lumina_mgpt.cli import app

runner = CliRunner()


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_thread()


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return str(ours_folder(tmp_path_factory.mktemp("model")))


def test_generate_writes_pngs_and_settings(model, tmp_path):
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "generate",
            "a red star",
            "--size",
            "64x32",
            "-n",
            "2",
            "--seed",
            "7",
            "--cfg",
            "2.5",
            "--top-k",
            "5",
            "--out",
            str(out),
            "--model",
            model,
        ],
    )
    assert result.exit_code == 0, result.output
    assert [Image.open(out / f"image_00{i}.png").size for i in range(2)] == [(64, 32)] * 2
    settings = json.loads((out / "settings.json").read_text())
    assert settings["size"] == "64x32" and settings["seed"] == 7 and settings["family"] == "ours"
    assert settings["sampling"]["cfg_scale"] == 2.5 and settings["sampling"]["image"]["top_k"] == 5
    assert settings["files"] == ["image_000.png", "image_001.png"]
    assert settings["stats"]["forward_passes"] == 4 * 9 + 3


def test_an_impossible_size_is_refused_before_the_weights_are_read(model, tmp_path):
    broken = tmp_path / "broken"
    shutil.copytree(model, broken)
    (broken / "model.safetensors").write_bytes(b"not weights")
    result = runner.invoke(app, ["generate", "x", "--size", "100x90", "--model", str(broken)])
    assert result.exit_code == 2
    assert result.stderr.strip() == (
        "error: cannot generate 100x90: each side must be a positive multiple of 32 px; "
        "valid sizes nearby: 96x96, 96x64, 128x96, 64x96"
    )
    for size in ["big", "١٢٨x١٢٨", "128x128\n", " 128x128", "128 x 128"]:
        result = runner.invoke(app, ["generate", "x", "--size", size, "--model", model])
        assert result.exit_code == 2, size
        assert f"error: size {size!r} is not 'WxH' in pixels with ASCII digits" in result.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["generate", "x", "--model", "/nowhere/model"], "no such folder"),
        (["chat", "hi", "--task", "paint"], "unknown task 'paint'"),
        (["chat", "--task", "segmentation"], "takes 1 --image, got 0"),
    ],
)
def test_bad_input_gives_one_line_errors(args, message):
    result = runner.invoke(app, args)
    assert result.exit_code == 2
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_chat_refuses_a_non_image_file(model, tmp_path):
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    result = runner.invoke(app, ["chat", "--task", "caption", "--image", str(text), "--model", model])
    assert result.exit_code == 2 and result.stderr.strip() == f"error: {text} is not an image file"


def test_chat_task_with_an_image_writes_the_reply(model, tmp_path):
    picture = tmp_path / "in.png"
    Image.fromarray(np.full((32, 64, 3), 128, dtype=np.uint8)).save(picture)
    out = tmp_path / "out"
    result = runner.invoke(
        app,
        [
            "chat",
            "--task",
            "caption",
            "--image",
            str(picture),
            "--max-new-tokens",
            "6",
            "--out",
            str(out),
            "--model",
            model,
        ],
    )
    assert result.exit_code == 0, result.output
    settings = json.loads((out / "settings.json").read_text())
    assert settings["message"] == "Describe the image. <|image|>" and settings["inputs"] == [str(picture)]
    assert settings["stats"]["generated_tokens"] <= 6


def test_fast_and_best_of_flags_are_used_and_recorded(model, tmp_path):
    out = tmp_path / "out"
    flags = ["--speculative", "exact", "--window", "4", "--best-of", "2", "--quantize", "int8"]
    args = [
        "generate",
        "a red star",
        "--size",
        "64x32",
        "-n",
        "2",
        "--out",
        str(out),
        "--model",
        model,
        *flags,
    ]
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert [Image.open(out / f"image_00{i}.png").size for i in range(2)] == [(64, 32)] * 2
    settings = json.loads((out / "settings.json").read_text())
    assert settings["sampling"]["speculative"]["mode"] == "exact"
    assert settings["sampling"]["speculative"]["window"] == 4
    assert settings["best_of"] == 2 and len(settings["scores"]) == 2 and settings["quantize"] == "int8"
    assert settings["stats"]["window_forwards"] > 0 and settings["stats"]["candidates"] == 2


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--speculative", "fast"], "speculative must be one of off, exact, reference, got 'fast'"),
        (["--device", "bogus"], "unknown device 'bogus'"),
        (["--cfg", "nan"], "cfg_scale must be >= 0 and <= 1000, got nan"),
        (["--temperature", "inf"], "temperature must be 0 or >= 0.001 and <= 1000, got inf"),
        (["--seed", "-1"], "a seed must be an int in 0..2**62"),
        (["-n", "0"], "--num-images must be >= 1, got 0"),
        (["--speculative", "exact", "--window", "0"], "window must be >= 1"),
        (["--best-of", "0"], "best_of must be >= 1, got 0"),
        (["--quantize", "int3"], "--quantize must be one of int8, int4"),
        (["--quantize", "int4"], "int4 weights need a CUDA GPU"),
    ],
)
def test_bad_fast_sampling_values_are_one_line_errors(model, tmp_path, flags, message):
    result = runner.invoke(app, ["generate", "a star", "--model", model, "--out", str(tmp_path), *flags])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error:") and message in result.output
    assert len(result.output.strip().splitlines()) == 1


@pytest.mark.parametrize("flags", [[], ["--best-of", "2"]])
def test_images_do_not_depend_on_the_batch_size(model, tmp_path, flags):
    outputs = {}
    for batch in ("2", "16"):
        out = tmp_path / batch
        args = ["generate", "a red star", "--size", "32x32", "-n", "3", "--seed", "5", "--batch-size", batch]
        result = runner.invoke(app, [*args, "--out", str(out), "--model", model, *flags])
        assert result.exit_code == 0, result.output
        outputs[batch] = np.stack([np.asarray(Image.open(out / f"image_00{i}.png"), int) for i in range(3)])
        settings = json.loads((out / "settings.json").read_text())
        assert settings["files"] == ["image_000.png", "image_001.png", "image_002.png"]
        assert (
            len(settings["stats"]["batches"]) == 2 if batch == "2" else "forward_passes" in settings["stats"]
        )
        assert len(settings["scores"] or [0, 0, 0]) == 3
    assert np.abs(outputs["2"] - outputs["16"]).max() <= 1  # same tokens; VQ decoding may round ±1 by batch


def test_a_reused_output_folder_keeps_older_images_and_says_so(model, tmp_path):
    base = ["generate", "a red star", "--size", "32x32", "--out", str(tmp_path), "--model", model]
    assert runner.invoke(app, [*base, "-n", "3"]).exit_code == 0
    older = (tmp_path / "image_002.png").read_bytes()
    result = runner.invoke(app, [*base, "-n", "1", "--seed", "9"])
    assert result.exit_code == 0
    assert "also holds 2 image(s) of earlier runs (image_001.png, image_002.png)" in result.stderr
    assert (tmp_path / "image_002.png").read_bytes() == older
    assert json.loads((tmp_path / "settings.json").read_text())["files"] == ["image_000.png"]
    result = runner.invoke(app, [*base, "-n", "3"])
    assert result.exit_code == 0 and "earlier runs" not in result.stderr


def test_the_command_line_imports_torch_only_on_use_and_the_shapes_model_needs_no_diffusers():
    """`lumina-mgpt --help` stays quick (no torch), and the shipped model's pipeline never imports diffusers
    (its image tokenizer is our own; diffusers with torchao takes seconds and prints warnings) nor, while
    building on the meta device, torch._dynamo (about 2 s)."""
    import subprocess
    import sys

    code = (
        "import sys; import lumina_mgpt.cli; print('torch' in sys.modules); "
        "from lumina_mgpt import LuminaMGPTPipeline; LuminaMGPTPipeline.from_pretrained(); "
        "print('diffusers' in sys.modules, 'torch._dynamo' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False", "False"]
