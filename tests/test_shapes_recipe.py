"""The long run's recipe, configs/train/shapes.yaml: it loads, and its text tokenizer is the one `train-tokenizer`
makes from the world (byte for byte), with one token per pixel coordinate so a box is always seven tokens."""

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from lumina_mgpt.cli import app
from lumina_mgpt.text import TextTokenizer
from lumina_mgpt.train.config import load_config
from lumina_mgpt.world.tasks import sample_task

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "train" / "shapes.yaml"


def test_the_recipes_tokenizer_is_what_train_tokenizer_makes(tmp_path):
    config = load_config(RECIPE)
    command = ["train-tokenizer", "--out", str(tmp_path / "tok"), "--samples", "5000", "--vocab-size", "1800"]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 0, result.output
    made = (tmp_path / "tok" / "tokenizer.json").read_bytes()
    assert made == (Path(config.tokenizer) / "tokenizer.json").read_bytes()


def test_every_detection_answer_is_seven_tokens_of_the_recipes_tokenizer():
    tokenizer = TextTokenizer.from_folder(load_config(RECIPE).tokenizer)
    comma = tokenizer.encode(",")
    rng = np.random.default_rng(5)
    for width, height in ((128, 128), (160, 96), (96, 160)):
        for _ in range(20):
            answer = sample_task("detection", rng, width, height).messages[-1]["content"]
            numbers = [tokenizer.encode(n) for n in answer.split(",")]
            assert all(len(n) == 1 for n in numbers), answer
            assert (
                tokenizer.encode(answer)
                == numbers[0] + comma + numbers[1] + comma + numbers[2] + comma + numbers[3]
            )
