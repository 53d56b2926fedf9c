"""Export a trained (sharded) model as an HF-format folder: weights and config, plus the tokenizers."""

import os
from pathlib import Path

import torch
from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

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
    from the text tokenizer), the text tokenizer files and the image tokenizer (under `vq/`) when the config
    names them. Every rank calls it."""
    folder = Path(folder)
    state = get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
    if runtime.is_main:
        with torch.device("meta"):
            plain = ChameleonTransformer(model.config)
        plain.load_state_dict(state, assign=True)
        if config.tokenizer is not None:  # the config's special ids are those of the tokenizer it ships with
            layout = TokenLayout.from_tokenizer(config.tokenizer, config.layout)
            plain.config.bos_token_id = layout.bos_id
            plain.config.eos_token_id = (
                list(layout.stop_ids) if len(layout.stop_ids) > 1 else layout.stop_ids[0]
            )
        save_transformer(plain, folder)
        if config.tokenizer is not None:
            TextTokenizer.from_folder(config.tokenizer).save(folder)
        if config.image_tokenizer is not None:
            from lumina_mgpt.vq import load_image_tokenizer, save_image_tokenizer  # diffusers: slow to import

            save_image_tokenizer(
                load_image_tokenizer(config.image_tokenizer), folder / IMAGE_TOKENIZER_FOLDER
            )
    return folder
