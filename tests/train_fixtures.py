"""Tiny tokenizers, token shards and training configs for the data and training tests (no tests here)."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from lumina_mgpt.data.shards import Sample, write_shard

TINY_CONFIG = Path(__file__).parents[1] / "configs" / "train" / "tiny.yaml"
TINY_VQ = dict(
    ch=32,
    ch_mult=(1, 1, 1, 1),
    num_res_blocks=1,
    attn_resolutions=(),
    resolution=64,
    z_channels=4,
    embed_dim=4,
    n_embed=64,
    spatial_norm=False,
)  # factor 8, as layout "ours"
CAPTIONS = ["a red circle", "a blue square and a green star", "two yellow hearts", "a white cross"]


@pytest.fixture(autouse=True)
def one_thread():
    """Torch on one thread, as the training subprocesses: far faster on this shared 2-core machine than two
    contended ones. Import it into a test module to use it there."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def tiny_text_tokenizer(folder: Path) -> Path:
    """A byte-level BPE of 600 tokens in layout "ours" (64 image codes, sizes up to 16 x 32 px)."""
    from lumina_mgpt.text import build_text_tokenizer

    texts = [f"Generate an image of 64x64 according to the following prompt:\n{c}" for c in CAPTIONS] * 5
    build_text_tokenizer(texts, vocab_size=600, codebook_size=64, max_size_units=16).save(folder)
    return folder


def tiny_image_tokenizer(folder: Path, seed: int = 0) -> Path:
    """A random VQ with downsampling factor 8 and 64 codes, saved in our format."""
    from lumina_mgpt.vq import ImageTokenizer, TamingConfig, save_image_tokenizer

    torch.manual_seed(seed)
    return save_image_tokenizer(ImageTokenizer.from_config(TamingConfig(**TINY_VQ).vqmodel_kwargs()), folder)


def synthetic_samples(count: int, seed: int = 0, vocab: int = 600) -> list[Sample]:
    """t2i-like samples: a random prompt (no targets) then a random 'image block' (all targets) on two
    canvases, tasks alternating between "t2i" and "edit"."""
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(count):
        canvas = ((32, 32), (64, 32))[i % 2]
        prompt, block = int(rng.integers(4, 12)), 6 + canvas[0] // 8
        ids = rng.integers(8, vocab, prompt + block).astype(np.int32)
        target = np.arange(len(ids)) >= prompt
        samples.append(
            Sample(
                ids=ids,
                target=target,
                canvas=canvas,
                image_span=(prompt, prompt + block),
                task="edit" if i % 3 == 0 else "t2i",
                record=i + 1,
            )
        )
    return samples


def write_synthetic_shards(folder: Path, count: int = 48, per_shard: int = 20, area: int = 64) -> Path:
    samples = synthetic_samples(count)
    folder.mkdir(parents=True, exist_ok=True)
    for k, start in enumerate(range(0, count, per_shard)):
        write_shard(
            folder / f"shard-{k:05d}.safetensors",
            samples[start : start + per_shard],
            ["edit", "t2i"],
            {"area": str(area)},
        )
    return folder


def write_config(path: Path, **overrides) -> Path:
    """configs/train/tiny.yaml with its shards in `path`'s folder and `overrides` on top."""
    config = yaml.safe_load(TINY_CONFIG.read_text())
    config["stages"][0]["data"]["shards"] = [str(path.parent / "shards")]
    config.update(overrides)
    path.write_text(yaml.safe_dump(config))
    return path


def train_command(config: Path, out: Path, nproc: int = 1) -> list[str]:
    """The command line of a training run (torchrun for nproc > 1)."""
    if nproc == 1:
        return [sys.executable, "-m", "lumina_mgpt.train", str(config), "--out", str(out)]
    return [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        f"--nproc-per-node={nproc}",
        "-m",
        "lumina_mgpt.train",
        str(config),
        "--out",
        str(out),
    ]


def run_env(**extra: str) -> dict[str, str]:
    """Environment of a training subprocess: one thread (the machine is shared), no GPU."""
    return {**os.environ, "OMP_NUM_THREADS": "1", "CUDA_VISIBLE_DEVICES": "", **extra}


def coloured_pictures(folder: Path, n: int = 12, size: tuple[int, int] = (64, 64), seed: int = 0) -> Path:
    """`n` pictures that are not shapes-world scenes: a linear gradient between two random colours with a
    disc of a third, as PNGs `0.png` ...; and `data.jsonl` beside them, one caption record each."""
    from PIL import Image, ImageDraw

    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    width, height = size
    records = []
    for i in range(n):
        start, end = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        t = np.linspace(0.0, 1.0, width)[None, :, None]
        picture = Image.fromarray(np.repeat(start * (1 - t) + end * t, height, axis=0).astype(np.uint8))
        r = int(rng.integers(width // 8, width // 3))
        cx, cy = int(rng.integers(r, width - r)), int(rng.integers(r, height - r))
        fill = tuple(int(c) for c in rng.integers(0, 256, 3))
        ImageDraw.Draw(picture).ellipse([cx - r, cy - r, cx + r, cy + r], fill=fill)
        picture.save(folder / f"{i}.png")
        records.append(json.dumps({"image": f"{i}.png", "caption": CAPTIONS[i % len(CAPTIONS)]}))
    (folder / "data.jsonl").write_text("\n".join(records) + "\n")
    return folder / "data.jsonl"


def tiny_model(folder: Path):
    """A seeded 2-layer model of the tiny tokenizer's vocabulary, saved in `folder`; returned."""
    from lumina_mgpt.model import ChameleonConfig, ChameleonTransformer, save_transformer

    torch.manual_seed(3)
    model = ChameleonTransformer(
        ChameleonConfig(
            vocab_size=600, hidden_size=32, intermediate_size=48, num_hidden_layers=2, num_attention_heads=2
        )
    )
    model.init_weights()
    save_transformer(model, folder)
    return model


def tiny_base_model(folder: Path, sampling: str | None = '{"speculative": "exact"}') -> Path:
    """A model folder as `finetune --base` takes it: `tiny_model`, the tiny text tokenizer, a random tiny VQ
    under vq/ and (unless None) `sampling.json`."""
    tiny_model(folder)
    tiny_text_tokenizer(folder)
    tiny_image_tokenizer(folder / "vq")
    if sampling is not None:
        (folder / "sampling.json").write_text(sampling)
    return folder


def cli_command(*args: str) -> list[str]:
    """The command line of `lumina-mgpt ARGS...` in a subprocess."""
    return [sys.executable, "-c", "from lumina_mgpt.cli import app; app()", *args]
