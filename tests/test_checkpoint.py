"""load_transformer / save_transformer: formats, layouts, round trips, offline hub ids, file-naming errors."""

import json
import logging
import shutil

import huggingface_hub.constants
import pytest
import torch
from model_fixtures import VOCAB, hf_logits, save_hf_folder, single_thread, tiny_hf_model
from safetensors.torch import load_file, save_file

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.model import load_transformer, save_transformer

pytest.importorskip("transformers")


@pytest.fixture(scope="module", autouse=True)
def _one_thread():
    with single_thread():
        yield


@pytest.fixture(scope="module")
def hf_model():
    return tiny_hf_model(swin_norm=False, kv_heads=2, shard_rows=2)


@pytest.fixture(scope="module")
def hf_folder(hf_model, tmp_path_factory):
    """A transformers `save_pretrained` folder (with model.vqmodel.* weights)."""
    return save_hf_folder(hf_model, tmp_path_factory.mktemp("hf"))


@pytest.fixture
def folder(hf_folder, tmp_path):
    """A private copy of the transformers folder that a test may damage."""
    return shutil.copytree(hf_folder, tmp_path / "model")


TOKENS = torch.randint(4, VOCAB, (2, 9), generator=torch.Generator().manual_seed(0))


def same_weights(a, b) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_loads_transformers_folder_in_eval_mode_and_skips_vqmodel(hf_folder, hf_model, caplog):
    with caplog.at_level(logging.INFO, logger="lumina_mgpt.model.checkpoint"):
        model = load_transformer(hf_folder)
    notes = [r.getMessage() for r in caplog.records if r.name == "lumina_mgpt.model.checkpoint"]
    assert len(notes) == 1 and "model.vqmodel" in notes[0]
    assert not model.training and next(model.parameters()).dtype == torch.float32
    assert all(not t.is_meta for t in [*model.parameters(), *model.buffers()])
    with torch.no_grad():
        assert (model(TOKENS) - hf_logits(hf_model, TOKENS)).abs().max() <= 1e-4


def test_dtype_argument(hf_folder):
    model = load_transformer(hf_folder, dtype=torch.bfloat16)
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}
    assert model.model.rotary.inv_freq.dtype == torch.float32


def test_save_load_round_trip_single_and_sharded(hf_folder, hf_model, tmp_path):
    model = load_transformer(hf_folder)
    save_transformer(model, tmp_path / "one")
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["config.json", "model.safetensors"]
    assert same_weights(load_transformer(tmp_path / "one"), model)

    save_transformer(model, tmp_path / "one", max_shard_bytes=40_000)  # overwrite with shards
    names = sorted(p.name for p in (tmp_path / "one").iterdir())
    shards = [n for n in names if n.startswith("model-")]
    assert len(shards) > 2 and "model.safetensors" not in names and "model.safetensors.index.json" in names
    assert not [n for n in names if n.endswith(".tmp")]
    index = json.loads((tmp_path / "one" / "model.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(model.state_dict()) and set(index["weight_map"].values()) == set(
        shards
    )
    reloaded = load_transformer(tmp_path / "one")
    assert same_weights(reloaded, model) and reloaded.config == model.config

    save_transformer(model, tmp_path / "one")  # back to one file: the stale shards and index go
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == ["config.json", "model.safetensors"]


def test_stock_transformers_loads_what_we_save(hf_folder, tmp_path):
    from transformers import ChameleonForConditionalGeneration

    model = load_transformer(hf_folder)
    save_transformer(model, tmp_path / "ours")
    theirs = ChameleonForConditionalGeneration.from_pretrained(tmp_path / "ours").eval()
    with torch.no_grad():
        assert (hf_logits(theirs, TOKENS) - model(TOKENS)).abs().max() <= 1e-4


def test_pytorch_bin_single_and_sharded(folder, hf_model):
    state = load_file(folder / "model.safetensors")
    (folder / "model.safetensors").unlink()
    torch.save(state, folder / "pytorch_model.bin")
    expected = hf_logits(hf_model, TOKENS)
    with torch.no_grad():
        assert (load_transformer(folder)(TOKENS) - expected).abs().max() <= 1e-4
    (folder / "pytorch_model.bin").unlink()
    names = sorted(state)
    halves = {"pytorch_model-00001-of-00002.bin": names[::2], "pytorch_model-00002-of-00002.bin": names[1::2]}
    for file, keys in halves.items():
        torch.save({k: state[k] for k in keys}, folder / file)
    weight_map = {k: file for file, keys in halves.items() for k in keys}
    (folder / "pytorch_model.bin.index.json").write_text(json.dumps({"weight_map": weight_map}))
    with torch.no_grad():
        assert (load_transformer(folder)(TOKENS) - expected).abs().max() <= 1e-4


def rewrite(folder, edit) -> None:
    state = load_file(folder / "model.safetensors")
    edit(state)
    save_file(state, folder / "model.safetensors", metadata={"format": "pt"})


def test_missing_config_and_missing_weights(folder):
    (folder / "model.safetensors").rename(folder / "weights.safetensors")
    with pytest.raises(LuminaError, match=r"/model: no weights found \(model\.safetensors"):
        load_transformer(folder)
    (folder / "config.json").unlink()
    with pytest.raises(LuminaError, match=r"config\.json: file not found"):
        load_transformer(folder)


def test_truncated_safetensors_names_file(folder):
    data = (folder / "model.safetensors").read_bytes()
    (folder / "model.safetensors").write_bytes(data[: len(data) - 64])
    with pytest.raises(LuminaError, match=r"model\.safetensors: corrupt or truncated safetensors file"):
        load_transformer(folder)
    (folder / "model.safetensors").write_bytes(b"\x00" * 4)
    with pytest.raises(LuminaError, match=r"model\.safetensors: corrupt or truncated"):
        load_transformer(folder)


def test_wrong_shape_unexpected_and_missing_tensors(folder):
    key = "model.layers.0.mlp.up_proj.weight"
    original = load_file(folder / "model.safetensors")

    rewrite(folder, lambda s: s.update({key: s[key][:, :10].contiguous()}))
    with pytest.raises(
        LuminaError, match=rf"model\.safetensors: tensor '{key}' has shape \[96, 10\], expected \[96, 64\]"
    ):
        load_transformer(folder)

    rewrite(folder, lambda s: s.update({key: original[key], "model.layers.0.extra.weight": torch.ones(2)}))
    with pytest.raises(
        LuminaError, match=r"model\.safetensors: unexpected tensor 'model\.layers\.0\.extra\.weight'"
    ):
        load_transformer(folder)

    rewrite(folder, lambda s: [s.pop("model.layers.0.extra.weight"), s.pop("lm_head.weight")])
    with pytest.raises(LuminaError, match=r"model: checkpoint is missing tensor 'lm_head\.weight'$"):
        load_transformer(folder)

    qk = "model.layers.1.self_attn.q_norm.weight"
    rewrite(folder, lambda s: s.update({"lm_head.weight": original["lm_head.weight"], qk: torch.ones(3, 16)}))
    with pytest.raises(LuminaError, match=rf"model\.safetensors: tensor '{qk}' has 3 rows; expected 4"):
        load_transformer(folder)


def test_missing_shard_names_index(hf_folder, tmp_path):
    save_transformer(load_transformer(hf_folder), tmp_path, max_shard_bytes=40_000)
    shard = sorted(tmp_path.glob("model-*.safetensors"))[1]
    shard.unlink()
    with pytest.raises(
        LuminaError, match=rf"model\.safetensors\.index\.json: shard {shard.name} is missing$"
    ):
        load_transformer(tmp_path)


def test_not_a_folder(tmp_path):
    with pytest.raises(LuminaError, match="no such folder"):
        load_transformer(tmp_path / "absent")
    (tmp_path / "file").write_text("x")
    with pytest.raises(LuminaError, match="expected a model folder, got a file"):
        load_transformer(tmp_path / "file")


@pytest.fixture
def offline_hub(tmp_path, monkeypatch):
    """An empty HF cache under tmp_path, used with HF_HUB_OFFLINE=1 (constants are read at import time, so
    they are patched alongside the environment)."""
    cache = tmp_path / "hub"
    cache.mkdir()
    for name, value in (("HF_HUB_CACHE", str(cache)), ("HF_HUB_OFFLINE", "1")):
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    return cache


def test_hub_repo_id_from_offline_cache(offline_hub, hf_folder, hf_model):
    commit = "0123456789abcdef0123456789abcdef01234567"
    repo = offline_hub / "models--lumina-test--tiny-chameleon"
    shutil.copytree(hf_folder, repo / "snapshots" / commit)
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    model = load_transformer("lumina-test/tiny-chameleon")
    with torch.no_grad():
        assert (model(TOKENS) - hf_logits(hf_model, TOKENS)).abs().max() <= 1e-4
    with pytest.raises(
        LuminaError,
        match=r"^lumina-test/absent is not in the Hugging Face cache and the Hub cannot be reached",
    ):
        load_transformer("lumina-test/absent")
