"""Released repo ids resolved through a fake hub: every release's files in its exact names and layouts (tiny
weights), served by a real HTTP hub on 127.0.0.1 and fetched by huggingface_hub into a real hub cache, then
loaded offline (HF_HUB_OFFLINE) by repo id alone; `lumina-mgpt download`; gated, missing and truncated files."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import huggingface_hub.constants as hf_constants
import pytest
import torch
from hub_fixtures import FakeHub
from test_generate_helpers import one_thread, v1_folders, v2_folders

from lumina_mgpt import hub
from lumina_mgpt.errors import LuminaError
from lumina_mgpt.model import load_transformer, save_transformer
from lumina_mgpt.pipeline import LuminaMGPTPipeline
from lumina_mgpt.vq.config import MOVQGAN
from lumina_mgpt.vq.keymap import to_release
from lumina_mgpt.vq.loading import movqgan_config, tokenizer_from_taming

V1_IDS = [r for r, release in hub.RELEASES.items() if release.family == "v1"]
V2_IDS = [r for r, release in hub.RELEASES.items() if release.family == "v2"]


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_thread()


def _copy(source: Path, target: Path) -> None:
    target.mkdir(parents=True, exist_ok=True)
    for file in source.rglob("*"):
        if file.is_file():
            (target / file.relative_to(source)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy(file, target / file.relative_to(source))


def release_repos(root: Path) -> dict[str, Path]:
    """Every repo the releases read, as a folder in the release's layout (plus files no model needs)."""
    v1_model, v1_tokenizer, v1_vq = v1_folders(root / "v1")
    half = (v1_model / "model.safetensors").stat().st_size // 2 + 1024  # in 2 shards, as the 7B release
    save_transformer(load_transformer(v1_model), root / "v1-sharded", max_shard_bytes=half)
    v2_model, v2_tokenizer, _ = v2_folders(root / "v2")
    repos = {}
    for repo in V1_IDS:
        repos[repo] = root / "hub" / repo
        _copy(root / "v1-sharded", repos[repo])
        (repos[repo] / "README.md").write_text("not needed\n")
    shutil.copy(v1_tokenizer, repos["Alpha-VLLM/Lumina-mGPT-7B-768"] / "tokenizer.json")
    chameleon = root / "hub" / "Alpha-VLLM/Chameleon_7B_mGPT"
    _copy(v1_vq, chameleon / "original_tokenizers")
    shutil.copy(v1_tokenizer, chameleon / "original_tokenizers" / "text_tokenizer.json")
    _copy(root / "v1-sharded", chameleon)  # the training starting point: not fetched for inference
    for repo in V2_IDS:
        repos[repo] = root / "hub" / repo
        _copy(v2_model, repos[repo])
        shutil.copy(v2_tokenizer, repos[repo] / "tokenizer.json")
    movqgan = root / "hub" / "ai-forever/MoVQGAN"
    movqgan.mkdir(parents=True)
    shutil.copy(root / "v2" / "movqgan_tiny.ckpt", movqgan / "movqgan_270M.ckpt")
    shutil.copy(root / "v2" / "movqgan_tiny.ckpt", movqgan / "movqgan_67M.ckpt")  # another size: not needed
    return repos | {"Alpha-VLLM/Chameleon_7B_mGPT": chameleon, "ai-forever/MoVQGAN": movqgan}


@pytest.fixture(scope="module")
def fake_hub(tmp_path_factory):
    root = tmp_path_factory.mktemp("hub")
    server = FakeHub()
    server.repos = release_repos(root)
    yield server
    server.close()


def online(monkeypatch: pytest.MonkeyPatch, server: FakeHub, cache: Path) -> None:
    """Point huggingface_hub at the fake hub and `cache`, as HF_ENDPOINT and HF_HUB_CACHE would."""
    monkeypatch.setattr(hf_constants, "ENDPOINT", server.endpoint)
    monkeypatch.setattr(
        hf_constants,
        "HUGGINGFACE_CO_URL_TEMPLATE",
        server.endpoint + "/{repo_id}/resolve/{revision}/{filename}",
    )
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", False)


def offline(monkeypatch: pytest.MonkeyPatch, cache: Path) -> None:
    monkeypatch.setattr(hf_constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(hf_constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hf_constants, "ENDPOINT", "http://127.0.0.1:9")  # nothing may be asked of a hub


@pytest.fixture(scope="module")
def cache(fake_hub, tmp_path_factory):
    """The hub cache after `download` of every release."""
    cache = tmp_path_factory.mktemp("cache")
    with pytest.MonkeyPatch.context() as monkeypatch:
        online(monkeypatch, fake_hub, cache)
        for repo in hub.RELEASES:
            hub.download(repo, echo=lambda line: None)
    return cache


def cached_files(cache: Path) -> set[str]:
    """`owner/name/file` of every file in the cache's snapshots."""
    files = set()
    for repo in cache.glob("models--*"):
        name = repo.name.removeprefix("models--").replace("--", "/")
        for file in (repo / "snapshots").rglob("*"):
            if file.is_file():
                files.add(f"{name}/{Path(*file.relative_to(repo / 'snapshots').parts[1:]).as_posix()}")
    return files


def test_the_table_names_every_release_and_where_its_files_are():
    assert set(hub.RELEASES) == {
        *(f"Alpha-VLLM/Lumina-mGPT-{n}" for n in ("7B-512", "7B-768", "7B-768-Omni", "7B-1024", "34B-512")),
        "Alpha-VLLM/Lumina-mGPT-7B-512-MultiImage",
        "Alpha-VLLM/Lumina-mGPT-2.0",
        "Alpha-VLLM/Lumina-mGPT-2.0-Omni",
    }
    for repo in V1_IDS:
        text, image = hub.RELEASES[repo].text_tokenizer, hub.RELEASES[repo].image_tokenizer
        assert (
            text.repo_id == "Alpha-VLLM/Lumina-mGPT-7B-768"
            and image.repo_id == "Alpha-VLLM/Chameleon_7B_mGPT"
        )
    for repo in V2_IDS:
        assert hub.RELEASES[repo].text_tokenizer.repo_id == repo
        assert hub.RELEASES[repo].image_tokenizer.patterns == ("movqgan_270M.ckpt",)


@pytest.mark.parametrize("repo", list(hub.RELEASES))
def test_every_release_loads_offline_by_repo_id_alone(repo, cache, monkeypatch):
    offline(monkeypatch, cache)
    release = hub.RELEASES[repo]
    pipe = LuminaMGPTPipeline.from_pretrained(repo)
    assert pipe.layout.name == release.family and pipe.preset.canvas == (release.resolution,) * 2
    files = hub.resolve_model(repo)
    assert f"models--{repo.replace('/', '--')}" in str(files.folder)
    assert f"models--{release.text_tokenizer.repo_id.replace('/', '--')}" in str(files.text_tokenizer)
    assert f"models--{release.image_tokenizer.repo_id.replace('/', '--')}" in str(files.image_tokenizer)
    if repo in ("Alpha-VLLM/Lumina-mGPT-7B-768", "Alpha-VLLM/Lumina-mGPT-2.0"):
        out = pipe("a red star", 32, 32, seed=0, top_k=5, progress=False)
        assert out.images[0].size == (32, 32)
    assert pipe.image_tokenizer.factor == (16 if release.family == "v1" else 8)


def test_download_fetches_exactly_what_each_model_needs(cache, fake_hub):
    shards = sorted(p.name for p in fake_hub.repos["Alpha-VLLM/Lumina-mGPT-7B-512"].glob("model-*"))
    assert len(shards) == 2  # the v1 weights in 2 shards, as the 7B release has them
    v1_model = ["config.json", "model.safetensors.index.json", *shards]
    expected = {f"{repo}/{name}" for repo in V1_IDS for name in v1_model}
    expected |= {"Alpha-VLLM/Lumina-mGPT-7B-768/tokenizer.json"}
    expected |= {
        f"Alpha-VLLM/Chameleon_7B_mGPT/original_tokenizers/{n}" for n in ("vqgan.yaml", "vqgan.ckpt")
    }
    v2_model = ("config.json", "model.safetensors", "tokenizer.json")
    expected |= {f"{repo}/{name}" for repo in V2_IDS for name in v2_model}
    expected |= {"ai-forever/MoVQGAN/movqgan_270M.ckpt"}
    assert cached_files(cache) == expected


def run_cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    code = "from lumina_mgpt.cli import app; app()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, env=os.environ | env, timeout=120
    )


def test_download_command_prints_the_total_first_and_then_runs_offline(fake_hub, tmp_path):
    env = {"HF_ENDPOINT": fake_hub.endpoint, "HF_HUB_OFFLINE": "0"}
    done = run_cli("download", "Alpha-VLLM/Lumina-mGPT-2.0", "--dir", str(tmp_path / "c"), env=env)
    assert done.returncode == 0, done.stderr
    repos = fake_hub.repos
    sizes = [
        (repos["Alpha-VLLM/Lumina-mGPT-2.0"] / n).stat().st_size for n in ("config.json", "model.safetensors")
    ]
    sizes += [(repos["Alpha-VLLM/Lumina-mGPT-2.0"] / "tokenizer.json").stat().st_size]
    sizes += [(repos["ai-forever/MoVQGAN"] / "movqgan_270M.ckpt").stat().st_size]
    total = f"{sum(sizes) / 1e6:.1f} MB"
    first = done.stdout.splitlines()[0]
    assert first == f"Alpha-VLLM/Lumina-mGPT-2.0: 4 files from 3 repos, {total} ({total} to fetch)"
    assert "Fetching" in done.stderr  # huggingface_hub's progress bars
    assert cached_files(tmp_path / "c") == {
        "Alpha-VLLM/Lumina-mGPT-2.0/config.json",
        "Alpha-VLLM/Lumina-mGPT-2.0/model.safetensors",
        "Alpha-VLLM/Lumina-mGPT-2.0/tokenizer.json",
        "ai-forever/MoVQGAN/movqgan_270M.ckpt",
    }
    again = run_cli("download", "Alpha-VLLM/Lumina-mGPT-2.0", "--dir", str(tmp_path / "c"), env=env)
    assert again.stdout.splitlines()[0].endswith("(0.0 MB to fetch)") and "(cached)" in again.stdout
    check = "from lumina_mgpt.pipeline import LuminaMGPTPipeline as P; print(P.from_pretrained('Alpha-VLLM/Lumina-mGPT-2.0').layout.name)"
    env = {"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "c"), "HF_ENDPOINT": "http://127.0.0.1:9"}
    loaded = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, env=os.environ | env
    )
    assert loaded.stdout.strip() == "v2", loaded.stderr


def test_a_gated_repo_is_one_line_naming_the_licence_and_the_login(fake_hub, tmp_path):
    fake_hub.gated.add("Alpha-VLLM/Chameleon_7B_mGPT")
    try:
        env = {"HF_ENDPOINT": fake_hub.endpoint, "HF_HUB_OFFLINE": "0"}
        done = run_cli("download", "Alpha-VLLM/Lumina-mGPT-7B-768", "--dir", str(tmp_path), env=env)
    finally:
        fake_hub.gated.discard("Alpha-VLLM/Chameleon_7B_mGPT")
    errors = [line for line in done.stderr.splitlines() if "rror" in line]
    assert done.returncode == 2 and errors == [
        (
            "error: Alpha-VLLM/Chameleon_7B_mGPT is gated: accept its licence at "
            "https://huggingface.co/Alpha-VLLM/Chameleon_7B_mGPT, then log in with `hf auth login` or set HF_TOKEN"
        )
    ]
    assert not (
        tmp_path / "models--Alpha-VLLM--Lumina-mGPT-7B-768" / "snapshots"
    ).exists()  # refused up front


def test_an_unknown_repo_is_one_line(fake_hub, tmp_path, monkeypatch):
    online(monkeypatch, fake_hub, tmp_path)
    with pytest.raises(
        LuminaError, match=r"^someone/nothing: no such repo on the Hugging Face Hub \(if it is private"
    ):
        LuminaMGPTPipeline.from_pretrained("someone/nothing")


def broken_copy(cache: Path, target: Path) -> Path:
    shutil.copytree(cache, target, symlinks=True)
    return target


def snapshot_file(cache: Path, repo: str, name: str) -> Path:
    return next((cache / f"models--{repo.replace('/', '--')}" / "snapshots").glob(f"*/{name}"))


def test_missing_files_in_the_cache_name_the_file_and_the_fix(cache, tmp_path, monkeypatch):
    broken = broken_copy(cache, tmp_path / "c")
    snapshot_file(broken, "ai-forever/MoVQGAN", "movqgan_270M.ckpt").unlink()
    shard = next(
        snapshot_file(broken, "Alpha-VLLM/Lumina-mGPT-7B-1024", "config.json").parent.glob("model-*")
    )
    shard.unlink()
    offline(monkeypatch, broken)
    fix = "run `lumina-mgpt download ai-forever/MoVQGAN` (or delete it from the hub cache and fetch it again)"
    with pytest.raises(LuminaError, match=r"^ai-forever/MoVQGAN: movqgan_270M\.ckpt is missing") as error:
        LuminaMGPTPipeline.from_pretrained("Alpha-VLLM/Lumina-mGPT-2.0")
    assert str(error.value).endswith(fix) and "\n" not in str(error.value)
    with pytest.raises(LuminaError, match=rf"^Alpha-VLLM/Lumina-mGPT-7B-1024: shard {shard.name} is missing"):
        LuminaMGPTPipeline.from_pretrained("Alpha-VLLM/Lumina-mGPT-7B-1024")
    offline(monkeypatch, tmp_path / "empty")
    with pytest.raises(
        LuminaError, match=r"^Alpha-VLLM/Lumina-mGPT-7B-1024 is not in the Hugging Face cache"
    ):
        LuminaMGPTPipeline.from_pretrained("Alpha-VLLM/Lumina-mGPT-7B-1024")


def test_explicit_paths_override_the_table(cache, fake_hub, tmp_path, monkeypatch):
    broken = broken_copy(cache, tmp_path / "c")
    shutil.rmtree(broken / "models--ai-forever--MoVQGAN")
    offline(monkeypatch, broken)
    own = fake_hub.repos["ai-forever/MoVQGAN"] / "movqgan_67M.ckpt"
    pipe = LuminaMGPTPipeline.from_pretrained("Alpha-VLLM/Lumina-mGPT-2.0-Omni", image_tokenizer=own)
    assert pipe.layout.name == "v2"


def test_truncated_downloads_name_the_file(cache, tmp_path, monkeypatch):
    broken = broken_copy(cache, tmp_path / "c")
    weights = snapshot_file(broken, "Alpha-VLLM/Lumina-mGPT-2.0", "model.safetensors")
    size = weights.stat().st_size
    os.truncate(weights.resolve(), size - 100)
    ckpt = snapshot_file(broken, "Alpha-VLLM/Chameleon_7B_mGPT", "original_tokenizers/vqgan.ckpt")
    os.truncate(ckpt.resolve(), ckpt.stat().st_size // 2)
    offline(monkeypatch, broken)
    with pytest.raises(LuminaError) as error:
        LuminaMGPTPipeline.from_pretrained("Alpha-VLLM/Lumina-mGPT-2.0")
    assert str(error.value).startswith(
        f"{weights}: truncated download ({size - 100:,} bytes, its header says {size:,})"
    )
    with pytest.raises(
        LuminaError, match=r"vqgan\.ckpt: truncated or not a PyTorch checkpoint \(no zip end record\)"
    ):
        LuminaMGPTPipeline.from_pretrained("Alpha-VLLM/Lumina-mGPT-34B-512")


def test_the_movqgan_architecture_is_read_from_the_checkpoint():
    for config in MOVQGAN.values():
        state = to_release(tokenizer_from_taming(config, "round", "movqgan").vq)  # shapes only (meta tensors)
        assert movqgan_config(state) == config
    assert movqgan_config({"w": torch.zeros(1)}) is None  # not one: the loader's key check names the keys


def test_an_interrupted_download_fetches_only_what_is_missing(fake_hub, tmp_path, monkeypatch):
    """huggingface_hub >= 2 restarts a half-fetched file (process-unique temporary files), so resuming is per
    file: what is complete in the cache is kept and checked, the rest is fetched."""
    online(monkeypatch, fake_hub, tmp_path)
    hub.download("Alpha-VLLM/Lumina-mGPT-2.0", echo=lambda line: None)
    link = snapshot_file(tmp_path, "ai-forever/MoVQGAN", "movqgan_270M.ckpt")
    size = link.stat().st_size
    link.resolve().unlink()  # interrupted before this file was complete
    link.unlink()
    before, lines = len(fake_hub.requests), []
    hub.download("Alpha-VLLM/Lumina-mGPT-2.0", echo=lines.append)
    assert lines[0].endswith(f"({size / 1e6:.1f} MB to fetch)")
    fetched = [r for r in fake_hub.requests[before:] if r.startswith("GET") and "/resolve/" in r]
    assert len(fetched) == 1 and fetched[0].endswith("/movqgan_270M.ckpt")
    assert link.stat().st_size == size
