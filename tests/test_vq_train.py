"""VQ training: config parsing, the data stream, the codebook, and exact resumption from a checkpoint."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import lumina_mgpt.vq.train as vq_train
from lumina_mgpt.errors import LuminaError
from lumina_mgpt.vq import load_image_tokenizer
from lumina_mgpt.vq.patch import SHAPES_PALETTE
from lumina_mgpt.vq.tokenizer import ImageTokenizer, pixels_to_uint8
from lumina_mgpt.vq.train import Codebook, QuantizerConfig, SceneBatches, TrainConfig, learning_rate

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "vq"


def tiny_config(steps: int) -> TrainConfig:
    return TrainConfig.from_dict(
        {
            "model": {"block_out_channels": [32, 32], "codebook_size": 16},
            "quantizer": {"restart_every": 2, "dead_usage": 0.5},
            "data": {
                "canvases": [[48, 48]],
                "batch_size": 2,
                "mix": {"scene": 0.5, "segmentation map": 0.25, "edge map": 0.25},
            },
            "optim": {"steps": steps, "warmup": 1},
            "run": {
                "device": "cpu",
                "log_every": 1,
                "eval_every": 0,
                "checkpoint_every": 2,
                "eval_scenes": 0,
            },
        }
    )


def tiny_patch_palette():
    """A patch-palette tokenizer of a few thousand weights (4 px patches, 16 codes)."""
    return TrainConfig.from_dict(
        {
            "model": {
                "architecture": "patch-palette",
                "patch_size": 4,
                "encoder_hidden": 16,
                "code_dim": 4,
                "codebook_size": 16,
                "decoder_channels": 16,
                "decoder_blocks": 1,
                "upsample_channels": 8,
            }
        }
    ).model


@pytest.mark.parametrize(
    "name",
    [
        "shapes-patch.yaml",
        "shapes-patch-finetune.yaml",
        "shapes-patch-panels.yaml",
        "shapes.yaml",
        "shapes-finetune.yaml",
    ],
)
def test_shipped_configs_parse(name):
    config = TrainConfig.from_yaml(CONFIGS / name)
    assert config.model.codebook_size == 1024
    if config.model.architecture == "patch-palette":
        assert config.model.patch_size == 8 and config.quantizer.restart_on == "worst"
    else:
        assert len(config.model.block_out_channels) == 4  # f8
    assert (128, 128) in config.data.canvases and (160, 96) in config.data.canvases
    assert all(w % 32 == 0 and h % 32 == 0 for w, h in config.data.canvases)


def test_config_errors_name_the_field(tmp_path):
    with pytest.raises(LuminaError, match=r"unknown field\(s\) \['lr_max'\] in section 'optim'"):
        TrainConfig.from_dict({"optim": {"lr_max": 1}})
    with pytest.raises(LuminaError, match="unknown section 'trainer'"):
        TrainConfig.from_dict({"trainer": {}})
    with pytest.raises(LuminaError, match=r"unknown image kind\(s\) \['photo'\]"):
        TrainConfig.from_dict({"data": {"mix": {"photo": 1.0}}})
    with pytest.raises(LuminaError, match=r"missing\.yaml: file not found"):
        TrainConfig.from_yaml(tmp_path / "missing.yaml")


def test_batches_are_a_pure_function_of_the_step():
    config = tiny_config(4)
    a, b = SceneBatches(config.data, seed=0), SceneBatches(config.data, seed=0)
    assert torch.equal(a[7], b[7]) and not torch.equal(a[7], a[8])
    assert a[7].dtype == torch.uint8 and a[7].shape[0] == 2 and a[7].shape[-1] == 3


def test_learning_rate_schedule():
    optim = tiny_config(100).optim
    optim.warmup, optim.lr, optim.min_lr_ratio = 10, 1.0, 0.1
    assert learning_rate(0, optim) == pytest.approx(0.1) and learning_rate(9, optim) == pytest.approx(1.0)
    assert learning_rate(10, optim) == pytest.approx(1.0) and learning_rate(100, optim) == pytest.approx(0.1)


def test_ema_codebook_moves_to_assigned_means_and_restarts_dead_codes():
    tokenizer = ImageTokenizer.from_config(tiny_config(1).model.vqmodel_kwargs())
    codebook = Codebook(tokenizer, QuantizerConfig(kind="ema", ema_decay=0.0, dead_usage=0.5))
    vectors = torch.tensor([[1.0, 0, 0, 0], [3.0, 0, 0, 0], [0, 2.0, 0, 0]])
    codebook.update(vectors, torch.tensor([5, 5, 9]))
    torch.testing.assert_close(codebook.weight[5], torch.tensor([2.0, 0, 0, 0]), atol=1e-4, rtol=0)
    torch.testing.assert_close(codebook.weight[9], torch.tensor([0, 2.0, 0, 0]), atol=1e-4, rtol=0)
    assert codebook.restart_dead(vectors, torch.Generator().manual_seed(0)) == 14  # all but codes 5 and 9
    restarted = codebook.weight[[i for i in range(16) if i not in (5, 9)]]
    assert all(any(torch.equal(row, v) for v in vectors) for row in restarted)
    assert not codebook.weight.requires_grad


class Interrupted(Exception):
    pass


def crash_after_step_2_then_resume(config: TrainConfig, out: Path, monkeypatch) -> None:
    """Train `config` into `out`, the run dying right after its step-2 checkpoint, then resume it to the end."""
    original_save = vq_train._atomic_save

    def crash_after_step_2(obj, path):
        original_save(obj, path)
        if obj["step"] == 2:
            raise Interrupted

    monkeypatch.setattr(vq_train, "_atomic_save", crash_after_step_2)
    with pytest.raises(Interrupted):
        vq_train.train(config, out, show_progress=False)
    monkeypatch.setattr(vq_train, "_atomic_save", original_save)
    assert not (out / "tokenizer").exists()
    vq_train.train(config, out, show_progress=False)


def assert_same_tokenizer(a_folder: Path, b_folder: Path) -> None:
    a, b = load_image_tokenizer(a_folder), load_image_tokenizer(b_folder)
    for (k, x), (_, y) in zip(a.vq.state_dict().items(), b.vq.state_dict().items(), strict=True):
        assert torch.equal(x, y), k


def test_training_resumes_exactly_and_writes_a_loadable_tokenizer(tmp_path, monkeypatch):
    straight = vq_train.train(tiny_config(4), tmp_path / "straight", show_progress=False)
    assert straight["steps"] == 4
    crash_after_step_2_then_resume(tiny_config(4), tmp_path / "resumed", monkeypatch)
    assert_same_tokenizer(tmp_path / "straight" / "tokenizer", tmp_path / "resumed" / "tokenizer")
    records = [json.loads(line) for line in (tmp_path / "resumed" / "log.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records] == [1, 2, 3, 4]  # steps 3 and 4 appended by the resumed run
    a = load_image_tokenizer(tmp_path / "straight" / "tokenizer")
    assert a.factor == 2 and a.codebook_size == 16 and np.isfinite(records[-1]["loss"])


def test_quantiser_starts_late_from_k_means_and_resumes_exactly(tmp_path, monkeypatch):
    def late(steps: int) -> TrainConfig:
        config = tiny_config(steps)
        config.quantizer.start, config.quantizer.kmeans_batches = 3, 2
        config.quantizer.restart_every = 1000
        return config

    vq_train.train(
        late(3), tmp_path / "before", show_progress=False
    )  # stops just before the quantiser starts
    records = [json.loads(line) for line in (tmp_path / "before" / "log.jsonl").read_text().splitlines()]
    assert [r["perplexity"] for r in records] == [None, None, None]  # no codes are chosen before the start
    straight = vq_train.train(late(5), tmp_path / "straight", show_progress=False)
    assert straight["steps"] == 5
    records = [json.loads(line) for line in (tmp_path / "straight" / "log.jsonl").read_text().splitlines()]
    assert records[2]["perplexity"] is None and records[3]["perplexity"] > 1
    crash_after_step_2_then_resume(late(5), tmp_path / "resumed", monkeypatch)  # dies before the start
    assert_same_tokenizer(tmp_path / "straight" / "tokenizer", tmp_path / "resumed" / "tokenizer")


def test_k_means_initialisation_ends_on_the_means_of_its_clusters():
    tokenizer = ImageTokenizer.from_config(tiny_config(1).model.vqmodel_kwargs())  # 16 codes of 4 dims
    vectors = torch.randn(400, 4, generator=torch.Generator().manual_seed(1))

    def initialised(iterations: int) -> torch.Tensor:
        codebook = Codebook(tokenizer, QuantizerConfig())
        codebook.initialise(vectors, torch.Generator().manual_seed(0), iterations)
        assert torch.equal(codebook.sums, codebook.weight) and torch.equal(codebook.counts, torch.ones(16))
        return codebook.weight.detach().clone()

    picks, centres = initialised(0), initialised(50)
    assert all(any(torch.equal(row, v) for v in vectors) for row in picks)  # no iteration: random vectors
    codes = torch.cdist(vectors, centres).argmin(1)
    for code in codes.unique():  # a fixed point of Lloyd's step: each code is the mean of its vectors
        torch.testing.assert_close(centres[code], vectors[codes == code].mean(0), atol=1e-5, rtol=0)

    def error(codebook: torch.Tensor) -> float:
        return float(torch.cdist(vectors, codebook).min(1).values.square().mean())

    assert error(centres) < 0.8 * error(picks)


def test_pixel_loss_weights_l1_and_mse():
    recon, target = torch.zeros(1, 3, 4, 4), torch.full((1, 3, 4, 4), 0.5)
    optim = tiny_config(1).optim
    optim.l1_weight, optim.l2_weight = 0.0, 2.0
    assert vq_train.pixel_loss(recon, target, optim).item() == pytest.approx(0.5)  # 2 * 0.25
    optim.l1_weight, optim.l2_weight = 3.0, 0.0
    assert vq_train.pixel_loss(recon, target, optim).item() == pytest.approx(1.5)


def test_straight_through_codebook_learns_by_gradient_and_only_counts_usage():
    tokenizer = ImageTokenizer.from_config(tiny_config(1).model.vqmodel_kwargs())
    codebook = Codebook(tokenizer, QuantizerConfig(kind="straight_through", ema_decay=0.5))
    before = codebook.weight.detach().clone()
    codebook.update(torch.ones(2, 4), torch.tensor([3, 3]))
    assert codebook.weight.requires_grad and torch.equal(codebook.weight.detach(), before)
    assert codebook.counts[3].item() == pytest.approx(0.5 * 1 + 0.5 * 2) and codebook.counts[0].item() == 0.5


def test_restart_on_the_worst_quantised_vectors():
    tokenizer = ImageTokenizer.from_config(tiny_config(1).model.vqmodel_kwargs())
    codebook = Codebook(tokenizer, QuantizerConfig(dead_usage=0.5))
    codebook.counts[14:] = 0.0  # codes 14 and 15 are dead
    vectors = torch.arange(20.0).repeat_interleave(4).view(5, 4, 4)[:, 0]
    errors = torch.tensor([0.1, 5.0, 0.2, 3.0, 0.0])
    assert codebook.restart_dead(vectors, torch.Generator().manual_seed(0), errors) == 2
    assert torch.equal(codebook.weight[14:], vectors[[1, 3]]) and codebook.counts[14:].tolist() == [1.0, 1.0]


def test_patch_palette_training_writes_a_painting_tokenizer(tmp_path):
    config = tiny_config(2)
    config.model = tiny_patch_palette()
    config.optim.edge_weight = 4.0
    config.quantizer.restart_on = "worst"
    metrics = vq_train.train(config, tmp_path / "run", show_progress=False)
    assert metrics["steps"] == 2
    tokenizer = load_image_tokenizer(tmp_path / "run" / "tokenizer")
    assert tokenizer.architecture == "patch-palette" and tokenizer.factor == 4
    images = SceneBatches(config.data, seed=5)[0]
    codes = tokenizer.encode(images.permute(0, 3, 1, 2).float() / 127.5 - 1)
    painted = {tuple(c) for c in pixels_to_uint8(tokenizer.decode(codes)).reshape(-1, 3).tolist()}
    assert painted <= set(SHAPES_PALETTE) and len(SHAPES_PALETTE) == 19
    with pytest.raises(LuminaError, match=r"model\.architecture must be 'vqmodel' or 'patch-palette'"):
        TrainConfig.from_dict({"model": {"architecture": "unet"}})
    with pytest.raises(LuminaError, match=r"quantizer\.restart_on must be 'random' or 'worst'"):
        TrainConfig.from_dict({"quantizer": {"restart_on": "best"}})


@pytest.mark.parametrize("architecture", ["vqmodel", "patch-palette"])
def test_decoder_only_training_keeps_the_encoder_codebook_and_every_code(tmp_path, architecture):
    config = tiny_config(2)
    if architecture == "patch-palette":
        config.model = tiny_patch_palette()
    vq_train.train(config, tmp_path / "base", show_progress=False)
    base = load_image_tokenizer(tmp_path / "base" / "tokenizer")

    config.data.canvases = [(48, 48), (48, 96)]  # panels fit only the second
    config.data.mix = {"scene": 0.5, "scene over edge map": 0.5}
    config.optim.trainable, config.optim.lr = "decoder", 0.01
    config.run.init_from = str(tmp_path / "base" / "tokenizer")
    vq_train.train(config, tmp_path / "decoder", show_progress=False)
    tuned = load_image_tokenizer(tmp_path / "decoder" / "tokenizer")

    before, after = base.vq.state_dict(), tuned.vq.state_dict()
    decoder = {k for k in before if k.split(".")[0] in vq_train.DECODER_MODULES}
    assert decoder and all(torch.equal(before[k], after[k]) for k in before.keys() - decoder)
    assert any(not torch.equal(before[k], after[k]) for k in decoder)
    for t in range(4):  # scenes and panels
        pixels = SceneBatches(config.data, seed=9)[t].permute(0, 3, 1, 2).float() / 127.5 - 1
        assert torch.equal(base.encode(pixels), tuned.encode(pixels))
    records = [json.loads(line) for line in (tmp_path / "decoder" / "log.jsonl").read_text().splitlines()]
    assert {r["restarted"] for r in records} == {0}


def test_panel_kinds_are_drawn_only_on_canvases_that_halve():
    config = tiny_config(1)
    config.data.canvases, config.data.batch_size = [(48, 48), (64, 96)], 6
    config.data.mix = {"scene": 0.5, "segmentation map over scene": 0.5}
    source = SceneBatches(config.data, seed=1)
    shapes = {tuple(source[t].shape[1:3]) for t in range(12)}
    assert shapes == {(48, 48), (96, 64)}
    panel_batches = [b for b in (source[t] for t in range(12)) if b.shape[1] == 96]
    black = np.array([0, 0, 0], dtype=np.uint8)
    # a segmentation-map half over a scene half: black somewhere above the seam, never below it
    assert any((b[:, :48].numpy() == black).all(-1).any() for b in panel_batches)
    assert not any((b[:, 48:].numpy() == black).all(-1).any() for b in panel_batches)


def test_panel_and_decoder_only_config_errors():
    with pytest.raises(LuminaError, match=r"no canvas of data\.canvases fits 'scene over edge map'"):
        TrainConfig.from_dict({"data": {"canvases": [[64, 64]], "mix": {"scene over edge map": 1.0}}})
    with pytest.raises(LuminaError, match=r"no image kind of data\.mix fits the canvas 64x64"):
        TrainConfig.from_dict(
            {"data": {"canvases": [[64, 64], [64, 96]], "mix": {"edge map over scene": 1.0}}}
        )
    with pytest.raises(LuminaError, match=r"optim\.trainable 'decoder' needs run\.init_from"):
        TrainConfig.from_dict({"optim": {"trainable": "decoder"}})
    with pytest.raises(LuminaError, match=r"optim\.trainable must be 'all' or 'decoder'"):
        TrainConfig.from_dict({"optim": {"trainable": "encoder"}})
