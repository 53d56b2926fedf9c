"""`lumina-mgpt generate` with --speculative, --window, --best-of and --quantize on a tiny model folder: the run
is recorded in settings.json; bad values are one-line errors (exit 2)."""

import json

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
        (["--speculative", "fast"], "speculative mode must be one of exact, reference"),
        (["--speculative", "exact", "--window", "0"], "window must be >= 1"),
        (["--best-of", "0"], "--best-of must be >= 1"),
        (["--quantize", "int3"], "--quantize must be one of int8, int4"),
        (["--quantize", "int4"], "int4 weights need a CUDA GPU"),
    ],
)
def test_bad_values_are_one_line_errors(model, tmp_path, flags, message):
    result = runner.invoke(app, ["generate", "a star", "--model", model, "--out", str(tmp_path), *flags])
    assert result.exit_code == 2
    assert result.output.strip().startswith("error:") and message in result.output
    assert len(result.output.strip().splitlines()) == 1
