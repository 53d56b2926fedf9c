"""Release checkpoints (MoVQGAN v2, Chameleon VQGAN v1) against independent references.

`Reference` below is a from-the-description implementation of the taming / MoVQ autoencoder (release
parameter names), written for this test only. The key map is checked on the full-size key lists and shapes of
both releases (meta device), and numerically (fp64, tiny widths) through files loaded by `load_image_tokenizer`.
The v1 encoder is also checked against transformers' `ChameleonVQVAE`, and the group-norm names against
diffusers' own LDM-VAE converter.
"""

import os
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.vq import (
    CHAMELEON_VQGAN,
    MOVQGAN,
    TamingConfig,
    config_from_taming_yaml,
    load_image_tokenizer,
)
from lumina_mgpt.vq.keymap import from_release, release_names, to_release
from lumina_mgpt.vq.loading import read_checkpoint, tokenizer_from_taming

# ----------------------------------------------------------------------------------------------------------
# Reference taming / MoVQ autoencoder (release names), written from reference/lumina-mgpt-v{1,2}.md.


class SpatialNorm(nn.Module):
    def __init__(self, channels: int, zq_channels: int):
        super().__init__()
        self.norm_layer = nn.GroupNorm(32, channels, eps=1e-6)
        self.conv_y = nn.Conv2d(zq_channels, channels, 1)
        self.conv_b = nn.Conv2d(zq_channels, channels, 1)

    def forward(self, x, zq):
        zq = F.interpolate(zq, size=x.shape[-2:], mode="nearest")
        return self.norm_layer(x) * self.conv_y(zq) + self.conv_b(zq)


def make_norm(channels: int, zq_channels: int | None) -> nn.Module:
    return nn.GroupNorm(32, channels, eps=1e-6) if zq_channels is None else SpatialNorm(channels, zq_channels)


def apply_norm(norm: nn.Module, x, zq):
    return norm(x) if isinstance(norm, nn.GroupNorm) else norm(x, zq)


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int, zq: int | None):
        super().__init__()
        self.norm1, self.conv1 = make_norm(cin, zq), nn.Conv2d(cin, cout, 3, padding=1)
        self.norm2, self.conv2 = make_norm(cout, zq), nn.Conv2d(cout, cout, 3, padding=1)
        if cin != cout:
            self.nin_shortcut = nn.Conv2d(cin, cout, 1)

    def forward(self, x, zq=None):
        h = self.conv1(F.silu(apply_norm(self.norm1, x, zq)))
        h = self.conv2(F.silu(apply_norm(self.norm2, h, zq)))
        return (self.nin_shortcut(x) if hasattr(self, "nin_shortcut") else x) + h


class AttnBlock(nn.Module):
    def __init__(self, c: int, zq: int | None):
        super().__init__()
        self.norm = make_norm(c, zq)
        self.q, self.k, self.v, self.proj_out = (nn.Conv2d(c, c, 1) for _ in range(4))

    def forward(self, x, zq=None):
        b, c, h, w = x.shape
        n = apply_norm(self.norm, x, zq)
        q, k, v = (m(n).reshape(b, c, h * w) for m in (self.q, self.k, self.v))
        weights = torch.softmax(q.transpose(1, 2) @ k / c**0.5, dim=-1)  # [b, query, key]
        return x + self.proj_out((v @ weights.transpose(1, 2)).reshape(b, c, h, w))


class Level(nn.Module):
    pass


class Encoder(nn.Module):
    def __init__(self, cfg: TamingConfig):
        super().__init__()
        widths = [cfg.ch * m for m in cfg.ch_mult]
        self.conv_in = nn.Conv2d(cfg.in_channels, cfg.ch, 3, padding=1)
        self.down = nn.ModuleList()
        cin = cfg.ch
        for i, cout in enumerate(widths):
            level = Level()
            level.block = nn.ModuleList(
                ResBlock(cin if j == 0 else cout, cout, None) for j in range(cfg.num_res_blocks)
            )
            attn = cfg.resolution // 2**i in cfg.attn_resolutions
            level.attn = nn.ModuleList(
                AttnBlock(cout, None) for _ in range(cfg.num_res_blocks if attn else 0)
            )
            if i < len(widths) - 1:
                level.downsample = Level()
                level.downsample.conv = nn.Conv2d(cout, cout, 3, stride=2)
            self.down.append(level)
            cin = cout
        self.mid = Level()
        self.mid.block_1, self.mid.attn_1, self.mid.block_2 = (
            ResBlock(cin, cin, None),
            AttnBlock(cin, None),
            ResBlock(cin, cin, None),
        )
        self.norm_out = nn.GroupNorm(32, cin, eps=1e-6)
        self.conv_out = nn.Conv2d(cin, cfg.z_channels, 3, padding=1)

    def forward(self, x):
        h = self.conv_in(x)
        for level in self.down:
            for j, block in enumerate(level.block):
                h = block(h)
                if len(level.attn):
                    h = level.attn[j](h)
            if hasattr(level, "downsample"):
                h = level.downsample.conv(F.pad(h, (0, 1, 0, 1)))
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h)))
        return self.conv_out(F.silu(self.norm_out(h)))


class Decoder(nn.Module):
    def __init__(self, cfg: TamingConfig):
        super().__init__()
        zq = cfg.embed_dim if cfg.spatial_norm else None
        widths = [cfg.ch * m for m in cfg.ch_mult]
        cin = widths[-1]
        self.conv_in = nn.Conv2d(cfg.z_channels, cin, 3, padding=1)
        self.mid = Level()
        self.mid.block_1, self.mid.attn_1, self.mid.block_2 = (
            ResBlock(cin, cin, zq),
            AttnBlock(cin, zq),
            ResBlock(cin, cin, zq),
        )
        levels = []
        for i in reversed(range(len(widths))):
            cout = widths[i]
            level = Level()
            level.block = nn.ModuleList(
                ResBlock(cin if j == 0 else cout, cout, zq) for j in range(cfg.num_res_blocks + 1)
            )
            attn = cfg.resolution // 2**i in cfg.attn_resolutions
            level.attn = nn.ModuleList(
                AttnBlock(cout, zq) for _ in range(cfg.num_res_blocks + 1 if attn else 0)
            )
            if i > 0:
                level.upsample = Level()
                level.upsample.conv = nn.Conv2d(cout, cout, 3, padding=1)
            levels.insert(0, level)
            cin = cout
        self.up = nn.ModuleList(levels)
        self.norm_out = make_norm(cin, zq)
        self.conv_out = nn.Conv2d(cin, cfg.out_ch, 3, padding=1)

    def forward(self, z, zq):
        h = self.conv_in(z)
        h = self.mid.block_2(self.mid.attn_1(self.mid.block_1(h, zq), zq), zq)
        for level in reversed(self.up):
            for j, block in enumerate(level.block):
                h = block(h, zq)
                if len(level.attn):
                    h = level.attn[j](h, zq)
            if hasattr(level, "upsample"):
                h = level.upsample.conv(F.interpolate(h, scale_factor=2.0, mode="nearest"))
        return self.conv_out(F.silu(apply_norm(self.norm_out, h, zq)))


class Reference(nn.Module):
    def __init__(self, cfg: TamingConfig):
        super().__init__()
        self.cfg = cfg
        self.encoder, self.decoder = Encoder(cfg), Decoder(cfg)
        self.quant_conv = nn.Conv2d(cfg.z_channels, cfg.embed_dim, 1)
        self.post_quant_conv = nn.Conv2d(cfg.embed_dim, cfg.z_channels, 1)
        self.quantize = Level()
        self.quantize.embedding = nn.Embedding(cfg.n_embed, cfg.embed_dim)

    def encode(self, x):
        z = self.quant_conv(self.encoder(x)).permute(0, 2, 3, 1)
        e = self.quantize.embedding.weight
        distances = z.square().sum(-1, keepdim=True) + e.square().sum(-1) - 2 * z @ e.T
        return distances.argmin(-1)

    def decode(self, codes):
        quant = self.quantize.embedding(codes).permute(0, 3, 1, 2)
        return self.decoder(self.post_quant_conv(quant), quant if self.cfg.spatial_norm else None)


def randomize(model: nn.Module, seed: int) -> nn.Module:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=gen, dtype=p.dtype) * 0.3)
    return model


TINY_MOVQ = TamingConfig(
    ch=32,
    ch_mult=(1, 2, 2),
    num_res_blocks=1,
    attn_resolutions=(8,),
    resolution=32,
    z_channels=4,
    embed_dim=4,
    n_embed=64,
    spatial_norm=True,
)
TINY_V1 = TamingConfig(
    ch=32,
    ch_mult=(1, 1, 2),
    num_res_blocks=2,
    attn_resolutions=(),
    resolution=32,
    z_channels=8,
    embed_dim=8,
    n_embed=32,
    spatial_norm=False,
)


# ----------------------------------------------------------------------------------------------------------
# Full-size key lists and shapes, both releases, both directions.


@pytest.mark.parametrize("config", [MOVQGAN["270M"], CHAMELEON_VQGAN], ids=["movqgan-270M", "chameleon"])
def test_full_size_key_map_matches_release_layout(config):
    with torch.device("meta"):
        reference = Reference(config)
    tokenizer = tokenizer_from_taming(config, "round", "x")
    ours = {k: tuple(v.shape) for k, v in to_release(tokenizer.vq).items()}  # diffusers -> release
    theirs = {k: tuple(v.shape) for k, v in reference.state_dict().items()}
    assert ours == theirs
    back = from_release(tokenizer.vq, reference.state_dict(), "ref")  # release -> diffusers
    assert {k: tuple(v.shape) for k, v in back.items()} == {
        k: tuple(v.shape) for k, v in tokenizer.vq.state_dict().items()
    }
    assert sum(v.numel() for v in back.values()) == sum(p.numel() for p in reference.parameters())


def test_full_size_parameter_counts():
    counts = {}
    for name, config in (("movqgan", MOVQGAN["270M"]), ("chameleon", CHAMELEON_VQGAN)):
        counts[name] = sum(p.numel() for p in tokenizer_from_taming(config, "round", "x").vq.parameters())
    assert counts["movqgan"] == 270_669_103  # 270.67 M, as the ecosystem study counts MoVQGAN-270M
    assert tokenizer_from_taming(MOVQGAN["270M"], "round", "x").factor == 8
    assert tokenizer_from_taming(CHAMELEON_VQGAN, "round", "x").factor == 16


def test_release_name_examples():
    tokenizer = tokenizer_from_taming(MOVQGAN["270M"], "round", "x")
    names = release_names(tokenizer.vq)
    assert (
        names["decoder.up_blocks.0.attentions.2.spatial_norm.conv_y.weight"]
        == "decoder.up.3.attn.2.norm.conv_y.weight"
    )
    assert (
        names["decoder.up_blocks.3.resnets.0.conv_shortcut.bias"] == "decoder.up.0.block.0.nin_shortcut.bias"
    )
    assert (
        names["encoder.down_blocks.3.attentions.1.to_out.0.weight"] == "encoder.down.3.attn.1.proj_out.weight"
    )
    assert (
        names["decoder.mid_block.resnets.1.norm2.norm_layer.weight"]
        == "decoder.mid.block_2.norm2.norm_layer.weight"
    )
    assert (
        names["encoder.down_blocks.2.downsamplers.0.conv.weight"] == "encoder.down.2.downsample.conv.weight"
    )
    assert names["decoder.conv_norm_out.conv_b.bias"] == "decoder.norm_out.conv_b.bias"


# ----------------------------------------------------------------------------------------------------------
# Numerical parity through files, fp64.


def _pixels(b: int, h: int, w: int, seed: int) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1


def test_movqgan_file_matches_reference_forward(tmp_path):
    reference = randomize(Reference(TINY_MOVQ).double(), seed=1)
    torch.save(reference.state_dict(), tmp_path / "movqgan_tiny.ckpt")  # flat, as released
    tokenizer = load_image_tokenizer(
        tmp_path / "movqgan_tiny.ckpt", dtype=torch.float64, release_config=TINY_MOVQ
    )
    pixels = _pixels(2, 24, 40, seed=2)  # grid 6 x 10: not square, not the nominal resolution
    codes = tokenizer.encode(pixels)
    assert codes.shape == (2, 6, 10)
    assert torch.equal(codes, reference.encode(pixels))
    assert len(codes.unique()) > 5
    torch.testing.assert_close(tokenizer.decode(codes), reference.decode(codes), rtol=0, atol=1e-10)
    assert tokenizer.rounding == "round"


def _write_chameleon_folder(folder: Path, config: TamingConfig, state: dict) -> Path:
    folder.mkdir()
    (folder / "vqgan.yaml").write_text(
        "model:\n  target: taming.models.vqgan.VQModel\n  params:\n"
        f"    embed_dim: {config.embed_dim}\n    n_embed: {config.n_embed}\n    ddconfig:\n"
        f"      double_z: false\n      z_channels: {config.z_channels}\n      resolution: {config.resolution}\n"
        f"      in_channels: 3\n      out_ch: 3\n      ch: {config.ch}\n      ch_mult: {list(config.ch_mult)}\n"
        f"      num_res_blocks: {config.num_res_blocks}\n      attn_resolutions: {list(config.attn_resolutions)}\n"
        "      dropout: 0.0\n    lossconfig:\n      target: taming.modules.losses.DummyLoss\n"
    )
    torch.save({"state_dict": state}, folder / "vqgan.ckpt")
    return folder


def test_chameleon_folder_matches_reference_forward(tmp_path):
    reference = randomize(Reference(TINY_V1).double(), seed=3)
    folder = _write_chameleon_folder(tmp_path / "tokenizer", TINY_V1, reference.state_dict())
    assert config_from_taming_yaml(folder / "vqgan.yaml") == TINY_V1
    tokenizer = load_image_tokenizer(folder, dtype=torch.float64)
    pixels = _pixels(3, 16, 48, seed=4)
    codes = tokenizer.encode(pixels)
    assert codes.shape == (3, 4, 12)
    assert torch.equal(codes, reference.encode(pixels))
    torch.testing.assert_close(tokenizer.decode(codes), reference.decode(codes), rtol=0, atol=1e-10)
    assert tokenizer.rounding == "truncate" and tokenizer.factor == 4


def test_chameleon_yaml_preset():
    # Meta's vqgan.yaml values (reference/lumina-mgpt-v1.md §2) give the preset.
    assert (
        CHAMELEON_VQGAN.factor == 16 and CHAMELEON_VQGAN.n_embed == 8192 and CHAMELEON_VQGAN.embed_dim == 256
    )


def test_v1_encoder_matches_transformers_chameleon_vqvae():
    transformers = pytest.importorskip("transformers")
    hf_config = transformers.ChameleonVQVAEConfig(
        embed_dim=8,
        num_embeddings=32,
        latent_channels=8,
        resolution=32,
        base_channels=32,
        channel_multiplier=[1, 2, 2],
        num_res_blocks=1,
        attn_resolutions=[8],
    )
    hf = randomize(
        transformers.models.chameleon.modeling_chameleon.ChameleonVQVAE(hf_config).double().eval(), 5
    )
    config = TamingConfig(
        ch=32,
        ch_mult=(1, 2, 2),
        num_res_blocks=1,
        attn_resolutions=(8,),
        resolution=32,
        z_channels=8,
        embed_dim=8,
        n_embed=32,
        spatial_norm=False,
    )
    reference = randomize(Reference(config).double(), seed=6)
    state = reference.state_dict()
    hf_state = hf.state_dict()
    assert set(hf_state) <= set(state)  # transformers' names are the release names (no decoder)
    state.update(hf_state)
    from lumina_mgpt.vq.loading import tokenizer_from_release

    tokenizer = tokenizer_from_release(config, state, "hf", "truncate", "v1").double()
    pixels = _pixels(2, 32, 16, seed=7)
    with torch.no_grad():
        hf_codes = hf.encode(pixels).image_tokens.view(2, 8, 4)
    assert torch.equal(tokenizer.encode(pixels), hf_codes)


def test_group_norm_names_match_diffusers_ldm_converter():
    from diffusers.loaders.single_file_utils import convert_ldm_vae_checkpoint

    reference = randomize(Reference(TINY_V1), seed=8)  # no level attention: the LDM converter's scope
    tokenizer = tokenizer_from_taming(TINY_V1, "truncate", "x")
    ours = from_release(tokenizer.vq, reference.state_dict(), "ref")
    theirs = convert_ldm_vae_checkpoint(reference.state_dict(), dict(tokenizer.vq.config))
    assert set(ours) - set(theirs) == {"quantize.embedding.weight"}  # the VAE converter has no codebook
    for k, v in theirs.items():
        assert torch.equal(ours[k], v), k


# ----------------------------------------------------------------------------------------------------------
# Bad files.


def test_renamed_or_extra_key_is_named(tmp_path):
    state = Reference(TINY_V1).state_dict()
    renamed = dict(state)
    renamed["encoder.down.0.block.0.norm_1.weight"] = renamed.pop("encoder.down.0.block.0.norm1.weight")
    folder = _write_chameleon_folder(tmp_path / "renamed", TINY_V1, renamed)
    with pytest.raises(
        LuminaError,
        match=r"missing 1 \[encoder\.down\.0\.block\.0\.norm1\.weight\], "
        r"unexpected 1 \[encoder\.down\.0\.block\.0\.norm_1\.weight\]",
    ):
        load_image_tokenizer(folder)
    extra = dict(state, **{"loss.discriminator.main.0.weight": torch.zeros(1)})
    folder = _write_chameleon_folder(tmp_path / "extra", TINY_V1, extra)
    with pytest.raises(LuminaError, match=r"missing 0 \[none\], unexpected 1 \[loss\.discriminator"):
        load_image_tokenizer(folder)
    bad_shape = dict(state, **{"quant_conv.bias": torch.zeros(3)})
    folder = _write_chameleon_folder(tmp_path / "shape", TINY_V1, bad_shape)
    with pytest.raises(LuminaError, match=r"shapes do not match.*quant_conv\.bias \[3\] != \[8\]"):
        load_image_tokenizer(folder)


def test_movqgan_file_with_wrong_keys_names_them(tmp_path):
    torch.save(
        {"state_dict": {"encoder.conv_in.weight": torch.zeros(256, 3, 3, 3), "foo": torch.zeros(1)}},
        tmp_path / "movqgan_270M.ckpt",
    )
    with pytest.raises(
        LuminaError, match=r"movqgan_270M\.ckpt: checkpoint keys do not match.*unexpected 1 \[foo\]"
    ):
        load_image_tokenizer(tmp_path / "movqgan_270M.ckpt")


class _Exploit:
    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_pickle_that_would_run_code_is_refused(tmp_path):
    marker = tmp_path / "pwned"
    torch.save(
        {"state_dict": {"w": torch.zeros(1)}, "payload": _Exploit(marker)}, tmp_path / "movqgan_270M.ckpt"
    )
    with pytest.raises(
        LuminaError, match=r"refused to unpickle: it would load posix.system, which could run code"
    ):
        load_image_tokenizer(tmp_path / "movqgan_270M.ckpt")
    assert not marker.exists()


def test_read_checkpoint_flat_or_nested_and_garbage(tmp_path):
    state = {"a": torch.ones(2)}
    torch.save(state, tmp_path / "flat.ckpt")
    torch.save({"state_dict": state, "global_step": 3}, tmp_path / "nested.ckpt")
    assert (
        read_checkpoint(tmp_path / "flat.ckpt").keys()
        == read_checkpoint(tmp_path / "nested.ckpt").keys()
        == {"a"}
    )
    (tmp_path / "junk.ckpt").write_bytes(b"not a checkpoint")
    with pytest.raises(LuminaError, match="not a readable PyTorch checkpoint"):
        read_checkpoint(tmp_path / "junk.ckpt")
    torch.save([1, 2], tmp_path / "list.ckpt")
    with pytest.raises(LuminaError, match="expected a state dict of tensors"):
        read_checkpoint(tmp_path / "list.ckpt")
