"""Train a small MoVQ-class VQ tokenizer on shapes-world images rendered on the fly, or on a folder of images.

    python -m lumina_mgpt.vq.train configs/vq/shapes.yaml --out DIR [--steps N] [--device cuda]
    lumina-mgpt train-vq --images DIR --out VQ [--preset small] [--minutes M]

The network is diffusers' `VQModel` with the spatial-norm (MoVQ) decoder (`model.architecture: vqmodel`), or
our `PatchPaletteVQ` (`patch-palette`: patch-local encoder, decoder trained by per-pixel cross-entropy over
the world's palette, see `lumina_mgpt.vq.patch`). Codes are the nearest codebook
vectors; the encoder learns through a straight-through estimator with a commitment loss, and the codebook
either by EMA of the vectors assigned to it (`ema`) or by gradient (`straight_through`). Codes unused for a
while are restarted on random encoder outputs (or on the worst-quantised ones). Step `t` renders its batch from the seed `(seed, t)`, so a
run resumed from its atomic checkpoint (`DIR/checkpoint.pt`) continues exactly as if never stopped. With
`data.images` (a folder), step `t`'s batch is random crops of that folder's images resized to one of the
canvases (`lumina_mgpt.vq.folder`), and the eval is PSNR on centre crops of the first `run.eval_scenes` images.
Outputs: `DIR/tokenizer/` (our folder format, with `training.json`: the PSNR it reaches on its training data),
`DIR/log.jsonl`, `DIR/metrics.json`.
"""

import dataclasses
import json
import math
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.nn.functional as F
import yaml
from torch.utils.data import DataLoader, Dataset
from tqdm import tqdm

from lumina_mgpt.devices import resolve_device
from lumina_mgpt.errors import LuminaError
from lumina_mgpt.train.checkpoint import load_state_file, unloadable_checkpoint
from lumina_mgpt.train.config import read_yaml
from lumina_mgpt.vq.evaluate import (
    IMAGE_KINDS,
    draw,
    evaluate_canvas,
    kind_fits,
    psnr,
    reconstruct,
    scene_canvas,
)
from lumina_mgpt.vq.folder import FolderBatches, centre_crop, load_images
from lumina_mgpt.vq.loading import load_image_tokenizer, save_image_tokenizer
from lumina_mgpt.vq.patch import ARCHITECTURE as PATCH_PALETTE
from lumina_mgpt.vq.patch import SHAPES_PALETTE
from lumina_mgpt.vq.tokenizer import ImageTokenizer, nearest_rows
from lumina_mgpt.world.scene import sample_scene


@dataclass
class ModelConfig:
    architecture: Literal["vqmodel", "patch-palette"] = "vqmodel"
    code_dim: int = 4
    codebook_size: int = 1024
    # vqmodel
    block_out_channels: tuple[int, ...] = (32, 32, 64, 64)  # one level per entry: factor 2**(n - 1)
    layers_per_block: int = 1  # resnets per encoder level (the decoder has one more); 0: none
    latent_channels: int = 4
    mid_attention: bool = True
    norm_groups: int = 32  # GroupNorm groups of the encoder and decoder blocks
    # patch-palette (it paints with the shapes world's palette, SHAPES_PALETTE)
    patch_size: int = 8
    encoder_hidden: int = 256
    decoder_channels: int = 128
    decoder_blocks: int = 3
    upsample_channels: int = 32
    min_colour_pixels: int = 0  # decode-time: colours covering fewer pixels of an image are not painted

    def vqmodel_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of the network (`VQModel` or `PatchPaletteVQ`, by `architecture`)."""
        if self.architecture == PATCH_PALETTE:
            return {
                "output_palette": [list(c) for c in SHAPES_PALETTE],
                "patch_size": self.patch_size,
                "encoder_hidden": self.encoder_hidden,
                "vq_embed_dim": self.code_dim,
                "num_vq_embeddings": self.codebook_size,
                "decoder_channels": self.decoder_channels,
                "decoder_blocks": self.decoder_blocks,
                "upsample_channels": self.upsample_channels,
                "min_colour_pixels": self.min_colour_pixels,
            }
        n = len(self.block_out_channels)
        return {
            "down_block_types": ("DownEncoderBlock2D",) * n,
            "up_block_types": ("UpDecoderBlock2D",) * n,
            "block_out_channels": tuple(self.block_out_channels),
            "layers_per_block": self.layers_per_block,
            "latent_channels": self.latent_channels,
            "vq_embed_dim": self.code_dim,
            "num_vq_embeddings": self.codebook_size,
            "norm_type": "spatial",
            "norm_num_groups": self.norm_groups,
            "mid_block_add_attention": self.mid_attention,
        }


@dataclass
class QuantizerConfig:
    kind: Literal["ema", "straight_through"] = "ema"
    commitment: float = 0.25
    ema_decay: float = 0.99
    dead_usage: float = 0.05  # a code whose EMA count per step falls below this is restarted
    restart_every: int = 100
    restart_on: Literal["random", "worst"] = "random"  # restart on random or on the worst-quantised vectors
    # steps trained as a plain autoencoder before quantising; at this step the codebook starts from k-means of
    # the encoder's outputs on `kmeans_batches` batches
    start: int = 0
    kmeans_batches: int = 8
    kmeans_iterations: int = 10


@dataclass
class DataConfig:
    canvases: list[tuple[int, int]] = field(default_factory=lambda: [(128, 128), (160, 96), (96, 160)])
    mix: dict[str, float] = field(default_factory=lambda: {"scene": 1.0})  # image kind -> probability
    batch_size: int = 32
    workers: int = 0
    images: str | None = None  # a folder of training images instead of the shapes world
    # folder images: crops of this fraction (side) of the largest one are resized to a canvas; with `patch`,
    # a random patch x patch window of each is trained on (at most the canvases' shorter side)
    crop_fraction: tuple[float, float] = (0.3, 1.0)
    patch: int | None = None


@dataclass
class OptimConfig:
    steps: int = 4000
    lr: float = 1e-3
    warmup: int = 200
    min_lr_ratio: float = 0.05
    weight_decay: float = 0.0
    grad_clip: float = 1.0
    l1_weight: float = 1.0  # pixel loss = l1_weight * L1 + l2_weight * MSE
    l2_weight: float = 0.0
    edge_weight: float = 0.0  # loss weight of pixels near a colour change is 1 + edge_weight
    # "decoder": train only the decoder; the encoder and codebook keep run.init_from's weights, so every code
    # (and a transformer trained on them) stays valid
    trainable: Literal["all", "decoder"] = "all"


@dataclass
class RunConfig:
    seed: int = 0
    device: str = "auto"
    bf16: bool = True  # autocast on CUDA
    log_every: int = 50
    eval_every: int = 1000  # 0: only at the end
    checkpoint_every: int = 500
    eval_scenes: int = 100  # per eval canvas
    eval_canvases: list[tuple[int, int]] = field(default_factory=lambda: [(128, 128), (160, 96), (96, 160)])
    eval_seed: int = 1_000_003
    init_from: str | None = None  # start from this tokenizer folder's weights (a fine-tuning stage)
    minutes: float | None = (
        None  # checkpoint and stop (writing the tokenizer) after the step that ends past it
    )


@dataclass
class TrainConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    quantizer: QuantizerConfig = field(default_factory=QuantizerConfig)
    data: DataConfig = field(default_factory=DataConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config") -> "TrainConfig":
        sections = {}
        for name, value in (raw or {}).items():
            section = next((f for f in dataclasses.fields(cls) if f.name == name), None)
            if section is None or not isinstance(value, dict):
                raise LuminaError(
                    f"{source}: unknown section {name!r} (expected model, quantizer, data, optim, run)"
                )
            known = {f.name for f in dataclasses.fields(section.default_factory())}
            if unknown := sorted(value.keys() - known):
                raise LuminaError(f"{source}: unknown field(s) {unknown} in section {name!r}")
            sections[name] = section.default_factory().__class__(**value)
        config = cls(**sections)
        config.data.canvases = [tuple(c) for c in config.data.canvases]
        config.run.eval_canvases = [tuple(c) for c in config.run.eval_canvases]
        config.model.block_out_channels = tuple(config.model.block_out_channels)
        config.data.crop_fraction = tuple(config.data.crop_fraction)
        if not 0 < config.data.crop_fraction[0] <= config.data.crop_fraction[1] <= 1:
            raise LuminaError(f"{source}: data.crop_fraction must be [low, high] with 0 < low <= high <= 1")
        factor = (
            config.model.patch_size
            if config.model.architecture == PATCH_PALETTE
            else 2 ** (len(config.model.block_out_channels) - 1)
        )
        shortest = min(min(c) for c in config.data.canvases)
        if config.data.patch is not None and not (
            0 < config.data.patch <= shortest and config.data.patch % factor == 0
        ):
            raise LuminaError(
                f"{source}: data.patch must be a multiple of {factor} px up to the shortest canvas side "
                f"({shortest}), not {config.data.patch}"
            )
        if bad := sorted(set(config.data.mix) - set(IMAGE_KINDS)):
            raise LuminaError(
                f"{source}: unknown image kind(s) {bad} in data.mix (known: {list(IMAGE_KINDS)})"
            )
        drawn = [k for k, weight in config.data.mix.items() if weight > 0]
        for kind in drawn:
            if not any(kind_fits(kind, w, h) for w, h in config.data.canvases):
                raise LuminaError(
                    f"{source}: no canvas of data.canvases fits {kind!r} (a dual panel needs a height that "
                    "halves into a multiple of 8 of at least 48)"
                )
        for w, h in config.data.canvases:
            if not any(kind_fits(kind, w, h) for kind in drawn):
                raise LuminaError(f"{source}: no image kind of data.mix fits the canvas {w}x{h}")
        if config.optim.trainable not in ("all", "decoder"):
            raise LuminaError(f"{source}: optim.trainable must be 'all' or 'decoder'")
        if config.optim.trainable == "decoder" and not config.run.init_from:
            raise LuminaError(f"{source}: optim.trainable 'decoder' needs run.init_from (the frozen encoder)")
        if config.quantizer.kind not in ("ema", "straight_through"):
            raise LuminaError(f"{source}: quantizer.kind must be 'ema' or 'straight_through'")
        if config.quantizer.restart_on not in ("random", "worst"):
            raise LuminaError(f"{source}: quantizer.restart_on must be 'random' or 'worst'")
        if config.quantizer.start < 0 or config.quantizer.kmeans_batches < 1:
            raise LuminaError(f"{source}: quantizer.start must be >= 0 and quantizer.kmeans_batches >= 1")
        if config.model.architecture not in ("vqmodel", PATCH_PALETTE):
            raise LuminaError(f"{source}: model.architecture must be 'vqmodel' or '{PATCH_PALETTE}'")
        return config

    @classmethod
    def from_yaml(cls, path: str | Path) -> "TrainConfig":
        return cls.from_dict(read_yaml(path), str(path))


# Configs for `train-vq --preset` (without a CONFIG): an f8 MoVQ-class VQModel sized for a CPU, and a tiny one.
PRESETS: dict[str, dict[str, Any]] = {
    "small": {
        "model": {
            "block_out_channels": [32, 32, 32, 32],
            "layers_per_block": 0,
            "norm_groups": 8,
            "codebook_size": 1024,
            "mid_attention": False,
        },
        "quantizer": {"start": 500},
        "data": {"canvases": [[64, 64], [96, 64], [64, 96]], "batch_size": 8},
        "optim": {"steps": 3000, "lr": 0.002, "warmup": 50, "l1_weight": 0.0, "l2_weight": 1.0},
        "run": {
            "bf16": True,
            "log_every": 25,
            "eval_every": 0,
            "checkpoint_every": 250,
            "eval_scenes": 32,
            "eval_canvases": [[64, 64]],
        },
    },
    "tiny": {
        "model": {"block_out_channels": [32, 32, 32, 32], "codebook_size": 64, "mid_attention": False},
        "data": {"canvases": [[32, 32]], "batch_size": 2},
        "optim": {"steps": 4, "warmup": 1},
        "run": {
            "device": "cpu",
            "log_every": 1,
            "eval_every": 0,
            "checkpoint_every": 2,
            "eval_scenes": 2,
            "eval_canvases": [[32, 32]],
        },
    },
}


class SceneBatches(Dataset):
    """Item `t` is step t's batch, `uint8[B, H, W, 3]`: one canvas, each image a scene, one of its maps or a
    dual panel (`lumina_mgpt.vq.evaluate.IMAGE_KINDS`); kinds that do not fit the canvas are not drawn on it."""

    def __init__(self, data: DataConfig, seed: int) -> None:
        self.data, self.seed = data, seed
        self.kinds = list(data.mix)
        weights = np.array([data.mix[k] for k in self.kinds], dtype=np.float64)
        self.probs = weights / weights.sum()

    def __len__(self) -> int:
        return 1 << 62

    def __getitem__(self, step: int) -> torch.Tensor:
        rng = np.random.default_rng([self.seed, step])
        width, height = self.data.canvases[rng.integers(len(self.data.canvases))]
        probs = self.probs * [kind_fits(k, width, height) for k in self.kinds]
        kinds = [
            self.kinds[k]
            for k in rng.choice(len(self.kinds), size=self.data.batch_size, p=probs / probs.sum())
        ]
        images = [draw(k, sample_scene(rng, *scene_canvas(k, width, height))) for k in kinds]
        return torch.from_numpy(np.stack(images))


class Codebook:
    """Training state of the codebook: EMA counts (usage, and the EMA update) and dead-code restarts.
    `frozen`: only usage is counted; the vectors never move."""

    def __init__(self, tokenizer: ImageTokenizer, config: QuantizerConfig, frozen: bool = False) -> None:
        self.weight = tokenizer.codebook
        self.config, self.frozen = config, frozen
        self.counts = torch.ones(len(self.weight), device=self.weight.device)
        self.sums = self.weight.detach().clone().float()
        self.weight.requires_grad_(config.kind == "straight_through" and not frozen)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"counts": self.counts, "sums": self.sums}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        self.counts.copy_(state["counts"])
        self.sums.copy_(state["sums"])

    @torch.no_grad()
    def initialise(self, vectors: torch.Tensor, generator: torch.Generator, iterations: int) -> None:
        """k-means of encoder output `vectors[N, C]`: random picks, then `iterations` Lloyd steps (a code left
        without vectors keeps its place)."""
        picks = torch.randint(len(vectors), (len(self.weight),), generator=generator, device="cpu")
        centres = vectors[picks.to(vectors.device)].float()
        for _ in range(iterations):
            codes = nearest_rows(vectors.float(), centres)
            counts = torch.bincount(codes, minlength=len(centres)).float()
            sums = torch.zeros_like(centres).index_add_(0, codes, vectors.float())
            centres = torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], centres)
        self.weight.copy_(centres)
        self.sums.copy_(self.weight)
        self.counts.fill_(1.0)

    @torch.no_grad()
    def update(self, vectors: torch.Tensor, codes: torch.Tensor) -> None:
        """EMA of per-code counts (always) and, for `ema`, of assigned vectors -> new codebook."""
        decay = self.config.ema_decay
        counts = torch.bincount(codes, minlength=len(self.counts)).float()
        self.counts.mul_(decay).add_(counts, alpha=1 - decay)
        if self.config.kind == "ema" and not self.frozen:
            sums = torch.zeros_like(self.sums).index_add_(0, codes, vectors)
            self.sums.mul_(decay).add_(sums, alpha=1 - decay)
            total = self.counts.sum()
            smoothed = (self.counts + 1e-5) / (total + len(self.counts) * 1e-5) * total
            self.weight.copy_(self.sums / smoothed[:, None])

    @torch.no_grad()
    def restart_dead(
        self, vectors: torch.Tensor, generator: torch.Generator, errors: torch.Tensor | None = None
    ) -> int:
        """Move dead codes onto random `vectors`, or, given their quantisation `errors`, the worst ones."""
        if self.frozen:
            return 0
        dead = (self.counts < self.config.dead_usage).nonzero().flatten()
        if len(dead):
            if errors is None:
                picks = torch.randint(len(vectors), (len(dead),), generator=generator, device="cpu")
                picks = picks.to(vectors.device)
            else:
                picks = errors.topk(min(len(dead), len(errors))).indices
                dead = dead[: len(picks)]
            self.weight[dead] = vectors[picks]
            self.counts[dead] = 1.0
            self.sums[dead] = vectors[picks]
        return len(dead)

    def perplexity(self) -> float:
        p = self.counts / self.counts.sum()
        return float(torch.exp(-(p * torch.log(p + 1e-12)).sum()))


@torch.no_grad()
def kmeans_vectors(
    vq: torch.nn.Module,
    source: Dataset,
    step: int,
    config: TrainConfig,
    device: torch.device,
    memory_format: torch.memory_format,
) -> torch.Tensor:
    """Encoder outputs `[N, C]` of the batches of steps `step ..` (`quantizer.kmeans_batches` of them): the
    vectors the codebook's k-means starts from (a pure function of the step, so a resumed run gets the same)."""
    vectors = []
    for t in range(step, step + config.quantizer.kmeans_batches):
        pixels = source[t].to(device).permute(0, 3, 1, 2).float() / 127.5 - 1
        latents = vq.encode(pixels.contiguous(memory_format=memory_format)).latents.float()
        vectors.append(latents.permute(0, 2, 3, 1).reshape(-1, latents.shape[1]))
    return torch.cat(vectors)


def edge_weights(target: torch.Tensor, edge_weight: float) -> torch.Tensor:
    """`[B, 1, H, W]`: `1 + edge_weight` for pixels within 2 px of a colour change of `target`, else 1."""
    spread = F.max_pool2d(target, 3, 1, 1) + F.max_pool2d(-target, 3, 1, 1)  # local max - local min
    near_edge = F.max_pool2d((spread.amax(1, keepdim=True) > 0).float(), 3, 1, 1)
    return 1 + edge_weight * near_edge


def pixel_loss(recon: torch.Tensor, target: torch.Tensor, optim: OptimConfig) -> torch.Tensor:
    """`l1_weight` * L1 (pixels within 2 px of a colour change weighted `1 + edge_weight`) + `l2_weight` * MSE."""
    loss = recon.new_zeros(())
    if optim.l1_weight:
        error = (recon - target).abs()
        if optim.edge_weight:
            error = error * edge_weights(target, optim.edge_weight)
        loss = loss + optim.l1_weight * error.mean()
    return loss + optim.l2_weight * F.mse_loss(recon, target) if optim.l2_weight else loss


def palette_loss(
    logits: torch.Tensor, target: torch.Tensor, palette_index: torch.Tensor, optim: OptimConfig
) -> torch.Tensor:
    """Cross-entropy of the per-pixel palette logits, pixels near a colour change weighted `1 + edge_weight`."""
    loss = F.cross_entropy(logits, palette_index, reduction="none")
    if optim.edge_weight:
        loss = loss * edge_weights(target, optim.edge_weight)[:, 0]
    return loss.mean()


def learning_rate(step: int, optim: OptimConfig) -> float:
    if step < optim.warmup:
        return optim.lr * (step + 1) / optim.warmup
    progress = (step - optim.warmup) / max(1, optim.steps - optim.warmup)
    return optim.lr * (
        optim.min_lr_ratio + (1 - optim.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * progress))
    )


# what optim.trainable "decoder" trains: VQModel's post_quant_conv and decoder, PatchPaletteVQ's decoder
DECODER_MODULES = ("post_quant_conv", "decoder")
TRAINING_FILE = "training.json"  # beside a tokenizer trained on a folder: {"psnr": dB on its training images}


def _atomic_save(obj: Any, path: Path) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    torch.save(obj, tmp)
    os.replace(tmp, path)


def _log(out: Path, record: dict[str, Any]) -> None:
    with (out / "log.jsonl").open("a") as f:
        f.write(json.dumps(record) + "\n")


def evaluate(tokenizer: ImageTokenizer, run: RunConfig, kinds: list[str]) -> dict[str, dict[str, float]]:
    """Held-out metrics per eval canvas (see `lumina_mgpt.vq.evaluate.evaluate_canvas`)."""
    was_training = tokenizer.training
    tokenizer.eval()
    report = {
        f"{w}x{h}": evaluate_canvas(tokenizer, w, h, run.eval_scenes, run.eval_seed, kinds)
        for w, h in run.eval_canvases
    }
    tokenizer.train(was_training)
    return report


def folder_psnr(tokenizer: ImageTokenizer, images: list[np.ndarray], run: RunConfig) -> dict[str, float]:
    """PSNR (dB) of centre crops of the first `run.eval_scenes` images at each eval canvas, and overall."""
    was_training = tokenizer.training
    tokenizer.eval()
    report, errors = {}, []
    with torch.no_grad():
        for w, h in run.eval_canvases:
            originals = np.stack([centre_crop(image, w, h) for image in images[: run.eval_scenes]])
            recon, _ = reconstruct(tokenizer, originals)
            report[f"{w}x{h} psnr"] = psnr(originals, recon)
            errors.append(10 ** (-report[f"{w}x{h} psnr"] / 10))
    tokenizer.train(was_training)
    report["psnr"] = float(-10 * np.log10(np.mean(errors)))
    return report


def train(config: TrainConfig, out: str | Path, show_progress: bool = True) -> dict[str, Any]:
    """Train (or resume) into `out`; returns the final metrics (also written to `out/metrics.json`)."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    device = resolve_device(config.run.device)
    with torch.random.fork_rng(devices=[]):  # a seeded initialisation that leaves the caller's RNG alone
        torch.manual_seed(config.run.seed)
        tokenizer = ImageTokenizer.from_config(
            config.model.vqmodel_kwargs(), architecture=config.model.architecture, name="shapes-vq"
        ).to(device)
    painted = config.model.architecture == PATCH_PALETTE
    vq = tokenizer.vq
    memory_format = torch.channels_last if device.type == "cuda" else torch.contiguous_format
    vq.to(memory_format=memory_format)
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True
    decoder_only = config.optim.trainable == "decoder"
    codebook = Codebook(tokenizer, config.quantizer, frozen=decoder_only)
    if decoder_only:
        vq.requires_grad_(False)
        for name in DECODER_MODULES:
            if (module := getattr(vq, name, None)) is not None:
                module.requires_grad_(True)
    params = [p for p in vq.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(
        params, lr=config.optim.lr, betas=(0.9, 0.99), weight_decay=config.optim.weight_decay
    )

    checkpoint, start = out / "checkpoint.pt", 0
    if checkpoint.exists():
        state = load_state_file(checkpoint, device)
        try:
            vq.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            codebook.load_state_dict(state["codebook"])
            start = int(state["step"])
        except (KeyError, RuntimeError, ValueError, TypeError) as error:
            raise unloadable_checkpoint(checkpoint, error) from None
    elif config.run.init_from:
        source = load_image_tokenizer(config.run.init_from)
        try:
            vq.load_state_dict(source.vq.state_dict())
        except RuntimeError:
            raise LuminaError(
                f"{config.run.init_from}: its architecture differs from this config's model"
            ) from None
        codebook.sums.copy_(codebook.weight)
    (out / "config.yaml").write_text(yaml.safe_dump(_plain(dataclasses.asdict(config)), sort_keys=False))

    images = load_images(config.data.images, tokenizer.factor) if config.data.images else None
    if images is None:
        source: Dataset = SceneBatches(config.data, config.run.seed)
    else:
        data = config.data
        source = FolderBatches(
            images, data.canvases, data.batch_size, config.run.seed, data.patch, tuple(data.crop_fraction)
        )
    batches = DataLoader(
        source,
        batch_size=None,
        sampler=range(start, config.optim.steps),
        num_workers=config.data.workers,
        pin_memory=device.type == "cuda",
        prefetch_factor=4 if config.data.workers else None,
        persistent_workers=False,
    )
    autocast = torch.autocast(
        device.type, dtype=torch.bfloat16, enabled=config.run.bf16 and device.type == "cuda"
    )
    kinds = list(config.data.mix)
    evaluate_run = (
        (lambda: evaluate(tokenizer, config.run, kinds))
        if images is None
        else (lambda: folder_psnr(tokenizer, images, config.run))
    )
    progress = tqdm(
        total=config.optim.steps, initial=start, disable=not show_progress, desc="vq", dynamic_ncols=True
    )
    tokenizer.train()
    started, done = time.time(), start
    for step, batch in enumerate(batches, start=start):
        generator = torch.Generator().manual_seed(config.run.seed * 1_000_003 + step)
        pixels = batch.to(device, non_blocking=True).permute(0, 3, 1, 2).float() / 127.5 - 1
        pixels = pixels.contiguous(memory_format=memory_format)
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(step, config.optim)
        with autocast, torch.set_grad_enabled(not decoder_only):
            latents = vq.encode(pixels).latents.float()
        vectors = latents.detach().permute(0, 2, 3, 1).reshape(-1, latents.shape[1])
        quantising = step >= config.quantizer.start
        if step == config.quantizer.start and not config.run.init_from:
            codebook.initialise(
                kmeans_vectors(vq, source, step, config, device, memory_format),
                generator,
                config.quantizer.kmeans_iterations,
            )
        codes = tokenizer.nearest_codes(latents.detach())
        chosen = vq.quantize.embedding(codes).permute(0, 3, 1, 2)
        commitment = F.mse_loss(latents, chosen.detach())
        quantised = latents + (chosen - latents).detach() if quantising else latents
        with autocast:
            if painted:
                logits = vq.logits(quantised).float()
            else:
                recon = vq.decode(quantised, force_not_quantize=True).sample.float()
        if painted:
            l1 = F.l1_loss(vq.paint(logits.detach()), pixels)
            reconstruction = palette_loss(logits, pixels, vq.palette_index(pixels), config.optim)
        else:
            l1 = F.l1_loss(recon.detach(), pixels)
            batch_psnr = 10 * math.log10(4 / max(F.mse_loss(recon.detach(), pixels).item(), 1e-10))
            reconstruction = pixel_loss(recon, pixels, config.optim)
        loss = reconstruction + config.quantizer.commitment * commitment if quantising else reconstruction
        if config.quantizer.kind == "straight_through" and quantising:
            loss = loss + F.mse_loss(chosen, latents.detach())
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, config.optim.grad_clip)
        optimizer.step()
        if quantising:
            codebook.update(vectors, codes.flatten())
        restarted = 0
        if quantising and (step + 1) % config.quantizer.restart_every == 0:
            errors = None
            if config.quantizer.restart_on == "worst":
                errors = (latents.detach() - chosen.detach()).square().sum(1).flatten()
            restarted = codebook.restart_dead(vectors, generator, errors)
        done = step + 1
        progress.update(1)
        out_of_time = config.run.minutes is not None and time.time() - started > 60 * config.run.minutes
        if done % config.run.log_every == 0 or done == config.optim.steps:
            record = {
                "step": done,
                "loss": loss.item(),
                "l1": l1.item(),
                "commitment": commitment.item(),
                "perplexity": codebook.perplexity() if quantising else None,  # no codes before start
                "restarted": restarted,
                "lr": learning_rate(step, config.optim),
                "elapsed_s": round(time.time() - started, 1),
            }
            if not painted:
                record["psnr"] = round(batch_psnr, 2)
            progress.set_postfix(
                l1=f"{record['l1']:.4f}", ppl=f"{record['perplexity'] or 0:.0f}", psnr=record.get("psnr", "-")
            )
            _log(out, record)
        if config.run.eval_every and done % config.run.eval_every == 0 and done < config.optim.steps:
            _log(out, {"step": done, "eval": evaluate_run()})
        if done % config.run.checkpoint_every == 0 or done == config.optim.steps or out_of_time:
            state = {
                "step": done,
                "model": vq.state_dict(),
                "optimizer": optimizer.state_dict(),
                "codebook": codebook.state_dict(),
            }
            _atomic_save(state, checkpoint)
        if out_of_time:
            break
    progress.close()

    tokenizer.eval()
    metrics = {
        "steps": done,
        "train_seconds": round(time.time() - started, 1),
        "parameters": sum(p.numel() for p in vq.parameters()),
    }
    if config.run.eval_scenes:
        metrics["eval"] = evaluate_run()
    folder = save_image_tokenizer(tokenizer.float().cpu(), out / "tokenizer")
    if images is not None and config.run.eval_scenes:
        (folder / TRAINING_FILE).write_text(json.dumps({"psnr": metrics["eval"]["psnr"]}) + "\n")
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def _plain(value: Any) -> Any:
    """Tuples to lists, recursively (for YAML)."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


if __name__ == "__main__":
    import sys

    import typer

    from lumina_mgpt.vq.cli import train_vq

    try:
        typer.run(train_vq)
    except LuminaError as e:
        print(f"error: {e}", file=sys.stderr)
        sys.exit(2)
