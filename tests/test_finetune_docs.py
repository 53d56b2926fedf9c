"""docs/finetune.md's walk-through, command for command, on generated pictures that are not shapes-world scenes
(a tiny tokenizer preset, a tiny base model and a few steps appended: the last value of an option wins)."""

import re
import shlex
from pathlib import Path

from PIL import Image
from train_fixtures import coloured_pictures, one_thread, tiny_base_model  # noqa: F401 (one_thread: a fixture)
from typer.testing import CliRunner

from lumina_mgpt.cli import app

GUIDE = Path(__file__).parents[1] / "docs" / "finetune.md"


def walkthrough_commands() -> list[list[str]]:
    section = GUIDE.read_text().split("## Walk-through", 1)[1]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    return [shlex.split(line) for line in block.splitlines() if line.strip()]


def test_the_walkthrough_runs_from_a_folder_of_pictures_to_generated_samples(tmp_path, monkeypatch):
    commands = walkthrough_commands()
    assert [c[:2] for c in commands] == [
        ["lumina-mgpt", "train-vq"],
        ["lumina-mgpt", "reconstruct"],
        ["lumina-mgpt", "finetune"],
        ["lumina-mgpt", "generate"],
    ]
    base = tiny_base_model(tmp_path / "base")
    coloured_pictures(tmp_path / "pictures", n=6)
    monkeypatch.chdir(tmp_path)
    small = {
        "train-vq": ["--preset", "tiny", "--steps", "4"],
        "reconstruct": [],
        "finetune": ["--base", str(base), "--steps", "2", "--area", "64", "--batch-size", "4",
                     "--sample-every", "0", "--checkpoint-every", "2", "--validate-every", "1"],
        "generate": ["--size", "64x64"],
    }  # fmt: skip
    outputs = {}
    for command in commands:
        result = CliRunner().invoke(app, [*command[1:], *small[command[1]]])
        assert result.exit_code == 0, (command, result.output)
        outputs[command[1]] = result.output
    assert re.search(r"PSNR \d+\.\d\d dB", outputs["reconstruct"])
    # the guard measured the new tokenizer against its own figure (training.json) and let the data through
    assert re.search(r"dB PSNR on 5 sampled images \(\d+\.\d dB on its own data\)\n", outputs["finetune"])
    assert (tmp_path / "my-run" / "model" / "README.md").is_file()
    # the export carries the tokenizer's own figure, so fine-tuning the export again is checked the same way
    assert (tmp_path / "my-run" / "model" / "vq" / "training.json").read_bytes() == (
        tmp_path / "my-vq" / "tokenizer" / "training.json"
    ).read_bytes()
    assert Image.open(next((tmp_path / "samples").glob("*.png"))).size == (64, 64)


def test_the_example_finetune_configs_load():
    from lumina_mgpt.train.config import load_config

    configs = sorted((Path(__file__).parents[1] / "configs" / "finetune").glob("*.yaml"))
    assert [c.name for c in configs] == ["full.yaml", "lora.yaml"]
    full, lora = (load_config(c) for c in configs)
    assert full.lora is None and (lora.lora.rank, lora.lora.alpha) == (8, 16.0)
    assert Path(full.init_from, "config.json").is_file() and full.validation.shards[0].endswith("data/val")
