"""Training YAML: a full example parses; every mistake is a one-line LuminaError naming file and key."""

import pytest
import yaml

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.train.config import load_config

STAGE = {"name": "s", "steps": 3, "data": {"shards": ["d"]}}
BASE = {"model": {"vocab_size": 8}, "stages": [STAGE]}


def _write(tmp_path, data):
    path = tmp_path / "train.yaml"
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data))
    return path


def test_full_config(tmp_path):
    config = load_config(
        _write(
            tmp_path,
            {
                "init_from": "org/model",
                "tokenizer": "tok",
                "image_tokenizer": "vq",
                "betas": [0.9, 0.99],
                "global_batch_size": 16,
                "micro_batch_size": 4,
                "bf16": True,
                "stages": [
                    {
                        "name": "fp-sft",
                        "area": 256,
                        "steps": 10,
                        "lr": 1e-4,
                        "min_lr": 1e-5,
                        "warmup_steps": 2,
                        "data": {"shards": ["a", "b"], "task_ratios": {"t2i": 0.5}},
                    },
                    {
                        "name": "omni",
                        "area": 256,
                        "steps": 5,
                        "data": {"world": {"tasks": {"t2i": 1, "editing": 2}}},
                    },
                ],
            },
        )
    )
    assert config.total_steps == 15 and config.betas == (0.9, 0.99) and config.z_loss_weight == 1e-5
    assert (
        config.stages[0].data.task_ratios == {"t2i": 0.5}
        and config.stages[1].data.world.tasks["editing"] == 2
    )
    assert [config.stage_at(s) for s in (0, 9, 10, 14)] == [(0, 0), (0, 9), (1, 0), (1, 4)]
    with pytest.raises(LuminaError, match="past the last stage"):
        config.stage_at(15)


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ("a: [", "invalid YAML"),
        ({**BASE, "learning_rate": 1}, "unknown key 'learning_rate'"),
        ({"model": {}, "stages": []}, "'stages' must be a non-empty list"),
        ({**BASE, "stages": [{**STAGE, "epochs": 1}]}, r"stages\[0\]: unknown key 'epochs'"),
        ({**BASE, "stages": [{**STAGE, "data": {}}]}, r"stages\[0\].data: give 'shards'"),
        (
            {**BASE, "stages": [{**STAGE, "data": {"shards": ["d"], "world": {"tasks": {"t2i": 1}}}}]},
            "not both",
        ),
        (
            {**BASE, "stages": [{**STAGE, "data": {"world": {"tasks": {"t2i": 1}}}}]},
            "needs the stage's 'area'",
        ),
        ({**BASE, "stages": [{"name": "s", "data": {"shards": ["d"]}}]}, r"stages\[0\]: missing key 'steps'"),
        ({**BASE, "global_batch_size": 6, "micro_batch_size": 4}, "not a multiple of micro_batch_size 4"),
        ({**BASE, "stages": [{**STAGE, "steps": 0}]}, r"stages\[0\].steps must be a positive integer"),
        ({**BASE, "context_drop": 1.5}, r"context_drop must be in \[0, 1\]"),
        ({"stages": [STAGE]}, "give 'model'"),
        ({**BASE, "stages": [{**STAGE, "lr": "fast"}]}, r"stages\[0\].lr must be a non-negative number"),
        ({**BASE, "betas": [0.9]}, r"betas must be two numbers in \[0, 1\)"),
        (
            {
                **BASE,
                "tokenizer": "t",
                "image_tokenizer": "v",
                "stages": [
                    {**STAGE, "area": 96, "data": {"world": {"tasks": {"t2i": 1}, "max_aspect": 0.5}}}
                ],
            },
            r"stages\[0\].data.world.max_aspect must be a number >= 1, got 0.5",
        ),
    ],
)
def test_mistakes_are_named(tmp_path, data, message):
    with pytest.raises(LuminaError, match=message) as error:
        load_config(_write(tmp_path, data))
    assert str(tmp_path / "train.yaml") in str(error.value) and "\n" not in str(error.value)


def test_missing_file(tmp_path):
    with pytest.raises(LuminaError, match="file not found"):
        load_config(tmp_path / "nope.yaml")


def test_relative_paths_are_read_beside_the_config(tmp_path):
    (tmp_path / "shards").mkdir()
    (tmp_path / "tok").mkdir()
    config = load_config(
        _write(
            tmp_path,
            {
                **BASE,
                "tokenizer": "tok",
                "image_tokenizer": "org/vq-repo",
                "stages": [{**STAGE, "data": {"shards": ["shards", "elsewhere"]}}],
            },
        )
    )
    assert config.tokenizer == str(tmp_path / "tok") and config.image_tokenizer == "org/vq-repo"
    assert config.stages[0].data.shards == [str(tmp_path / "shards"), "elsewhere"]
