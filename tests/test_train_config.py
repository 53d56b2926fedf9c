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
        (
            {**BASE, "stages": [{**STAGE, "lr": "fast"}]},
            r"stages\[0\].lr must be a finite number, got 'fast'",
        ),
        ({**BASE, "betas": [0.9]}, r"betas must be a list of 2 finite numbers, got \[0.9\]"),
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


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({**BASE, "betas": 5}, "betas must be a list of 2 finite numbers, got 5"),
        ({**BASE, "betas": [0.9, 1.0]}, r"betas must be in \[0, 1\), got \[0.9, 1.0\]"),
        ({**BASE, "stages": [{**STAGE, "area": "64"}]}, r"stages\[0\].area must be an integer, got '64'"),
        ({**BASE, "stages": [{**STAGE, "area": 50}]}, r"stages\[0\].area must be a positive multiple of 32"),
        (
            {**BASE, "stages": [{**STAGE, "warmup_steps": "1"}]},
            r"stages\[0\].warmup_steps must be an integer",
        ),
        (
            {**BASE, "stages": [{**STAGE, "warmup_steps": 4}]},
            r"warmup_steps must be in \[0, steps\] = \[0, 3\]",
        ),
        ({**BASE, "seed": -1}, "seed must be >= 0, got -1"),
        ({**BASE, "seed": "zero"}, "seed must be an integer, got 'zero'"),
        ({**BASE, "seed": 1.5}, "seed must be an integer, got 1.5"),
        (
            {**BASE, "stages": [{**STAGE, "data": {"world": {"tasks": ["t2i"]}}}]},
            r"stages\[0\].data.world.tasks must be a mapping of strings to finite numbers, got \['t2i'\]",
        ),
        (
            {
                **BASE,
                "tokenizer": "t",
                "image_tokenizer": "v",
                "stages": [{**STAGE, "area": 64, "data": {"world": {"tasks": {"t2i": 0}}}}],
            },
            r"stages\[0\].data.world.tasks must be weights >= 0 with a positive sum",
        ),
        ({**BASE, "dropout": 5.0}, r"dropout must be in \[0, 1\), got 5.0"),
        (
            {**BASE, "stages": [{**STAGE, "lr": float("nan")}]},
            r"stages\[0\].lr must be a finite number, got nan",
        ),
        (
            {**BASE, "stages": [{**STAGE, "lr": float("inf")}]},
            r"stages\[0\].lr must be a finite number, got inf",
        ),
        ({**BASE, "stages": [{**STAGE, "lr": -1e-3}]}, r"stages\[0\].lr must be >= 0"),
        (
            {**BASE, "stages": [{**STAGE, "lr": 1e-4, "min_lr": 1e-3}]},
            r"stages\[0\].min_lr must be in \[0, lr\]",
        ),
        ({**BASE, "grad_clip": 0}, "grad_clip must be > 0"),
        ({**BASE, "weight_decay": -0.1}, "weight_decay must be >= 0"),
        ({**BASE, "z_loss_weight": float("inf")}, "z_loss_weight must be a finite number"),
        (
            {**BASE, "stages": [{**STAGE, "data": {"shards": "/nonexistent/shards"}}]},
            r"stages\[0\].data.shards must be a list of strings, got '/nonexistent/shards'",
        ),
        ({**BASE, "stages": "s"}, "stages must be a list of mappings"),
        ({**BASE, "model": {"vocab_size": 8, "hidden_sizee": 32}}, "model: unknown key 'hidden_sizee'"),
        ({**BASE, "model": 5}, "model must be a mapping of strings to values, got 5"),
        ({**BASE, "init_from": "org/model"}, "give either 'model' or 'init_from', not both"),
        ({**BASE, "grow_vocabulary": True}, "grow_vocabulary grows init_from's vocabulary: give 'init_from'"),
        ({**BASE, "bf16": "yes"}, "bf16 must be true or false or 'auto', got 'yes'"),
        (
            {**BASE, "activation_checkpointing": "maybe"},
            "activation_checkpointing must be true or false or 'auto'",
        ),
    ],
)
def test_wrong_types_and_ranges_are_named_by_key_path(tmp_path, data, message):
    with pytest.raises(LuminaError, match=message) as error:
        load_config(_write(tmp_path, data))
    assert "\n" not in str(error.value)


def test_switches_take_true_false_or_auto(tmp_path):
    config = load_config(_write(tmp_path, {**BASE, "bf16": False, "activation_checkpointing": "auto"}))
    assert (config.bf16, config.activation_checkpointing) == (False, "auto")


def test_a_file_that_is_not_utf8_is_named(tmp_path):
    path = tmp_path / "train.yaml"
    path.write_bytes(b"seed: \xff\n")
    with pytest.raises(LuminaError, match=f"{path}: not UTF-8 text"):
        load_config(path)


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


def test_init_from_option_replaces_the_model_key(tmp_path):
    path = _write(tmp_path, {"stages": [STAGE]})
    with pytest.raises(LuminaError, match="give 'model'"):
        load_config(path)
    assert load_config(path, init_from="org/model").init_from == "org/model"
