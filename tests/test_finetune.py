"""`lumina-mgpt finetune`: full and LoRA runs lower the validation loss and export a self-contained model, LoRA
checkpoints hold only the adapters, a kill -9 resumes bit for bit, and the image-tokenizer guard rail."""

import json
import re
import subprocess
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.distributed.checkpoint as dcp
import yaml
from PIL import Image
from safetensors.torch import load_file
from train_fixtures import (  # noqa: F401 (one_thread: a fixture)
    cli_command,
    coloured_pictures,
    one_thread,
    run_env,
    tiny_base_model,
)
from typer.testing import CliRunner

from lumina_mgpt.cli import app
from lumina_mgpt.data.batch import collate
from lumina_mgpt.data.shards import ShardSet
from lumina_mgpt.model import load_transformer
from lumina_mgpt.pipeline import LuminaMGPTPipeline
from lumina_mgpt.train.checkpoint import PAUSE_ENV
from lumina_mgpt.train.losses import count_targets, lm_losses

FAST = ["--steps", "6", "--area", "64", "--batch-size", "4", "--checkpoint-every", "2"]


def _finetune(records: Path, run: Path, *options: str):
    command = ["finetune", str(records), "--out", str(run), *FAST, "--validate-every", "2", *options]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    return result


def _rows(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]


@torch.no_grad()
def _validation_loss(model_folder: Path, shards: Path) -> float:
    """Cross-entropy per target token of a saved model on shards, computed here from the model file."""
    model, samples = load_transformer(model_folder), ShardSet([shards])
    total, targets = 0.0, 0
    for i in range(len(samples)):
        ids, labels = collate([samples[i]])
        total += float(lm_losses(model(ids), labels, 1)[0])
        targets += count_targets(labels)
    return total / targets


@pytest.mark.parametrize("lora", [None, "8"])
def test_full_and_lora_finetunes_lower_the_validation_loss_and_export_a_self_contained_model(tmp_path, lora):
    base = tiny_base_model(tmp_path / "base")
    records, run = coloured_pictures(tmp_path / "pictures"), tmp_path / "run"
    options = ["--base", str(base), "--sample-every", "6", "--lr", "1e-2"]
    result = _finetune(records, run, *options, *(["--lora", lora] if lora else []))
    kind = "LoRA rank 8" if lora else "full fine-tuning"
    assert re.search(rf"{kind}: [\d,]+ parameters, [\d,]+ trainable", result.output)
    assert "effective batch 4 samples" in result.output and "ETA" in result.output
    assert "stage 'finetune': 6 steps, 11 samples" in result.output  # 12 records, one held out

    validation = [row["val_loss"] for row in _rows(run) if "val_loss" in row]
    assert [row["step"] for row in _rows(run) if "val_loss" in row] == [2, 4, 6]
    before = _validation_loss(base, run / "data" / "val")
    # the exported weights (LoRA merged into them) score the validation data as the run's last step did
    assert _validation_loss(run / "model", run / "data" / "val") == pytest.approx(validation[-1], rel=1e-4)
    assert validation[-1] < validation[0] < before

    saved = dcp.FileSystemReader(run / "checkpoints" / "step-6").read_metadata().state_dict_metadata
    weights = {k.removeprefix("model.") for k in saved if k.startswith("model.")}
    if lora:  # only the adapters (2 layers x 7 linears x A, B), and the optimiser state of those alone
        assert len(weights) == 28 and all(".lora_A." in k or ".lora_B." in k for k in weights)
        moments = {k for k in saved if k.startswith("optimizer.state.")}
        assert moments and all(".lora_" in k for k in moments)
    else:
        assert weights == set(load_file(base / "model.safetensors"))
    assert not any(".lora_" in k for k in load_file(run / "model" / "model.safetensors"))

    card = (run / "model" / "README.md").read_text()
    assert f"base model: {base}" in card and "steps: 6" in card and "11 samples" in card
    assert f"{validation[-1]:.4f} at step 6" in card and ("LoRA rank 8" in card) == bool(lora)
    assert Image.open(run / "loss.png").size == (600, 400)
    assert Image.open(run / "samples" / "step-6.png").size == (64, 64 + 14)  # one caption held out
    assert (run / "model" / "sampling.json").read_text() == '{"speculative": "exact"}'

    pipe = LuminaMGPTPipeline.from_pretrained(run / "model")  # no other argument
    assert (
        pipe.preset.t2i.speculative == pipe.preset.chat.speculative == "exact"
        and pipe.image_tokenizer.codebook_size == 64
    )
    out = tmp_path / "generated"
    result = CliRunner().invoke(
        app, ["generate", "a red circle", "--model", str(run / "model"), "--out", str(out)]
    )
    assert result.exit_code == 0, result.output
    assert Image.open(next(out.glob("*.png"))).size == (128, 128)  # the "ours" preset's canvas


def test_a_lora_finetune_killed_mid_run_resumes_bit_identical_to_train_on_its_config(tmp_path):
    base = tiny_base_model(tmp_path / "base")
    records, run = coloured_pictures(tmp_path / "pictures"), tmp_path / "run"
    command = cli_command(
        "finetune", str(records), "--out", str(run), "--base", str(base), "--lora", "4", "--lr", "1e-2",
        *FAST, "--validate-every", "1", "--sample-every", "3",
    )  # fmt: skip
    first = subprocess.Popen(
        command,
        env=run_env(**{PAUSE_ENV: "4:120"}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    deadline = time.monotonic() + 120
    while not (run / "checkpoints" / "step-4.tmp" / ".metadata").exists():
        assert first.poll() is None and time.monotonic() < deadline, first.stdout.read()[-2000:]
        time.sleep(0.01)
    first.kill()
    first.communicate()
    assert [row["step"] for row in _rows(run)] == [1, 2, 3, 4]  # steps 3 and 4 are trained again
    again = CliRunner().invoke(app, command[3:])  # the same command, here
    assert again.exit_code == 0, again.output
    assert "0 records skipped" in again.output and "1 shards already done" in again.output  # cached
    assert f"resuming from {run / 'checkpoints' / 'step-2'} (step 2)" in again.output
    assert [row["step"] for row in _rows(run)] == [1, 2, 3, 4, 5, 6]

    # `train RUN/config.yaml` (the run's whole recipe) trains the same model, uninterrupted
    reference = tmp_path / "reference"
    result = CliRunner().invoke(app, ["train", str(run / "config.yaml"), "--out", str(reference)])
    assert result.exit_code == 0, result.output
    expected = load_file(reference / "model" / "model.safetensors")
    got = load_file(run / "model" / "model.safetensors")
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name

    def losses(rows):
        return [{k: v for k, v in row.items() if k != "tokens_per_s"} for row in rows]

    assert losses(_rows(reference)) == losses(_rows(run))
    for step in (3, 6):
        assert np.array_equal(
            np.asarray(Image.open(reference / "samples" / f"step-{step}.png")),
            np.asarray(Image.open(run / "samples" / f"step-{step}.png")),
        )
    assert yaml.safe_load((run / "config.yaml").read_text())["lora"] == {"rank": 4}


def test_rerunning_with_other_settings_is_refused_in_one_line(tmp_path):
    base = tiny_base_model(tmp_path / "base")
    records, run = coloured_pictures(tmp_path / "pictures", n=6), tmp_path / "run"
    _finetune(records, run, "--base", str(base), "--sample-every", "0")
    result = CliRunner().invoke(
        app, ["finetune", str(records), "--out", str(run), *FAST, "--base", str(base), "--lora", "4"]
    )
    assert result.exit_code == 2
    assert result.output == (
        f"error: {run / 'config.yaml'} was written for other settings ('lora' differs): rerun with the same "
        "options to resume that run, or use another --out\n"
    )
