"""Validation during training: the loss on held-out shards, and sample images for fixed captions as a grid."""

import math
import os
from pathlib import Path

import torch
from PIL import Image, ImageDraw
from torch import nn

from lumina_mgpt.data.batch import collate
from lumina_mgpt.data.shards import ShardSet
from lumina_mgpt.errors import LuminaError
from lumina_mgpt.train.config import TrainConfig
from lumina_mgpt.train.distributed import Runtime, all_reduce_sum
from lumina_mgpt.train.export import model_files, plain_model
from lumina_mgpt.train.losses import count_targets, lm_losses

GRID_COLUMNS = 4
CAPTION_HEIGHT = 14  # px under each image for its caption


class Validator:
    """Scores `config.validation.shards` and draws its captions' samples; every rank calls its methods."""

    def __init__(self, config: TrainConfig, runtime: Runtime):
        self.config, self.runtime, self.settings = config, runtime, config.validation
        self.samples = ShardSet(self.settings.shards)
        if not len(self.samples):
            raise LuminaError(f"validation shards {', '.join(self.settings.shards)} hold no samples")
        self._parts = None
        files = model_files(config)
        if self.settings.captions and (files.text_tokenizer is None or files.image_tokenizer is None):
            raise LuminaError(
                "validation.captions needs the run's tokenizers: set 'tokenizer' and 'image_tokenizer' "
                "or start from a model folder (init_from) that has them"
            )

    def loss_due(self, step: int) -> bool:
        return step % self.settings.every == 0 or step == self.config.total_steps

    def samples_due(self, step: int) -> bool:
        every = self.settings.sample_every
        return (
            bool(self.settings.captions)
            and every > 0
            and (step % every == 0 or step == self.config.total_steps)
        )

    @torch.no_grad()
    def loss(self, model: nn.Module) -> float:
        """Mean cross-entropy per target token over every validation sample (no context drop, no dropout).
        Each rank scores every world_size-th sample; all run the same number of forward passes (FSDP)."""
        rank, size, micro = self.runtime.rank, self.runtime.world_size, self.config.micro_batch_size
        mine = [self.samples[i] for i in range(rank, len(self.samples), size)]
        passes = math.ceil(math.ceil(len(self.samples) / size) / micro)
        total, targets = 0.0, 0
        model.eval()
        for index in range(passes):
            group = mine[index * micro : (index + 1) * micro]
            ids, labels = collate(group or [self.samples[0]])  # a rank with none left still takes part
            logits = model(ids.to(self.runtime.device))
            if group:
                total += float(lm_losses(logits, labels.to(self.runtime.device), 1)[0])
                targets += count_targets(labels)
        model.train()
        total, targets = all_reduce_sum([total, targets], self.runtime.device)
        return total / max(targets, 1.0)

    def save_samples(self, model: nn.Module, step: int, folder: Path, area: int | None) -> Path | None:
        """Draw one image per caption with the current weights (LoRA merged) and write them as one grid,
        `folder/step-N.png` (main rank; returns its path there)."""
        plain = plain_model(model, self.config.lora, self.runtime)
        if not self.runtime.is_main:
            return None
        pipe = self._pipeline_for(plain.eval())
        side = area or pipe.preset.canvas[0]
        with torch.random.fork_rng(devices=[]):  # the run's RNG stream stays as without samples
            images = pipe(self.settings.captions, side, side, seed=self.settings.seed, progress=False).images
        path = folder / f"step-{step}.png"
        folder.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.tmp.png")
        image_grid(images, self.settings.captions).save(tmp)
        os.replace(tmp, path)
        return path

    def _pipeline_for(self, transformer: nn.Module):
        """A pipeline around `transformer` with the run's tokenizers and sampling preset (loaded once)."""
        from lumina_mgpt.generate.presets import preset_for
        from lumina_mgpt.pipeline import LuminaMGPTPipeline
        from lumina_mgpt.text import TextTokenizer
        from lumina_mgpt.vocab import TokenLayout
        from lumina_mgpt.vq import load_image_tokenizer

        if self._parts is None:
            files = model_files(self.config)
            layout = TokenLayout.from_tokenizer(files.text_tokenizer, self.config.layout)
            self._parts = (
                TextTokenizer.from_folder(files.text_tokenizer),
                load_image_tokenizer(files.image_tokenizer),
                layout,
                preset_for(layout.name, None if files.sampling is None else files.sampling.parent),
            )
        return LuminaMGPTPipeline(transformer, *self._parts)


def image_grid(images: list[Image.Image], captions: list[str]) -> Image.Image:
    """The images in rows of `GRID_COLUMNS`, each with its caption (cut to fit) under it."""
    width, height = images[0].size
    columns = min(GRID_COLUMNS, len(images))
    rows = math.ceil(len(images) / columns)
    grid = Image.new("RGB", (columns * width, rows * (height + CAPTION_HEIGHT)), "white")
    draw = ImageDraw.Draw(grid)
    for index, (image, caption) in enumerate(zip(images, captions, strict=True)):
        left, top = (index % columns) * width, (index // columns) * (height + CAPTION_HEIGHT)
        grid.paste(image, (left, top))
        text = caption
        while text and draw.textlength(text) > width - 2:
            text = text[:-1]
        draw.text((left + 1, top + height + 1), text, fill="black")
    return grid
