"""Load and save ChameleonTransformer weights as a Hugging Face folder (config.json + safetensors)."""

import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch.distributed.device_mesh import DeviceMesh

from lumina_mgpt.devices import resolve_device
from lumina_mgpt.errors import LuminaError
from lumina_mgpt.hub import MODEL_PATTERNS, resolve_folder
from lumina_mgpt.model.config import CONFIG_NAME, ChameleonConfig
from lumina_mgpt.model.parallel import apply_tensor_parallel, local_index
from lumina_mgpt.model.transformer import ChameleonTransformer

logger = logging.getLogger(__name__)

SAFETENSORS_NAME = "model.safetensors"
SAFETENSORS_INDEX_NAME = "model.safetensors.index.json"
BIN_NAME = "pytorch_model.bin"
BIN_INDEX_NAME = "pytorch_model.bin.index.json"
MAX_SHARD_BYTES = 2 * 1024**3
SKIPPED_PREFIX = "model.vqmodel."  # the unused image encoder that transformers' Chameleon carries
_SHARD_NAME = re.compile(r"model-\d{5}-of-\d{5}\.safetensors")
_HEAD_NORM = re.compile(r"model\.layers\.\d+\.self_attn\.([qk])_norm\.(weight|bias)")


def load_transformer(
    path_or_repo_id: str | os.PathLike,
    dtype: torch.dtype | None = None,
    device: torch.device | str | None = None,
    mesh: DeviceMesh | None = None,
) -> ChameleonTransformer:
    """Load a ChameleonTransformer in eval mode from an HF Chameleon folder or hub repo id.

    Weights come from `model.safetensors`, its sharded index, or `pytorch_model.bin` (sharded or not).
    q/k-norm weights may be `[model_parallel_size, head_dim]` (the Lumina releases) or `[heads, head_dim]`
    (transformers). `model.vqmodel.*` tensors are skipped. `dtype` defaults to bfloat16 on CUDA and float32
    elsewhere; `device` to the CPU. The model is built on the meta device and takes the loaded tensors as its
    parameters, so the weights are held in memory once. With a tensor-parallel `mesh` the model is split first
    (`apply_tensor_parallel`) and each rank reads only its slices of the split tensors from safetensors, so it
    holds about 1/N of the model at any time while loading.
    """
    folder = resolve_folder(path_or_repo_id, MODEL_PATTERNS)
    config = ChameleonConfig.from_json_file(folder / CONFIG_NAME)
    device = resolve_device(device)
    dtype = dtype or (torch.bfloat16 if device.type == "cuda" else torch.float32)
    with torch.device("meta"):
        model = ChameleonTransformer(config)
    expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
    if mesh is not None:
        apply_tensor_parallel(model.to(dtype), mesh)
        model.to_empty(device=device)
    targets = model.state_dict()
    state, skipped = {}, 0
    for name, source, file in _read_tensors(folder):
        if name.startswith(SKIPPED_PREFIX):
            skipped += 1
            continue
        if name not in expected:
            raise LuminaError(f"{file}: unexpected tensor {name!r} (not a Chameleon transformer weight)")
        if name in state:
            raise LuminaError(f"{file}: tensor {name!r} appears twice in the checkpoint")
        index = None
        if mesh is not None and not _HEAD_NORM.fullmatch(name):  # q/k norms: small, cut after their layout
            index = local_index(targets[name], expected[name], mesh)
            if tuple(source.shape) != expected[name]:
                raise _shape_error(file, name, source.shape, expected[name])
        tensor = source.read(index)
        if index is None:
            tensor = _to_model_layout(name, tensor, config, file)
            if tuple(tensor.shape) != expected[name]:
                raise _shape_error(file, name, tensor.shape, expected[name])
        if mesh is not None:
            if index is None:
                tensor = tensor[local_index(targets[name], expected[name], mesh)]
            target = targets[name]
            (target.to_local() if hasattr(target, "to_local") else target).copy_(tensor)
            state[name] = target
        else:
            state[name] = tensor.to(device=device, dtype=dtype if tensor.is_floating_point() else None)
    if skipped:
        logger.info("skipped %d %s* tensors (unused image encoder) in %s", skipped, SKIPPED_PREFIX, folder)
    missing = sorted(set(expected) - set(state))
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise LuminaError(f"{folder}: checkpoint is missing tensor {missing[0]!r}{more}")
    if mesh is None:
        model.load_state_dict(state, assign=True)
    model.model.rotary.reset_parameters(device)
    return model.eval()


def _shape_error(file: Path, name: str, shape, expected: tuple[int, ...]) -> LuminaError:
    return LuminaError(f"{file}: tensor {name!r} has shape {list(shape)}, expected {list(expected)}")


def save_transformer(
    model: ChameleonTransformer, folder: str | os.PathLike, max_shard_bytes: int = MAX_SHARD_BYTES
) -> None:
    """Write `config.json` and `model.safetensors` (shards plus an index above `max_shard_bytes`) in
    transformers' layout. Every file is written under a temporary name and then renamed into place."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    state = {name: t.detach().contiguous() for name, t in model.state_dict().items()}
    shards = _split(state, max_shard_bytes)
    if len(shards) == 1:
        names = [SAFETENSORS_NAME]
    else:
        names = [f"model-{i + 1:05d}-of-{len(shards):05d}.safetensors" for i in range(len(shards))]
    for name, shard in zip(names, shards, strict=True):
        _atomic_write(
            folder / name, lambda tmp, shard=shard: save_file(shard, tmp, metadata={"format": "pt"})
        )
    if len(shards) > 1:
        index = {
            "metadata": {"total_size": sum(t.numel() * t.element_size() for t in state.values())},
            "weight_map": {key: name for name, shard in zip(names, shards, strict=True) for key in shard},
        }
        _atomic_write(
            folder / SAFETENSORS_INDEX_NAME, lambda tmp: Path(tmp).write_text(json.dumps(index, indent=2))
        )
    for stale in folder.iterdir():  # weights of an earlier save that the new files replace
        if stale.name not in names and (
            _SHARD_NAME.fullmatch(stale.name)
            or stale.name == SAFETENSORS_NAME
            or (stale.name == SAFETENSORS_INDEX_NAME and len(shards) == 1)
        ):
            stale.unlink()
    config_text = model.config.to_json_string()
    _atomic_write(folder / CONFIG_NAME, lambda tmp: Path(tmp).write_text(config_text, encoding="utf-8"))


class _Source:
    """One tensor of a checkpoint: its `shape`, and `read(index)` for all of it or a slice (safetensors reads only
    the slice)."""

    def __init__(
        self, shape: tuple[int, ...], read: Callable[[tuple[slice, ...] | None], torch.Tensor]
    ) -> None:
        self.shape, self.read = shape, read


def _read_tensors(folder: Path) -> Iterator[tuple[str, _Source, Path]]:
    """Yield (name, source, file) for every tensor of the folder's weights, whatever their format; the source
    reads the tensor only while the iteration is at that item."""
    for index_name, single_name in ((SAFETENSORS_INDEX_NAME, SAFETENSORS_NAME), (BIN_INDEX_NAME, BIN_NAME)):
        if (folder / index_name).is_file():
            files = _shards_of(folder / index_name)
            break
        if (folder / single_name).is_file():
            files = [folder / single_name]
            break
    else:
        raise LuminaError(
            f"{folder}: no weights found ({SAFETENSORS_NAME}, {SAFETENSORS_INDEX_NAME}, "
            f"{BIN_NAME} or {BIN_INDEX_NAME})"
        )
    for file in files:
        yield from (_read_safetensors(file) if file.suffix == ".safetensors" else _read_bin(file))


def _shards_of(index_file: Path) -> list[Path]:
    try:
        shard_names = sorted(set(json.loads(index_file.read_text(encoding="utf-8"))["weight_map"].values()))
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as err:
        raise LuminaError(f"{index_file}: not a valid weight index ({type(err).__name__}: {err})") from None
    for name in shard_names:
        if not (index_file.parent / name).is_file():
            raise LuminaError(f"{index_file}: shard {name} is missing")
    return [index_file.parent / name for name in shard_names]


def _read_safetensors(file: Path) -> Iterator[tuple[str, _Source, Path]]:
    def corrupt(err: Exception) -> LuminaError:
        return LuminaError(f"{file}: corrupt or truncated safetensors file ({err})")

    try:
        reader = safe_open(file, framework="pt")
    except (SafetensorError, OSError) as err:
        raise corrupt(err) from None
    with reader:
        for name in reader.keys():  # noqa: SIM118 (safe_open is not a mapping)
            try:
                shape = tuple(reader.get_slice(name).get_shape())
            except (SafetensorError, OSError) as err:
                raise corrupt(err) from None

            def read(index: tuple[slice, ...] | None, name: str = name) -> torch.Tensor:
                try:
                    if index is None:
                        return reader.get_tensor(name)
                    # a reader of its own: the file pages a slice touches leave this process's resident
                    # memory when it closes, instead of adding up over the file
                    with safe_open(file, framework="pt") as own:
                        return own.get_slice(name)[index].clone()
                except (SafetensorError, OSError) as err:
                    raise corrupt(err) from None

            yield name, _Source(shape, read), file


def _read_bin(file: Path) -> Iterator[tuple[str, _Source, Path]]:
    try:
        state = torch.load(file, map_location="cpu", weights_only=True, mmap=True)
    except Exception as err:  # pickle, zip and unsafe-type errors all mean the same to the user
        raise LuminaError(f"{file}: cannot read PyTorch weights ({type(err).__name__}: {err})") from None
    if not isinstance(state, dict) or not all(isinstance(t, torch.Tensor) for t in state.values()):
        raise LuminaError(f"{file}: expected a dict of tensors")
    for name, tensor in state.items():
        read = lambda index, tensor=tensor: tensor if index is None else tensor[index]  # noqa: E731
        yield name, _Source(tuple(tensor.shape), read), file


def _to_model_layout(name: str, tensor: torch.Tensor, config: ChameleonConfig, file: Path) -> torch.Tensor:
    """Repeat q/k-norm rows stored per model-parallel shard (`[mp, head_dim]`) to one row per head."""
    match = _HEAD_NORM.fullmatch(name)
    if not match or tensor.dim() != 2:
        return tensor
    heads = config.num_attention_heads if match[1] == "q" else config.num_key_value_heads
    rows = tensor.shape[0]
    if rows == heads:
        return tensor
    if rows != config.model_parallel_size or heads % rows:
        raise LuminaError(
            f"{file}: tensor {name!r} has {rows} rows; expected {heads} (one per head) or "
            f"model_parallel_size={config.model_parallel_size} dividing {heads}"
        )
    return tensor.repeat_interleave(heads // rows, dim=0)


def _split(state: dict[str, torch.Tensor], max_bytes: int) -> list[dict[str, torch.Tensor]]:
    """Greedy, order-preserving split of a state dict into shards of at most `max_bytes` (a larger tensor
    gets a shard of its own)."""
    shards, size = [{}], 0
    for name, tensor in state.items():
        nbytes = tensor.numel() * tensor.element_size()
        if shards[-1] and size + nbytes > max_bytes:
            shards.append({})
            size = 0
        shards[-1][name] = tensor
        size += nbytes
    return shards


def _atomic_write(path: Path, write: Callable[[str], object]) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    try:
        write(str(tmp))
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
