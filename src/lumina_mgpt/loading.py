"""Loading a model's parts from a folder or hub repo id: which files (`hub.resolve_model`), the family, the
transformer (quantized or split for tensor parallelism), both tokenizers, the token layout and the preset.

`load_model` is what `LuminaMGPTPipeline.from_pretrained` builds a pipeline from; `model_limits` reads only
the config and the text tokenizer, so a command can refuse an impossible size before any weight is read.
"""

import os
from dataclasses import dataclass, replace

import torch

from lumina_mgpt.devices import resolve_device
from lumina_mgpt.errors import LuminaError
from lumina_mgpt.generate.presets import Preset, preset_for
from lumina_mgpt.hub import resolve_model
from lumina_mgpt.model import ChameleonConfig, ChameleonTransformer, load_transformer
from lumina_mgpt.model.parallel import tensor_parallel_mesh
from lumina_mgpt.model.quantize import quantize_weights
from lumina_mgpt.text import TextTokenizer
from lumina_mgpt.vocab import TokenLayout, detect_kind
from lumina_mgpt.vq import ImageTokenizer, load_image_tokenizer


@dataclass
class LoadedModel:
    """The parts of a pipeline, on their device."""

    transformer: ChameleonTransformer
    text_tokenizer: TextTokenizer
    image_tokenizer: ImageTokenizer
    layout: TokenLayout
    preset: Preset


def load_model(
    path_or_repo_id: str | os.PathLike | None = None,
    device: torch.device | str | None = None,
    dtype: torch.dtype | None = None,
    text_tokenizer: str | os.PathLike | None = None,
    image_tokenizer: str | os.PathLike | ImageTokenizer | None = None,
    quantize: str | None = None,
    tensor_parallel: int = 1,
) -> LoadedModel:
    """A model's parts (see `LuminaMGPTPipeline.from_pretrained` for the arguments)."""
    device = resolve_device(device)
    mesh = None if tensor_parallel == 1 else tensor_parallel_mesh(tensor_parallel, device)
    if mesh is not None and quantize is not None:
        raise LuminaError(
            "quantize cannot be combined with tensor_parallel (torchao's quantised weights do not stay "
            "DTensor shards: each rank would hold whole weights); use one of them"
        )
    given = isinstance(image_tokenizer, ImageTokenizer)
    files = resolve_model(path_or_repo_id, text_tokenizer, None if given else image_tokenizer, not given)
    folder, text_file = files.folder, files.text_tokenizer
    tokenizer = TextTokenizer.from_file(text_file)
    kind = detect_kind(tokenizer)
    if not given:
        image_tokenizer = load_image_tokenizer(files.image_tokenizer, device=device)
    transformer = load_transformer(folder, dtype=dtype, device=device, mesh=mesh)  # each rank: its shards
    if quantize is not None:
        quantize_weights(transformer, quantize)
    layout = TokenLayout.from_tokenizer(text_file, kind)
    preset = preset_for(kind, folder)
    if files.release is not None:  # the default canvas: the resolution the release was trained at
        preset = replace(preset, canvas=(files.release.resolution,) * 2)
    return LoadedModel(transformer, tokenizer, image_tokenizer.to(device).eval(), layout, preset)


def model_limits(
    path_or_repo_id: str | os.PathLike | None, text_tokenizer: str | os.PathLike | None = None
) -> tuple[TokenLayout, int]:
    """A model's token layout and the tokens it holds (`max_position_embeddings`), from its config and text
    tokenizer alone."""
    files = resolve_model(path_or_repo_id, text_tokenizer, want_image_tokenizer=False)
    file = files.text_tokenizer
    layout = TokenLayout.from_tokenizer(file, detect_kind(TextTokenizer.from_file(file)))
    return layout, ChameleonConfig.from_json_file(files.folder / "config.json").max_position_embeddings
