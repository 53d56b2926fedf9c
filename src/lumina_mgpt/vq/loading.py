"""Load and save image tokenizers: release checkpoints (MoVQGAN, Chameleon VQGAN), our folders, hub repos.

- MoVQGAN (v2): the released `movqgan_{67M,102M,270M}.ckpt`, a pickled state dict (flat or under "state_dict").
- Chameleon VQGAN (v1): a folder with `vqgan.yaml` + `vqgan.ckpt` (state dict under "state_dict").
- Ours: a folder with `config.json` + `model.safetensors`, from `save_image_tokenizer`: a diffusers `VQModel`
  (`vqmodel` holds its keyword arguments), or, with `"architecture": "patch-palette"`, our `PatchPaletteVQ`
  (`vqmodel` holds its keyword arguments, among them `output_palette`, the RGB colours it paints with).
- A hub repo id `owner/name[/subfolder]` holding one of the above (HF_HUB_OFFLINE is respected).

Pickles are read with `torch.load(..., weights_only=True)`: one that would build arbitrary objects is refused.
"""

import json
import os
import pickle
import re
import tempfile
from pathlib import Path
from typing import Any

import safetensors.torch
import torch

from lumina_mgpt.devices import resolve_device
from lumina_mgpt.errors import LuminaError
from lumina_mgpt.hub import local_path
from lumina_mgpt.vq.config import MOVQGAN, TamingConfig, config_from_taming_yaml
from lumina_mgpt.vq.keymap import check_state_dict, from_release
from lumina_mgpt.vq.tokenizer import ImageTokenizer, Rounding

FORMAT = "lumina-mgpt-image-tokenizer"
# the shipped model's VQ
SHAPES_TOKENIZER = Path(__file__).resolve().parent.parent / "models" / "shapes" / "vq"
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.safetensors"


def load_image_tokenizer(
    path_or_repo_id: str | os.PathLike,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
    release_config: TamingConfig | None = None,
) -> ImageTokenizer:
    """Load any supported image tokenizer (see the module docstring) in eval mode.

    `release_config` is the architecture of a MoVQGAN checkpoint file; by default it is read from the file's
    tensor names and shapes (else the preset its name says: `67M`, `102M`, `270M`). Chameleon folders carry theirs in `vqgan.yaml`.
    """
    path = local_path(path_or_repo_id)
    if (path / "vq").is_dir():  # a model folder: its image tokenizer
        path = path / "vq"
    if path.is_file():
        tokenizer = _load_movqgan(path, release_config)
    elif (path / CONFIG_FILE).is_file():
        tokenizer = _load_ours(path)
    elif (path / "vqgan.yaml").is_file() and (path / "vqgan.ckpt").is_file():
        tokenizer = _load_chameleon(path)
    elif len(movq := sorted(path.glob("movqgan*.ckpt"))) == 1:
        tokenizer = _load_movqgan(movq[0], release_config)
    else:
        raise LuminaError(
            f"{path}: no image tokenizer here (expected {CONFIG_FILE} + {WEIGHTS_FILE}, "
            "vqgan.yaml + vqgan.ckpt, or one movqgan_*.ckpt)"
        )
    return tokenizer.to(device=resolve_device(device), dtype=dtype).eval()


def save_image_tokenizer(tokenizer: ImageTokenizer, folder: str | os.PathLike) -> Path:
    """Write `config.json` + `model.safetensors` (our format) into `folder`; returns the folder."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    kwargs = {k: v for k, v in tokenizer.vq.config.items() if not k.startswith("_")}
    config = {"format": FORMAT, "name": tokenizer.name, "rounding": tokenizer.rounding}
    if tokenizer.architecture != "vqmodel":
        config["architecture"] = tokenizer.architecture
    config["vqmodel"] = kwargs
    state = {k: v.detach().contiguous().cpu() for k, v in tokenizer.vq.state_dict().items()}
    _atomic_write(folder / WEIGHTS_FILE, lambda f: safetensors.torch.save_file(state, f))
    _atomic_write(folder / CONFIG_FILE, lambda f: Path(f).write_text(json.dumps(config, indent=2) + "\n"))
    return folder


def tokenizer_from_taming(config: TamingConfig, rounding: Rounding, name: str) -> ImageTokenizer:
    """An uninitialised tokenizer of a release architecture, built on the meta device (no memory)."""
    with torch.device("meta"):
        return ImageTokenizer.from_config(config.vqmodel_kwargs(), rounding=rounding, name=name)


def read_checkpoint(path: Path) -> dict[str, torch.Tensor]:
    """The tensor state dict of a pickled checkpoint (flat or under "state_dict"), read with weights_only."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:
        found = re.search(r"GLOBAL (\S+)", str(e))
        if found:
            raise LuminaError(
                f"{path}: refused to unpickle: it would load {found[1]}, which could run code"
            ) from None
        raise LuminaError(f"{path}: not a readable PyTorch checkpoint (corrupt pickle)") from None
    except Exception as e:
        raise LuminaError(f"{path}: not a readable PyTorch checkpoint ({type(e).__name__})") from None
    state = obj.get("state_dict", obj) if isinstance(obj, dict) else None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise LuminaError(f"{path}: expected a state dict of tensors (flat or under 'state_dict')")
    return state


def tokenizer_from_release(
    config: TamingConfig, state_dict: dict[str, torch.Tensor], source: str, rounding: Rounding, name: str
) -> ImageTokenizer:
    """A tokenizer of a release architecture holding a release state dict (names and shapes checked)."""
    tokenizer = tokenizer_from_taming(config, rounding, name)
    return _load_into(tokenizer, from_release(tokenizer.vq, state_dict, source))


def _load_into(tokenizer: ImageTokenizer, state: dict[str, torch.Tensor]) -> ImageTokenizer:
    tokenizer.vq.load_state_dict(state, strict=True, assign=True)
    return tokenizer


def _load_movqgan(path: Path, config: TamingConfig | None) -> ImageTokenizer:
    state = read_checkpoint(path)
    named = re.search(
        r"(67M|102M|270M)", path.name
    )  # a broken file: the named preset, whose check names keys
    config = config or movqgan_config(state) or MOVQGAN[named[1] if named else "270M"]
    preset = next((name for name, preset in MOVQGAN.items() if preset == config), None)
    name = f"movqgan-{preset}" if preset else path.stem
    return tokenizer_from_release(config, state, str(path), "round", name)


def movqgan_config(state: dict[str, torch.Tensor]) -> TamingConfig | None:
    """The MoVQGAN architecture a release state dict holds, read from its tensor names and shapes (attention
    placed by level at the nominal resolution 256, as the releases' configs do); None if it is not one."""
    try:
        ch = state["encoder.conv_in.weight"].shape[0]
        levels = 1 + max(int(k.split(".")[2]) for k in state if k.startswith("encoder.down."))
        blocks = 1 + max(int(k.split(".")[4]) for k in state if k.startswith("encoder.down.0.block."))
        n_embed, embed_dim = state["quantize.embedding.weight"].shape
        return TamingConfig(
            ch=ch,
            ch_mult=tuple(
                state[f"encoder.down.{i}.block.0.conv2.weight"].shape[0] // ch for i in range(levels)
            ),
            num_res_blocks=blocks,
            attn_resolutions=tuple(
                256 >> i for i in range(levels) if any(k.startswith(f"encoder.down.{i}.attn.") for k in state)
            ),
            resolution=256,
            z_channels=state["encoder.conv_out.weight"].shape[0],
            embed_dim=embed_dim,
            n_embed=n_embed,
            spatial_norm=True,
        )
    except (KeyError, ValueError, IndexError):
        return None


def _load_chameleon(folder: Path) -> ImageTokenizer:
    config = config_from_taming_yaml(folder / "vqgan.yaml")
    ckpt = folder / "vqgan.ckpt"
    return tokenizer_from_release(config, read_checkpoint(ckpt), str(ckpt), "truncate", "chameleon-vqgan")


def _load_ours(folder: Path) -> ImageTokenizer:
    try:
        config: dict[str, Any] = json.loads((folder / CONFIG_FILE).read_text())
    except json.JSONDecodeError as e:
        raise LuminaError(f"{folder / CONFIG_FILE}: not valid JSON ({e})") from None
    if config.get("format") != FORMAT:
        raise LuminaError(f"{folder / CONFIG_FILE}: not an image tokenizer config (format != {FORMAT!r})")
    with torch.device("meta"):
        try:
            tokenizer = ImageTokenizer.from_config(
                config["vqmodel"],
                architecture=config.get("architecture", "vqmodel"),
                rounding=config.get("rounding", "round"),
                name=config.get("name", folder.name),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise LuminaError(f"{folder / CONFIG_FILE}: bad tokenizer config ({e})") from None
    weights = folder / WEIGHTS_FILE
    if not weights.is_file():
        raise LuminaError(f"{weights}: missing")
    try:
        state = safetensors.torch.load_file(weights)
    except Exception as e:
        raise LuminaError(f"{weights}: not a readable safetensors file ({type(e).__name__})") from None
    check_state_dict({k: v.shape for k, v in tokenizer.vq.state_dict().items()}, state, str(weights))
    return _load_into(tokenizer, state)


def _atomic_write(path: Path, write) -> None:
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    os.close(fd)
    try:
        write(tmp)
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.remove(tmp)
