"""Export a trained (sharded) model as an HF-format folder: weights and config, plus the tokenizers."""

import os
import shutil
from pathlib import Path

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

from lumina_mgpt.generate.presets import PRESET_FILE
from lumina_mgpt.model import ChameleonTransformer, save_transformer
from lumina_mgpt.text import TextTokenizer
from lumina_mgpt.train.config import TrainConfig
from lumina_mgpt.train.distributed import Runtime
from lumina_mgpt.vocab import TokenLayout

IMAGE_TOKENIZER_FOLDER = "vq"


def export_model(
    model: ChameleonTransformer, config: TrainConfig, folder: str | os.PathLike, runtime: Runtime
) -> Path:
    """Gather the full weights on the main rank and write `folder` with `save_transformer` (special ids taken
    from the text tokenizer), the text tokenizer files, the image tokenizer (under `vq/`) and `sampling.json`:
    those the config names, else those of the model folder it starts from (`init_from`), so that the export
    loads with no other argument. Every rank calls it."""
    folder = Path(folder)
    base = Path(config.init_from) if config.init_from and Path(config.init_from).is_dir() else None
    text_tokenizer = config.tokenizer
    if text_tokenizer is None and base is not None and (base / "tokenizer.json").is_file():
        text_tokenizer = str(base)
    image_tokenizer = config.image_tokenizer
    if image_tokenizer is None and base is not None and (base / IMAGE_TOKENIZER_FOLDER).is_dir():
        image_tokenizer = str(base / IMAGE_TOKENIZER_FOLDER)
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if runtime.is_main:
        with torch.device("meta"):
            plain = ChameleonTransformer(model.config)
        plain.load_state_dict(state, assign=True)
        if text_tokenizer is not None:  # the config's special ids are those of the tokenizer it ships with
            layout = TokenLayout.from_tokenizer(text_tokenizer, config.layout)
            plain.config.bos_token_id = layout.bos_id
            plain.config.eos_token_id = (
                list(layout.stop_ids) if len(layout.stop_ids) > 1 else layout.stop_ids[0]
            )
        save_transformer(plain, folder)
        if text_tokenizer is not None:
            TextTokenizer.from_folder(text_tokenizer).save(folder)
        if base is not None and (base / PRESET_FILE).is_file():
            shutil.copyfile(base / PRESET_FILE, folder / PRESET_FILE)
        if image_tokenizer is not None:
            from lumina_mgpt.vq import load_image_tokenizer, save_image_tokenizer  # diffusers: slow to import

            save_image_tokenizer(load_image_tokenizer(image_tokenizer), folder / IMAGE_TOKENIZER_FOLDER)
    return folder
