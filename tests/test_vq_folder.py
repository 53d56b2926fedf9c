"""`train-vq --images`: a tokenizer trained on a folder of images, its one-line errors, and `reconstruct`'s PSNR."""

import json
import re

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from lumina_mgpt.cli import app
from lumina_mgpt.errors import LuminaError
from lumina_mgpt.vq import load_image_tokenizer
from lumina_mgpt.vq.evaluate import psnr, reconstruct
from lumina_mgpt.vq.folder import FolderBatches, load_images, random_crop
from lumina_mgpt.vq.train import PRESETS, TrainConfig, train


def _pictures(folder, n=3, size=(40, 48)):
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8)).save(folder / f"{i}.png")
    return folder


def _tiny(images, steps=4) -> TrainConfig:
    config = TrainConfig.from_dict(PRESETS["tiny"], "tiny")
    config.data.images, config.optim.steps = str(images), steps
    return config


def test_bad_image_folders_are_one_line_errors(tmp_path):
    with pytest.raises(LuminaError, match="not a folder"):
        load_images(tmp_path / "missing", 8)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "notes.txt").write_text("x")
    with pytest.raises(LuminaError, match="no images found"):
        load_images(tmp_path / "empty", 8)
    broken = _pictures(tmp_path / "broken")
    (broken / "9.png").write_bytes(b"not a png")
    with pytest.raises(LuminaError, match=r"9\.png: cannot read the image"):
        load_images(broken, 8)
    small = _pictures(tmp_path / "small")
    Image.new("RGB", (7, 20)).save(small / "tiny.png")
    with pytest.raises(LuminaError, match=r"tiny\.png: 7x20 is smaller than one 8x8 grid cell"):
        load_images(small, 8)
    result = CliRunner().invoke(
        app, ["train-vq", "--images", str(tmp_path / "empty"), "--out", str(tmp_path / "o")]
    )
    assert result.exit_code == 2 and "no images found" in result.output and "Traceback" not in result.output


def test_folder_batches_are_seeded_crops_of_the_canvas_size(tmp_path):
    images = load_images(_pictures(tmp_path / "p"), 8)
    batches = FolderBatches(images, [(32, 16), (16, 32)], batch_size=3, seed=5)
    assert torch.equal(batches[7], FolderBatches(images, [(32, 16), (16, 32)], 3, 5)[7])
    assert not torch.equal(batches[7], batches[8])
    assert batches[7].shape[1:] in {(16, 32, 3), (32, 16, 3)} and batches[7].dtype == torch.uint8
    crop = random_crop(np.full((48, 40, 3), 9, np.uint8), 24, 8, np.random.default_rng(0))
    assert crop.shape == (8, 24, 3) and (crop == 9).all()


def test_tiny_folder_run_writes_a_tokenizer_with_its_training_psnr_and_resumes_exactly(tmp_path):
    images = _pictures(tmp_path / "p")
    train(_tiny(images, steps=4), tmp_path / "whole", show_progress=False)
    train(_tiny(images, steps=2), tmp_path / "halves", show_progress=False)  # checkpoint at step 2
    metrics = train(_tiny(images, steps=4), tmp_path / "halves", show_progress=False)
    whole = torch.load(tmp_path / "whole" / "checkpoint.pt", weights_only=True)["model"]
    halves = torch.load(tmp_path / "halves" / "checkpoint.pt", weights_only=True)["model"]
    assert all(torch.equal(whole[k], halves[k]) for k in whole)
    tokenizer = load_image_tokenizer(tmp_path / "whole" / "tokenizer")
    assert tokenizer.factor == 8 and tokenizer.codebook_size == 64
    saved = json.loads((tmp_path / "halves" / "tokenizer" / "training.json").read_text())
    assert saved["psnr"] == pytest.approx(metrics["eval"]["psnr"]) and 0 < saved["psnr"] < 60


def test_time_limit_stops_after_the_first_step_and_leaves_a_resumable_checkpoint(tmp_path):
    config = _tiny(_pictures(tmp_path / "p"), steps=50)
    config.run.minutes = 0.0
    metrics = train(config, tmp_path / "run", show_progress=False)
    assert metrics["steps"] == 1
    assert torch.load(tmp_path / "run" / "checkpoint.pt", weights_only=True)["step"] == 1
    assert (tmp_path / "run" / "tokenizer" / "model.safetensors").exists()


class _NotPlainData:
    pass


def test_refused_pickle_and_non_utf8_config_are_one_line_errors(tmp_path):
    images = _pictures(tmp_path / "p")
    (tmp_path / "run").mkdir()
    torch.save({"step": _NotPlainData()}, tmp_path / "run" / "checkpoint.pt")
    result = CliRunner().invoke(
        app, ["train-vq", "--images", str(images), "--out", str(tmp_path / "run"), "--preset", "tiny"]
    )
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert re.search(r"cannot resume from checkpoint .*checkpoint\.pt .*delete that file", result.output)
    bad = tmp_path / "bad.yaml"
    bad.write_bytes(b"optim:\n  steps: 3 # \xff\n")
    result = CliRunner().invoke(app, ["train-vq", str(bad), "--out", str(tmp_path / "o")])
    assert result.exit_code == 2 and f"{bad}: not UTF-8 text (byte" in result.output


def test_reconstruct_prints_the_psnr_of_the_image(tmp_path):
    source = _pictures(tmp_path / "p", n=1, size=(32, 24)) / "0.png"
    result = CliRunner().invoke(app, ["reconstruct", str(source), str(tmp_path / "out.png")])
    assert result.exit_code == 0, result.output
    expected = psnr(np.asarray(Image.open(source)), np.asarray(Image.open(tmp_path / "out.png")))
    assert f"PSNR {expected:.2f} dB" in result.output


def _gradients(folder, n, seed, size=32):
    """`n` trivial pictures: a vertical gradient between two random colours."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    t = np.linspace(0, 1, size)[:, None, None]
    for i in range(n):
        a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        picture = np.broadcast_to((1 - t) * a + t * b, (size, size, 3)).astype(np.uint8)
        Image.fromarray(picture).save(folder / f"{i}.png")
    return np.stack([np.asarray(Image.open(folder / f"{i}.png")) for i in range(n)])


def test_held_out_psnr_improves_with_training_steps(tmp_path):
    _gradients(tmp_path / "train", 8, seed=0)
    held_out = _gradients(tmp_path / "held-out", 4, seed=1)
    quality = {}
    for steps in (2, 30):
        config = _tiny(tmp_path / "train", steps=steps)
        config.data.batch_size, config.optim.lr, config.optim.warmup = 8, 3e-3, 5
        train(config, tmp_path / f"run{steps}", show_progress=False)
        tokenizer = load_image_tokenizer(tmp_path / f"run{steps}" / "tokenizer")
        quality[steps] = psnr(held_out, reconstruct(tokenizer, held_out)[0])
    assert quality[30] > quality[2] + 0.5, quality  # measured: 12.25 -> 13.08 dB


def test_bad_patch_and_crop_fraction_are_one_line_errors():
    with pytest.raises(LuminaError, match=r"data.patch must be a multiple of 8 px up to .* \(32\), not 12"):
        TrainConfig.from_dict({**PRESETS["tiny"], "data": {"canvases": [[32, 32]], "patch": 12}})
    with pytest.raises(LuminaError, match=r"data.crop_fraction must be \[low, high\]"):
        TrainConfig.from_dict({"data": {"crop_fraction": [0.5, 1.5]}})
