"""Release descriptions of the VQ image tokenizers and their translation to diffusers' `VQModel`.

Both releases use the taming-transformers autoencoder layout ("ddconfig"): a base width `ch`, one level per
entry of `ch_mult` (a stride-2 downsample between levels), `num_res_blocks` ResNet blocks per encoder level
(one more per decoder level), single-head attention at the levels whose resolution is in `attn_resolutions`
(counted from the nominal `resolution`), and a mid block (res, attn, res) in both halves. v2's MoVQGAN swaps
every decoder norm for a spatially conditioned one; diffusers' `VQModel(norm_type="spatial")` is that decoder.
"""

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from lumina_mgpt.errors import LuminaError


@dataclass(frozen=True)
class TamingConfig:
    """A taming-style VQGAN as the releases describe it (the names of their `ddconfig` + quantiser)."""

    ch: int
    ch_mult: tuple[int, ...]
    num_res_blocks: int
    attn_resolutions: tuple[int, ...]
    resolution: int
    z_channels: int
    embed_dim: int
    n_embed: int
    spatial_norm: bool
    in_channels: int = 3
    out_ch: int = 3

    @property
    def factor(self) -> int:
        return 2 ** (len(self.ch_mult) - 1)

    def level_has_attention(self, level: int) -> bool:
        return self.resolution // 2**level in self.attn_resolutions

    def vqmodel_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of diffusers' `VQModel` that build the same network."""
        levels = range(len(self.ch_mult))
        attn = [self.level_has_attention(i) for i in levels]
        return {
            "in_channels": self.in_channels,
            "out_channels": self.out_ch,
            "down_block_types": tuple("AttnDownEncoderBlock2D" if a else "DownEncoderBlock2D" for a in attn),
            "up_block_types": tuple(
                "AttnUpDecoderBlock2D" if a else "UpDecoderBlock2D" for a in reversed(attn)
            ),
            "block_out_channels": tuple(self.ch * m for m in self.ch_mult),
            "layers_per_block": self.num_res_blocks,
            "latent_channels": self.z_channels,
            "vq_embed_dim": self.embed_dim,
            "num_vq_embeddings": self.n_embed,
            "norm_num_groups": 32,
            "norm_type": "spatial" if self.spatial_norm else "group",
            "mid_block_add_attention": True,
        }


# v2: ai-forever/MoVQGAN `movqgan_{67M,102M,270M}.ckpt` (f8, 4-dim codes, spatial-norm decoder).
MOVQGAN = {
    name: TamingConfig(
        ch=ch,
        ch_mult=(1, 2, 2, 4),
        num_res_blocks=blocks,
        attn_resolutions=(32,),
        resolution=256,
        z_channels=4,
        embed_dim=4,
        n_embed=16384,
        spatial_norm=True,
    )
    for name, ch, blocks in (("67M", 128, 2), ("102M", 128, 4), ("270M", 256, 2))
}

# v1: Meta's Chameleon `vqgan.yaml` (f16, 8,192 codes of 256 dims, group-norm decoder).
CHAMELEON_VQGAN = TamingConfig(
    ch=128,
    ch_mult=(1, 1, 2, 2, 4),
    num_res_blocks=2,
    attn_resolutions=(),
    resolution=512,
    z_channels=256,
    embed_dim=256,
    n_embed=8192,
    spatial_norm=False,
)


def config_from_taming_yaml(path: str | Path) -> TamingConfig:
    """Read a taming `vqgan.yaml` (`model.params.{ddconfig, n_embed, embed_dim}`), as Chameleon ships it."""
    try:
        doc = yaml.safe_load(Path(path).read_text())
        params = doc["model"]["params"] if "model" in doc else doc["params"]
        dd = params["ddconfig"]
        if dd.get("double_z", False):
            raise LuminaError(f"{path}: double_z=true describes a KL autoencoder, not a VQ tokenizer")
        return TamingConfig(
            ch=int(dd["ch"]),
            ch_mult=tuple(int(m) for m in dd["ch_mult"]),
            num_res_blocks=int(dd["num_res_blocks"]),
            attn_resolutions=tuple(int(r) for r in dd.get("attn_resolutions") or ()),
            resolution=int(dd["resolution"]),
            z_channels=int(dd["z_channels"]),
            embed_dim=int(params["embed_dim"]),
            n_embed=int(params["n_embed"]),
            spatial_norm=False,
            in_channels=int(dd.get("in_channels", 3)),
            out_ch=int(dd.get("out_ch", 3)),
        )
    except (KeyError, TypeError) as e:
        raise LuminaError(f"{path}: not a taming VQGAN config (missing or malformed field {e})") from None
    except yaml.YAMLError as e:
        raise LuminaError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
