"""Tensor parallelism: 2 gloo ranks give one process's logits (MHA, GQA, swin-norm; prefill, token steps,
speculative windows, rollback, masked CFG-style rows), and bad set-ups get one line."""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from test_generate_helpers import ours_folder
from test_model_kv_cache import tiny_config

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.model import ChameleonTransformer, KVCache, load_transformer, save_transformer
from lumina_mgpt.model.parallel import (
    apply_tensor_parallel,
    cache_heads,
    check_divisible,
    check_same_device,
    tensor_parallel_mesh,
)
from lumina_mgpt.pipeline import LuminaMGPTPipeline

CONFIGS = {
    "mha": dict(num_key_value_heads=4, swin_norm=False),
    "gqa": dict(num_key_value_heads=2, swin_norm=False),
    "swin": dict(num_key_value_heads=4, swin_norm=True),
}
RANKS = 2


def tiny_model(name: str) -> ChameleonTransformer:
    config = tiny_config(**CONFIGS[name])  # vocabulary 97: an uneven split of the embedding and head
    torch.manual_seed(len(name))
    model = ChameleonTransformer(config).eval()
    with torch.no_grad():
        for param in model.parameters():  # non-trivial norms and biases too
            param.add_(torch.randn_like(param) * 0.3)
    return model


@torch.no_grad()
def decode_logits(model: ChameleonTransformer) -> list[torch.Tensor]:
    """Logits of a masked 2-row prefill, one-token steps, a 4-token window, a rollback and a 2-token step."""
    gen = torch.Generator().manual_seed(7)
    vocab = model.config.vocab_size
    cache = KVCache(model.config, 2, 64, kv_heads=cache_heads(model))
    cache.hide([1], 1, 4)  # an unconditional CFG row: its prompt is hidden
    out = [model(torch.randint(vocab, (2, 6), generator=gen), cache)]
    for length in (1, 1, 4):
        out.append(model(torch.randint(vocab, (2, length), generator=gen), cache))
    cache.rollback(torch.tensor([3, 1]))
    out.append(model(torch.randint(vocab, (2, 2), generator=gen), cache))
    out.append(model(torch.randint(vocab, (2, 5), generator=gen)))  # no cache: plain causal
    return out


def model_bytes(model: torch.nn.Module) -> int:
    """Bytes of the parameters this process holds (its shards of the split ones)."""
    local = (p.to_local() if hasattr(p, "to_local") else p for p in model.parameters())
    return sum(t.numel() * t.element_size() for t in local)


def local_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """This rank's part of every parameter (DTensor shards as their local tensors)."""
    return {k: v.to_local() if hasattr(v, "to_local") else v for k, v in model.state_dict().items()}


def _worker(rank: int, port: int, folder: str) -> None:
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(RANKS),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
    )
    torch.set_num_threads(1)
    mesh = tensor_parallel_mesh(RANKS, torch.device("cpu"))
    for name in CONFIGS:
        model = apply_tensor_parallel(tiny_model(name), mesh)
        torch.save(decode_logits(model), f"{folder}/{name}-{rank}.pt")
        sharded = load_transformer(f"{folder}/{name}", mesh=mesh)  # reads only this rank's slices
        full_then_split = apply_tensor_parallel(load_transformer(f"{folder}/{name}"), mesh)
        torch.save(
            {"sharded": local_state(sharded), "split": local_state(full_then_split)},
            f"{folder}/{name}-loaded-{rank}.pt",
        )
    torch.save(torch.tensor(model_bytes(model)), f"{folder}/bytes-{rank}.pt")
    try:
        check_same_device("cpu" if rank == 0 else "cuda")  # as if rank 1 had been given --device cuda
    except LuminaError as error:
        (Path(folder) / f"devices-{rank}.txt").write_text(str(error))
    try:
        LuminaMGPTPipeline.from_pretrained(device="cpu", tensor_parallel=RANKS, quantize="int8")
    except LuminaError as error:
        (Path(folder) / f"quantize-{rank}.txt").write_text(str(error))
    torch.distributed.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ranks_logits(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("tp")
    for name in CONFIGS:
        save_transformer(tiny_model(name), folder / name)
    mp.spawn(_worker, args=(_free_port(), str(folder)), nprocs=RANKS)
    return str(folder)


@pytest.mark.parametrize("name", list(CONFIGS))
def test_two_ranks_give_one_process_logits(ranks_logits, name):
    expected = decode_logits(tiny_model(name))
    for rank in range(RANKS):
        got = torch.load(f"{ranks_logits}/{name}-{rank}.pt", weights_only=True)
        assert len(got) == len(expected)
        for step, (a, b) in enumerate(zip(got, expected, strict=True)):
            assert a.shape == b.shape, step
            torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=f"{name} call {step}, rank {rank}")


@pytest.mark.parametrize("name", list(CONFIGS))
def test_shard_by_shard_loading_gives_the_shards_of_the_full_model(ranks_logits, name):
    for rank in range(RANKS):
        loaded = torch.load(f"{ranks_logits}/{name}-loaded-{rank}.pt", weights_only=True)
        sharded, split = loaded["sharded"], loaded["split"]
        assert sharded.keys() == split.keys()
        for key, tensor in sharded.items():
            assert tensor.shape == split[key].shape and torch.equal(tensor, split[key]), (rank, key)
        assert sharded["lm_head.weight"].shape[0] == (49 if rank == 0 else 48)  # 97 rows: an uneven split


def test_each_rank_holds_about_half_the_model(ranks_logits):
    whole = model_bytes(tiny_model("swin"))
    for rank in range(RANKS):
        held = int(torch.load(f"{ranks_logits}/bytes-{rank}.pt", weights_only=True))
        assert 0.5 <= held / whole < 0.52, (rank, held, whole)  # only the RMSNorm weights are replicated


def test_mismatched_devices_are_refused_on_every_rank_in_one_line(ranks_logits):
    for rank in range(RANKS):
        message = (Path(ranks_logits) / f"devices-{rank}.txt").read_text()
        assert message == (
            "every rank must use the same --device, got rank 0 cpu, rank 1 cuda; pass the same --device to all"
        )


def test_quantize_with_tensor_parallel_is_refused_in_one_line(ranks_logits):
    for rank in range(RANKS):
        message = (Path(ranks_logits) / f"quantize-{rank}.txt").read_text()
        assert message.startswith("quantize cannot be combined with tensor_parallel") and "\n" not in message


def test_indivisible_heads_are_refused_in_one_line():
    config = tiny_model("gqa").config
    check_divisible(config, 2)
    with pytest.raises(
        LuminaError, match="4 attention heads and 2 key/value heads must both be divisible by 4"
    ):
        check_divisible(config, 4)


def test_tensor_parallel_outside_torchrun_or_wrong_size_is_refused(monkeypatch):
    monkeypatch.delenv("WORLD_SIZE", raising=False)
    with pytest.raises(LuminaError, match="needs a torchrun job"):
        tensor_parallel_mesh(2, torch.device("cpu"))
    monkeypatch.setenv("WORLD_SIZE", "3")
    with pytest.raises(LuminaError, match="does not match the torchrun world size 3"):
        tensor_parallel_mesh(2, torch.device("cpu"))


def _generate(out, *extra: str, ranks: int = 1) -> bytes:
    """The PNG of `lumina-mgpt generate` for the shipped model, alone or under torchrun with `ranks` ranks."""
    script = shutil.which("lumina-mgpt")
    command = [script]
    if ranks > 1:
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={ranks}", script]
        extra += ("--tensor-parallel", str(ranks))
    args = [
        "generate",
        "a red circle",
        "--size",
        "128x128",
        "--seed",
        "5",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(command + args + list(extra), check=True, capture_output=True, env=env, timeout=240)
    return (out / "image_000.png").read_bytes()


@pytest.mark.slow
@pytest.mark.parametrize("speculative", ["off", "exact"])
def test_torchrun_generate_writes_one_process_png(tmp_path, speculative):
    alone = _generate(tmp_path / "alone", "--speculative", speculative)
    split = _generate(tmp_path / "split", "--speculative", speculative, ranks=RANKS)
    assert split == alone
    assert sorted(p.name for p in (tmp_path / "split").iterdir()) == ["image_000.png", "settings.json"]


def _eval(model, out, ranks: int = 1) -> dict[str, bytes]:
    """Every file `lumina-mgpt eval` writes for a tiny model (one prompt per text-to-image category; the omni
    tasks' long random replies would take minutes under gloo), alone or under torchrun with `ranks` ranks; the
    output folder's name in them is replaced by OUT."""
    script = shutil.which("lumina-mgpt")
    command = [script]
    if ranks > 1:
        command = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={ranks}", script]
    args = ["eval", "--model", str(model), "--out", str(out), "--prompts", "1", "--canvas", "64x64"]
    args += ["--tasks", "none", "--device", "cpu"]
    args += ["--tensor-parallel", str(ranks)] if ranks > 1 else []
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    subprocess.run(command + args, check=True, capture_output=True, env=env, timeout=240)
    files = sorted(p for p in out.rglob("*") if p.is_file())
    return {str(p.relative_to(out)): p.read_bytes().replace(str(out).encode(), b"OUT") for p in files}


@pytest.mark.slow
def test_torchrun_eval_writes_one_process_scores_and_images(tmp_path):
    model = ours_folder(tmp_path / "model")
    alone = _eval(model, tmp_path / "alone")
    assert {"summary.json", "items.jsonl", "settings.json"} < set(alone)
    assert any(name.endswith(".png") for name in alone)
    assert _eval(model, tmp_path / "split", ranks=RANKS) == alone  # rank 0 alone wrote, the same bytes
