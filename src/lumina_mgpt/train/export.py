"""Export a trained (sharded) model as an HF-format folder: weights and config, plus the tokenizers."""

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from lumina_mgpt.generate.presets import PRESET_FILE
from lumina_mgpt.model import ChameleonTransformer, save_transformer
from lumina_mgpt.text import TextTokenizer
from lumina_mgpt.train.config import LoraSettings, TrainConfig
from lumina_mgpt.train.distributed import Runtime
from lumina_mgpt.train.lora import add_adapters, merge_adapters
from lumina_mgpt.vocab import TokenLayout

IMAGE_TOKENIZER_FOLDER = "vq"


def export_model(
    model: ChameleonTransformer, config: TrainConfig, folder: str | os.PathLike, runtime: Runtime
) -> Path:
    """Gather the full weights on the main rank (LoRA adapters merged into them) and write `folder` with
    `save_transformer` (special ids taken from the text tokenizer), the text tokenizer files, the image
    tokenizer (under `vq/`) and `sampling.json`: those the config names, else those of the model folder it
    starts from (`init_from`), so that the export loads with no other argument. Every rank calls it."""
    folder = Path(folder)
    files = model_files(config)
    plain = plain_model(model, config.lora, runtime)
    if runtime.is_main:
        # the config's special ids are those of the tokenizer it ships with
        if files.text_tokenizer is not None:
            layout = TokenLayout.from_tokenizer(files.text_tokenizer, config.layout)
            plain.config.bos_token_id = layout.bos_id
            plain.config.eos_token_id = (
                list(layout.stop_ids) if len(layout.stop_ids) > 1 else layout.stop_ids[0]
            )
        save_transformer(plain, folder)
        if files.text_tokenizer is not None:
            TextTokenizer.from_folder(files.text_tokenizer).save(folder)
        if files.sampling is not None:
            shutil.copyfile(files.sampling, folder / PRESET_FILE)
        if files.image_tokenizer is not None:
            from lumina_mgpt.vq import load_image_tokenizer, save_image_tokenizer  # diffusers: slow to import
            from lumina_mgpt.vq.train import TRAINING_FILE

            source = Path(files.image_tokenizer)
            source = source / IMAGE_TOKENIZER_FOLDER if (source / IMAGE_TOKENIZER_FOLDER).is_dir() else source
            save_image_tokenizer(load_image_tokenizer(source), folder / IMAGE_TOKENIZER_FOLDER)
            if (source / TRAINING_FILE).is_file():  # its own PSNR figure, for the data guard rail
                shutil.copyfile(source / TRAINING_FILE, folder / IMAGE_TOKENIZER_FOLDER / TRAINING_FILE)
    return folder


@dataclass(frozen=True)
class RunFiles:
    """The tokenizers and sampling preset a run's model goes with (None: none known)."""

    text_tokenizer: str | None
    image_tokenizer: str | None
    sampling: Path | None


def model_files(config: TrainConfig) -> RunFiles:
    """Those the config names, else those of the model folder it starts from (`init_from`)."""
    base = Path(config.init_from) if config.init_from and Path(config.init_from).is_dir() else None
    text_tokenizer = config.tokenizer
    if text_tokenizer is None and base is not None and (base / "tokenizer.json").is_file():
        text_tokenizer = str(base)
    image_tokenizer = config.image_tokenizer
    if image_tokenizer is None and base is not None and (base / IMAGE_TOKENIZER_FOLDER).is_dir():
        image_tokenizer = str(base / IMAGE_TOKENIZER_FOLDER)
    sampling = base / PRESET_FILE if base is not None and (base / PRESET_FILE).is_file() else None
    return RunFiles(text_tokenizer, image_tokenizer, sampling)


def plain_model(model: nn.Module, lora: LoraSettings | None, runtime: Runtime) -> ChameleonTransformer | None:
    """The full, unsharded float32 model on the main rank's CPU (None elsewhere), LoRA adapters merged into
    its weights. Every rank calls it."""
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if not runtime.is_main:
        return None
    with torch.device("meta"):
        plain = ChameleonTransformer(model.config)
        if lora is not None:
            add_adapters(plain, lora, 0)
    if lora is not None:  # merging writes into the weights, which may be the live model's own tensors
        state = {name: tensor.clone() for name, tensor in state.items()}
    plain.load_state_dict(state, assign=True)
    plain.model.rotary.reset_parameters("cpu")  # a non-persistent buffer: in no state dict
    return merge_adapters(plain) if lora is not None else plain
