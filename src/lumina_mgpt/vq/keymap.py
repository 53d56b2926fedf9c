"""Parameter names of the released checkpoints (taming / MoVQ layout) versus diffusers' `VQModel`.

The map is derived from the model's own parameter names with one set of rewrite rules (diffusers -> release),
so it is a bijection by construction; loading checks that a file has exactly those names and shapes.
"""

import re

import torch
from torch import nn

from lumina_mgpt.errors import LuminaError

# Applied in order to a diffusers name (after the decoder's up-block index is reversed).
_RULES: tuple[tuple[str, str], ...] = (
    (r"\.down_blocks\.", ".down."),
    (r"\.(down|up)\.(\d+)\.resnets\.", r".\1.\2.block."),
    (r"\.(down|up)\.(\d+)\.attentions\.", r".\1.\2.attn."),
    (r"\.downsamplers\.0\.", ".downsample."),
    (r"\.upsamplers\.0\.", ".upsample."),
    (r"\.mid_block\.resnets\.0\.", ".mid.block_1."),
    (r"\.mid_block\.resnets\.1\.", ".mid.block_2."),
    (r"\.mid_block\.attentions\.0\.", ".mid.attn_1."),
    (r"\.conv_norm_out\.", ".norm_out."),
    (r"\.conv_shortcut\.", ".nin_shortcut."),
    (r"\.(group_norm|spatial_norm)\.", ".norm."),
    (r"\.to_([qkv])\.", r".\1."),
    (r"\.to_out\.0\.", ".proj_out."),
)
# Attention projections: 1x1 convolutions in the releases, linear layers in diffusers.
_ATTN_PROJ = re.compile(r"\.attentions\.\d+\.(to_q|to_k|to_v|to_out\.0)\.weight$")


def release_name(name: str, num_levels: int) -> str:
    """The release checkpoint's name for a diffusers `VQModel` parameter name."""
    name = re.sub(
        r"^decoder\.up_blocks\.(\d+)\.", lambda m: f"decoder.up.{num_levels - 1 - int(m[1])}.", name
    )
    for pattern, replacement in _RULES:
        name = re.sub(pattern, replacement, name)
    return name


def release_names(model: nn.Module) -> dict[str, str]:
    """Map every parameter of a diffusers `VQModel` to its release checkpoint name."""
    num_levels = len(model.config.block_out_channels)
    names = {name: release_name(name, num_levels) for name in model.state_dict()}
    assert len(set(names.values())) == len(names), "release names must be unique"
    return names


def to_release(model: nn.Module) -> dict[str, torch.Tensor]:
    """The model's state dict under release names and shapes (attention projections as 1x1 convolutions)."""
    names = release_names(model)
    return {
        names[k]: v[:, :, None, None] if _ATTN_PROJ.search(k) else v for k, v in model.state_dict().items()
    }


def _preview(keys: list[str], limit: int = 4) -> str:
    more = f" (+{len(keys) - limit} more)" if len(keys) > limit else ""
    return ", ".join(keys[:limit]) + more if keys else "none"


def check_state_dict(
    expected: dict[str, torch.Size], state_dict: dict[str, torch.Tensor], source: str
) -> None:
    """Raise a one-line LuminaError unless `state_dict` has exactly the `expected` names and shapes."""
    missing = sorted(expected.keys() - state_dict.keys())
    unexpected = sorted(state_dict.keys() - expected.keys())
    if missing or unexpected:
        raise LuminaError(
            f"{source}: checkpoint keys do not match the tokenizer: "
            f"missing {len(missing)} [{_preview(missing)}], unexpected {len(unexpected)} [{_preview(unexpected)}]"
        )
    wrong = [
        f"{k} {list(v.shape)} != {list(expected[k])}" for k, v in state_dict.items() if v.shape != expected[k]
    ]
    if wrong:
        raise LuminaError(f"{source}: checkpoint shapes do not match the tokenizer: {_preview(wrong)}")


def from_release(
    model: nn.Module, state_dict: dict[str, torch.Tensor], source: str
) -> dict[str, torch.Tensor]:
    """Translate a release state dict to the model's names; names and shapes must match one to one."""
    check_state_dict({k: v.shape for k, v in to_release(model).items()}, state_dict, source)
    return {
        name: state_dict[release][:, :, 0, 0] if _ATTN_PROJ.search(name) else state_dict[release]
        for name, release in release_names(model).items()
    }
