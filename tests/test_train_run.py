"""End-to-end training runs on CPU: bit-exact resume after kill -9, torchrun with 2 ranks vs 1, shapes world."""

import json
import shutil
import subprocess
import time
from pathlib import Path

import pytest
import torch
import yaml
from safetensors.torch import load_file
from train_fixtures import (  # noqa: F401 (one_thread: a fixture)
    one_thread,
    run_env,
    tiny_image_tokenizer,
    tiny_model,
    tiny_text_tokenizer,
    train_command,
    write_config,
    write_synthetic_shards,
)

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.model import load_transformer
from lumina_mgpt.train.checkpoint import PAUSE_ENV
from lumina_mgpt.vocab import TokenLayout


def _wait_for(path: Path, process: subprocess.Popen, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        assert process.poll() is None, f"the run ended before {path.name} appeared"
        assert time.monotonic() < deadline, f"{path} did not appear"
        time.sleep(0.005)


def _start(config: Path, run: Path, **env: str) -> subprocess.Popen:
    """A training run in the background, its stderr merged into stdout."""
    command, out = train_command(config, run), subprocess.PIPE
    return subprocess.Popen(command, env=run_env(**env), stdout=out, stderr=subprocess.STDOUT, text=True)


def _kill(process: subprocess.Popen) -> str:
    process.kill()
    output = process.communicate()[0]
    assert process.returncode == -9
    return output


def _weights(out: Path) -> dict[str, torch.Tensor]:
    return load_file(out / "model" / "model.safetensors")


def _losses(out: Path) -> dict[int, float]:
    """Loss per step."""
    return {
        row["step"]: row["loss"] for row in map(json.loads, (out / "metrics.jsonl").read_text().splitlines())
    }


def _assert_same_run(one: Path, two: Path) -> None:
    """Two runs of the 6-step tiny config logged the same losses and exported the same weights (fp32 tolerance)."""
    one_losses, two_losses = _losses(one), _losses(two)
    assert list(one_losses) == list(two_losses) == [1, 2, 3, 4, 5, 6]
    for step in one_losses:
        assert two_losses[step] == pytest.approx(one_losses[step], rel=1e-5), step
    expected, got = _weights(one), _weights(two)
    for name in expected:
        torch.testing.assert_close(got[name], expected[name], rtol=1e-4, atol=1e-5)


def _train_here(config: Path, out: Path, time_limit: float | None = None) -> Path | None:
    import torch.distributed as dist

    from lumina_mgpt.train.config import load_config
    from lumina_mgpt.train.trainer import train

    try:
        return train(load_config(config), out, time_limit=time_limit)
    finally:
        dist.destroy_process_group()


def test_kill_mid_run_and_mid_checkpoint_then_resume_is_bit_exact(tmp_path):
    write_synthetic_shards(tmp_path / "shards")
    shards = [str(tmp_path / "shards")]
    config = write_config(
        tmp_path / "run.yaml",
        dropout=0.1,
        stages=[
            dict(name="fp-sft", steps=5, lr=3e-3, warmup_steps=2, area=64, data=dict(shards=shards)),
            dict(
                name="omni",
                steps=5,
                lr=1e-3,
                min_lr=1e-4,
                data=dict(shards=shards, task_ratios={"edit": 2.0}),
            ),
        ],
    )
    reference, run = tmp_path / "reference", tmp_path / "run"
    _train_here(config, reference)  # uninterrupted, in this process (one thread, as the runs below)
    checkpoints = run / "checkpoints"

    # 1: killed while step 6's checkpoint is written but not committed
    first = _start(config, run, **{PAUSE_ENV: "6:120"})
    _wait_for(checkpoints / "step-6.tmp" / ".metadata", first)
    _kill(first)
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-2", "step-4", "step-6.tmp"]

    # 2: resumes from step 4 (the last complete one), then is killed in the middle of step 7 or 8
    second = _start(config, run, **{PAUSE_ENV: "10:120"})
    _wait_for(checkpoints / "step-6", second)
    output = _kill(second)
    assert "resuming from" in output and "step-4 (step 4)" in output
    assert not (checkpoints / "step-6.tmp").exists()

    # 3: resumes from step 6 and finishes
    third = subprocess.run(
        train_command(config, run), env=run_env(), capture_output=True, text=True, check=True
    )
    assert "step-6 (step 6)" in third.stderr + third.stdout
    assert sorted(p.name for p in checkpoints.iterdir()) == ["step-10", "step-8"]  # keep_checkpoints: 2

    expected, got = _weights(reference), _weights(run)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    assert _losses(reference) == _losses(run)


def test_time_limit_checkpoints_and_stops_and_the_same_command_resumes_bit_exact(tmp_path):
    write_synthetic_shards(tmp_path / "shards")
    shards = [str(tmp_path / "shards")]
    config = write_config(
        tmp_path / "run.yaml",
        dropout=0.1,
        checkpoint_every=4,
        stages=[
            dict(name="fp-sft", steps=3, lr=3e-3, warmup_steps=2, area=64, data=dict(shards=shards)),
            dict(name="omni", steps=3, lr=1e-3, data=dict(shards=shards, task_ratios={"edit": 2.0})),
        ],
    )
    reference, run = tmp_path / "reference", tmp_path / "run"
    assert _train_here(config, reference) == reference / "model"
    first = subprocess.run(
        [*train_command(config, run), "--time-limit", "0"],
        env=run_env(),
        capture_output=True,
        text=True,
        check=True,
    )
    assert "time limit reached: stopped after step 1 of 6" in first.stderr + first.stdout
    assert "model written" not in first.stdout
    for stopped_after in (1, 2, 3, 4):  # a limit of 0 s: each call trains one step (step 4 was due anyway)
        if stopped_after > 1:
            assert _train_here(config, run, time_limit=0.0) is None
        assert (run / "checkpoints" / f"step-{stopped_after}").is_dir()
        assert not (run / "model").exists()
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-3", "step-4"]
    assert _train_here(config, run, time_limit=3600.0) == run / "model"  # finishes within the limit
    expected, got = _weights(reference), _weights(run)
    assert expected.keys() == got.keys()
    for name in expected:
        assert torch.equal(expected[name], got[name]), name
    assert _losses(reference) == _losses(run)


def test_a_checkpoint_of_another_model_or_damaged_is_refused_in_one_line_naming_its_folder(tmp_path):
    write_synthetic_shards(tmp_path / "shards")
    config, run = write_config(tmp_path / "run.yaml"), tmp_path / "run"
    _train_here(config, run)
    latest = run / "checkpoints" / "step-6"
    model = yaml.safe_load(config.read_text())["model"]
    for changed, cause in (
        ({"hidden_size": 48}, "Size mismatch between saved torch.Size([600, 32])"),
        ({"num_hidden_layers": 1}, "the model has no weight model.layers.1."),
    ):
        other = write_config(tmp_path / "other.yaml", model={**model, **changed})
        with pytest.raises(LuminaError, match="different model config or is damaged") as error:
            _train_here(other, run)
        assert f"checkpoint {latest} ({cause}" in str(error.value) and "\n" not in str(error.value)
    with open(latest / "__0_0.distcp", "r+b") as file:
        file.truncate(1000)
    with pytest.raises(LuminaError, match=f"cannot resume from checkpoint {latest} .*delete that folder"):
        _train_here(config, run)
    shutil.rmtree(latest)
    assert _train_here(config, run) == run / "model"  # from step 4


def test_a_file_given_as_out_or_export_folder_is_refused_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from lumina_mgpt.cli import app

    config, afile = write_config(tmp_path / "run.yaml"), tmp_path / "afile"
    afile.touch()
    for args in (["--out", str(afile)], ["--out", str(tmp_path / "run"), "--export", str(afile)]):
        result = CliRunner().invoke(app, ["train", str(config), *args])
        assert (result.exit_code, result.output) == (2, f"error: {afile} exists and is not a folder\n")


def test_an_export_folder_inside_the_run_folder_is_refused_in_one_line(tmp_path):
    from typer.testing import CliRunner

    from lumina_mgpt.cli import app

    config, run = write_config(tmp_path / "run.yaml"), tmp_path / "run"
    for export in (run, run / "checkpoints" / "step-5"):
        result = CliRunner().invoke(app, ["train", str(config), "--out", str(run), "--export", str(export)])
        assert (result.exit_code, result.output) == (
            2,
            f"error: --export {export} is inside the run's --out folder {run}: give a folder outside it\n",
        )
    assert not run.exists()


def test_a_loss_that_becomes_nan_stops_the_run_on_its_own_line_keeping_the_checkpoints(tmp_path):
    write_synthetic_shards(tmp_path / "shards")
    shards = [str(tmp_path / "shards")]
    config = write_config(
        tmp_path / "run.yaml",
        stages=[
            dict(name="good", steps=2, lr=3e-3, area=64, data=dict(shards=shards)),
            dict(name="huge", steps=4, lr=1e30, area=64, data=dict(shards=shards)),  # weights overflow
        ],
    )
    run = tmp_path / "run"
    result = subprocess.run(train_command(config, run), env=run_env(), capture_output=True, text=True)
    assert result.returncode == 2, result.stderr[-2000:]
    assert (
        f"\nerror: loss became nan at step 4 (stage 'huge', lr 1e+30); nothing was saved, the last checkpoint "
        f"({run / 'checkpoints' / 'step-2'}) is kept" in result.stderr
    )
    assert sorted(p.name for p in (run / "checkpoints").iterdir()) == ["step-2"]
    assert not (run / "model").exists() and list(_losses(run)) == [1, 2, 3]


def test_resuming_past_the_configs_last_step_is_refused_and_at_it_exports_again(tmp_path):
    write_synthetic_shards(tmp_path / "shards")
    config, run = write_config(tmp_path / "run.yaml"), tmp_path / "run"
    _train_here(config, run)
    shutil.rmtree(run / "model")
    assert _train_here(config, run) == run / "model"  # a finished run: exported again, nothing trained
    assert len(_losses(run)) == 6
    stages = yaml.safe_load(config.read_text())["stages"]
    shorter = write_config(tmp_path / "shorter.yaml", stages=[{**stages[0], "steps": 4}])
    with pytest.raises(LuminaError, match=r"step-6 is past this config's last step \(4\)"):
        _train_here(shorter, run)


def test_a_world_area_beyond_the_layouts_largest_side_is_refused_before_training(tmp_path):
    tokenizer = tiny_text_tokenizer(tmp_path / "tokenizer")
    world = dict(world=dict(tasks={"t2i": 1.0}))
    config = write_config(
        tmp_path / "world.yaml",
        tokenizer=str(tokenizer),
        image_tokenizer=str(tmp_path / "vq"),  # not read: the area is refused first
        stages=[dict(name="big", area=4096, steps=2, data=world)],
    )
    with pytest.raises(
        LuminaError,
        match=r"stages\[0\] \('big'\): area 4096 has canvases of side 8192 px, "
        r"larger than layout ours's largest image side, 512 px",
    ):
        _train_here(config, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_two_ranks_under_torchrun_follow_the_single_process_loss_curve(tmp_path):
    write_synthetic_shards(tmp_path / "shards")
    single = write_config(tmp_path / "single.yaml", micro_batch_size=4)  # 2 accumulation steps of 4
    double = write_config(tmp_path / "double.yaml", micro_batch_size=2)  # 2 ranks x 2 steps of 2
    one = _start(single, tmp_path / "one")
    two = subprocess.run(
        train_command(double, tmp_path / "two", nproc=2), env=run_env(), capture_output=True, text=True
    )
    one_output = one.communicate()[0]
    assert one.returncode == 0, one_output[-2000:]
    assert two.returncode == 0, two.stderr[-2000:]
    # same global batches, context drops and initial weights; only summation order and padding differ
    _assert_same_run(tmp_path / "one", tmp_path / "two")


def test_packed_rows_on_two_ranks_follow_the_padded_single_process_run(tmp_path):
    """Packing with document masks changes no loss and no weight: rows of one or two samples, one row per
    micro-batch, so the ranks have different numbers of micro-batches (the one with fewer runs idle ones)."""
    write_synthetic_shards(tmp_path / "shards")
    padded = write_config(tmp_path / "padded.yaml", micro_batch_size=4)
    packed = write_config(tmp_path / "packed.yaml", micro_batch_size=1, pack_length=40)
    _train_here(padded, tmp_path / "one")
    two = subprocess.run(
        train_command(packed, tmp_path / "two", nproc=2), env=run_env(), capture_output=True, text=True
    )
    assert two.returncode == 0, two.stderr[-2000:]
    _assert_same_run(tmp_path / "one", tmp_path / "two")


def test_shapes_world_run_learns_and_exports_a_loadable_model(tmp_path):
    from lumina_mgpt.pipeline import LuminaMGPTPipeline

    tokenizer, vq = tiny_text_tokenizer(tmp_path / "tokenizer"), tiny_image_tokenizer(tmp_path / "vq")
    config = write_config(
        tmp_path / "world.yaml",
        tokenizer=str(tokenizer),
        image_tokenizer=str(vq),
        context_drop=0.1,
        log_every=1,
        checkpoint_every=100,
        global_batch_size=8,
        micro_batch_size=8,
        stages=[
            dict(
                name="world",
                area=64,
                steps=20,
                lr=1e-2,
                warmup_steps=3,
                min_lr=1e-3,
                data=dict(world=dict(tasks={"t2i": 2.0, "count_qa": 1.0, "segmentation": 1.0})),
            )
        ],
    )
    folder = _train_here(config, tmp_path / "out")
    losses = list(_losses(tmp_path / "out").values())
    assert sum(losses[-5:]) / 5 < 0.6 * sum(losses[:3]) / 3, losses
    model = load_transformer(folder)
    assert model.config.num_hidden_layers == 2 and model.config.dropout == 0.0
    layout = TokenLayout.from_tokenizer(folder, "ours")
    assert (model.config.bos_token_id, model.config.eos_token_id) == (layout.bos_id, layout.stop_ids[0])
    pipe = LuminaMGPTPipeline.from_pretrained(folder)
    image = pipe("a red circle", 64, 64, seed=0, progress=False).images[0]
    assert image.size == (64, 64)


def test_init_from_a_checkpoint_and_activation_checkpointing(tmp_path):
    import typer
    from typer.testing import CliRunner

    from lumina_mgpt.train.cli import train as train_command_function

    start = tiny_model(tmp_path / "start")
    write_synthetic_shards(tmp_path / "shards")
    app = typer.Typer()
    app.command()(train_command_function)
    runs = {}
    for name, checkpointing, lr in (
        ("frozen", False, 0.0),
        ("plain", False, 1e-2),
        ("recompute", True, 1e-2),
    ):
        config = write_config(
            tmp_path / f"{name}.yaml",
            activation_checkpointing=checkpointing,
            stages=[dict(name="s", steps=2, lr=lr, area=64, data=dict(shards=[str(tmp_path / "shards")]))],
        )
        result = CliRunner().invoke(
            app, [str(config), "--out", str(tmp_path / name), "--init-from", str(tmp_path / "start")]
        )
        assert result.exit_code == 0, result.output
        runs[name] = _weights(tmp_path / name)
    # the config's model (hidden 32, 4 heads) is ignored: the run starts from the checkpoint, and with lr 0
    # its weights come back unchanged
    assert load_transformer(tmp_path / "frozen" / "model").config.num_attention_heads == 2
    for name, tensor in start.state_dict().items():
        assert torch.equal(runs["frozen"][name], tensor), name
    # recomputing activations in the backward pass changes nothing
    assert _losses(tmp_path / "plain") == _losses(tmp_path / "recompute")
    for name, tensor in runs["plain"].items():
        assert torch.equal(runs["recompute"][name], tensor), name
    assert not torch.equal(runs["plain"]["lm_head.weight"], start.state_dict()["lm_head.weight"])
    # --export writes the latest checkpoint (here the last step's) as a model, without training
    result = CliRunner().invoke(
        app,
        [
            str(tmp_path / "plain.yaml"),
            "--out",
            str(tmp_path / "plain"),
            "--init-from",
            str(tmp_path / "start"),
            "--export",
            str(tmp_path / "exported"),
        ],
    )
    assert result.exit_code == 0, result.output
    exported = load_file(tmp_path / "exported" / "model.safetensors")
    assert exported.keys() == runs["plain"].keys()
    for name, tensor in runs["plain"].items():
        assert torch.equal(exported[name], tensor), name
    assert len(_losses(tmp_path / "plain")) == 2  # nothing more was trained or logged
    result = CliRunner().invoke(
        app,
        [
            str(tmp_path / "plain.yaml"),
            "--out",
            str(tmp_path / "empty"),
            "--export",
            str(tmp_path / "nothing"),
        ],
    )
    assert "no complete checkpoint under" in str(result.exception)


def test_an_export_carries_the_base_models_tokenizers_and_sampling_preset(tmp_path):
    base = tmp_path / "base"
    tiny_model(base)
    tiny_text_tokenizer(base)
    tiny_image_tokenizer(base / "vq")
    (base / "sampling.json").write_text('{"speculative": "exact"}')
    write_synthetic_shards(tmp_path / "shards")
    config = write_config(
        tmp_path / "c.yaml",
        stages=[dict(name="s", steps=1, area=64, data=dict(shards=[str(tmp_path / "shards")]))],
    )
    import torch.distributed as dist

    from lumina_mgpt.train.config import load_config
    from lumina_mgpt.train.trainer import train

    try:
        folder = train(load_config(config, init_from=str(base)), tmp_path / "out")
    finally:
        dist.destroy_process_group()
    assert (folder / "sampling.json").read_text() == '{"speculative": "exact"}'
    assert (folder / "tokenizer.json").read_bytes() == (base / "tokenizer.json").read_bytes()
    assert (
        load_file(folder / "vq" / "model.safetensors").keys()
        == load_file(base / "vq" / "model.safetensors").keys()
    )


def test_a_run_grows_its_base_models_vocabulary_into_an_extended_tokenizer(tmp_path):
    import torch.distributed as dist

    from lumina_mgpt.text import TextTokenizer
    from lumina_mgpt.train.config import load_config
    from lumina_mgpt.train.trainer import train

    base = tmp_path / "base"
    start = tiny_model(base)
    tiny_text_tokenizer(base)
    extended = TextTokenizer.from_folder(base).with_numbers(257)
    extended.save(tmp_path / "extended")
    assert extended.vocab_size > 600 and extended.encode("145") != TextTokenizer.from_folder(base).encode(
        "145"
    )
    write_synthetic_shards(tmp_path / "shards")
    stage = dict(name="s", steps=1, lr=0.0, area=64, data=dict(shards=[str(tmp_path / "shards")]))
    plain = write_config(tmp_path / "plain.yaml", tokenizer=str(tmp_path / "extended"), stages=[stage])
    with pytest.raises(LuminaError, match=r"smaller than the tokenizer.s .* set grow_vocabulary: true"):
        try:
            train(load_config(plain, init_from=str(base)), tmp_path / "refused")
        finally:
            dist.destroy_process_group()
    grow = write_config(
        tmp_path / "grow.yaml", tokenizer=str(tmp_path / "extended"), grow_vocabulary=True, stages=[stage]
    )
    try:
        folder = train(load_config(grow, init_from=str(base)), tmp_path / "out")
    finally:
        dist.destroy_process_group()
    grown = load_transformer(folder)
    assert grown.config.vocab_size == extended.vocab_size
    assert (folder / "tokenizer.json").read_bytes() == (tmp_path / "extended" / "tokenizer.json").read_bytes()
    for name in ("model.embed_tokens.weight", "lm_head.weight"):
        old, new = start.state_dict()[name], grown.state_dict()[name]
        assert torch.equal(new[:600], old)  # lr 0: every existing token keeps its rows
        assert torch.allclose(new[600:], old.mean(0).expand(extended.vocab_size - 600, -1))
