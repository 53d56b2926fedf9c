"""The long run's recipe, configs/train/shapes.yaml: it loads, it continues the shipped model with the model's own
text tokenizer, and that tokenizer already has one token per pixel coordinate (`extend-tokenizer` adds nothing, byte
for byte), so a box is always seven tokens."""

from pathlib import Path

import numpy as np
from typer.testing import CliRunner

from lumina_mgpt.cli import app
from lumina_mgpt.text import TextTokenizer
from lumina_mgpt.train.config import load_config
from lumina_mgpt.world.tasks import sample_task

RECIPE = Path(__file__).resolve().parents[1] / "configs" / "train" / "shapes.yaml"


def test_the_recipe_continues_the_shipped_model_whose_tokenizer_holds_every_coordinate(tmp_path):
    config = load_config(RECIPE)
    assert config.tokenizer == config.init_from and not config.grow_vocabulary
    result = CliRunner().invoke(app, ["extend-tokenizer", config.init_from, "--out", str(tmp_path / "tok")])
    assert result.exit_code == 0, result.output
    assert result.output.endswith(f"1926 -> 1926 tokens -> {tmp_path / 'tok' / 'tokenizer.json'}\n")
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
