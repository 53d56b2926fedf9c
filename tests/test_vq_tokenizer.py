"""ImageTokenizer API: shapes, batching, errors, pixel conventions, buckets, our folder format, hub loading."""

import json
import random

import numpy as np
import pytest
import torch
from PIL import Image

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.unirep import buckets, nearest_bucket
from lumina_mgpt.vq import (
    ImageTokenizer,
    fit_to_bucket,
    load_image_tokenizer,
    pil_to_pixels,
    pixels_to_uint8,
    save_image_tokenizer,
    to_rgb,
)
from lumina_mgpt.vq.train import ModelConfig

TINY = ModelConfig(block_out_channels=(32, 32, 32), codebook_size=64, code_dim=4).vqmodel_kwargs()  # f4


@pytest.fixture(scope="module")
def tokenizer() -> ImageTokenizer:
    torch.manual_seed(0)
    tok = ImageTokenizer.from_config(TINY, name="tiny").double().eval()
    with torch.no_grad():  # spread the codebook so that random inputs use many codes
        tok.codebook.normal_(0, 0.5)
    return tok


def _pixels(b: int, h: int, w: int, seed: int) -> torch.Tensor:
    return torch.rand(b, 3, h, w, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * 2 - 1


def test_shapes_and_batching_equal_per_image(tokenizer):
    assert tokenizer.factor == 4 and tokenizer.codebook_size == 64
    pixels = _pixels(3, 12, 20, seed=1)
    codes = tokenizer.encode(pixels)
    assert codes.shape == (3, 3, 5) and codes.dtype == torch.long
    assert len(codes.unique()) > 5
    one_by_one = torch.cat([tokenizer.encode(pixels[i : i + 1]) for i in range(3)])
    assert torch.equal(codes, one_by_one)
    decoded = tokenizer.decode(codes)
    assert decoded.shape == (3, 3, 12, 20)
    torch.testing.assert_close(decoded, torch.cat([tokenizer.decode(codes[i : i + 1]) for i in range(3)]))


def test_decode_encode_round_trip_is_a_fixed_point_of_the_codebook(tokenizer):
    # encode(x) -> codes; decode(codes) is the image those codes stand for; its latent is the codebook lookup.
    codes = tokenizer.encode(_pixels(2, 8, 16, seed=2))
    latents = tokenizer.embed(codes)
    assert torch.equal(tokenizer.nearest_codes(latents), codes)


def test_nearest_codes_matches_brute_force_in_chunks(tokenizer, monkeypatch):
    latents = torch.randn(2, 4, 5, 7, dtype=torch.float64, generator=torch.Generator().manual_seed(3))
    brute = (
        torch.cdist(latents.permute(0, 2, 3, 1).reshape(-1, 4), tokenizer.codebook).argmin(1).view(2, 5, 7)
    )
    monkeypatch.setattr("lumina_mgpt.vq.tokenizer._DISTANCE_CHUNK", 64 * 3)  # 3 positions per chunk
    assert torch.equal(tokenizer.nearest_codes(latents), brute)


def test_bad_inputs_raise_clear_errors(tokenizer):
    with pytest.raises(LuminaError, match=r"image size 10x8 is not a positive multiple of 4 pixels"):
        tokenizer.encode(torch.zeros(1, 3, 8, 10))
    with pytest.raises(LuminaError, match=r"pixels must be \[B, 3, H, W\]"):
        tokenizer.encode(torch.zeros(3, 8, 8))
    with pytest.raises(LuminaError, match=r"codes must be integers in \[0, 64\)"):
        tokenizer.decode(torch.full((1, 2, 2), 64))
    with pytest.raises(LuminaError, match=r"codes must be \[B, h, w\]"):
        tokenizer.decode(torch.zeros(2, 2, dtype=torch.long))


def test_pil_helpers_follow_release_conventions():
    rgba = np.zeros((1, 3, 4), dtype=np.uint8)
    rgba[0, 0] = (255, 0, 0, 255)  # opaque red stays red
    rgba[0, 1] = (0, 0, 255, 0)  # fully transparent becomes white
    rgba[0, 2] = (0, 0, 0, 128)  # half-transparent black over white: 255 - round(255 * 128 / 255)
    pixels = pil_to_pixels(Image.fromarray(rgba, "RGBA"))
    back = pixels_to_uint8(pixels)[0, 0]
    assert back[0].tolist() == [255, 0, 0] and back[1].tolist() == [255, 255, 255]
    assert back[2].tolist() == [127, 127, 127]
    grey = pil_to_pixels(Image.new("L", (2, 1), 51))
    torch.testing.assert_close(grey, torch.full((1, 3, 1, 2), 51 / 255 * 2 - 1))
    # (y + 1) / 2 * 255 = 127.6 for y = 0.0007843...: v2 rounds to 128, v1 truncates to 127.
    y = torch.full((1, 3, 1, 1), 127.6 / 255 * 2 - 1)
    assert pixels_to_uint8(y, "round").item(0) == 128 and pixels_to_uint8(y, "truncate").item(0) == 127
    assert pixels_to_uint8(torch.full((1, 3, 1, 1), 3.0)).item(0) == 255  # clamped


@pytest.mark.parametrize(
    ("image", "expected"),
    [
        (Image.fromarray(np.array([[0, 128 * 257, 65535]], dtype=np.uint16)), [0, 128, 255]),  # I;16
        (Image.fromarray(np.array([[0, 25700, 65535]], dtype=np.int32)), [0, 100, 255]),  # I
        (Image.fromarray(np.array([[0.0, 0.5, 2.0]], dtype=np.float32)), [0, 128, 255]),  # F (clipped)
        (Image.new("L", (3, 1), 51), [51, 51, 51]),
    ],
)
def test_wide_grey_images_are_scaled_to_8_bits_not_clipped_to_white(image, expected):
    rgb = np.asarray(to_rgb(image))
    assert rgb.shape == (1, 3, 3) and rgb[0, :, 0].tolist() == expected and (rgb == rgb[..., :1]).all()


def test_to_image_uses_the_tokenizers_rounding(tokenizer):
    y = torch.full((3, 2, 2), 127.6 / 255 * 2 - 1)
    assert np.asarray(tokenizer.to_image(y))[0, 0, 0] == 128
    v1 = ImageTokenizer(tokenizer.vq, rounding="truncate")
    assert np.asarray(v1.to_image(y))[0, 0, 0] == 127
    assert len(tokenizer.to_image(y[None].repeat(2, 1, 1, 1))) == 2


def test_fit_to_bucket_picks_the_bucket_and_crops_the_centre():
    image = Image.new("RGB", (900, 300), (0, 0, 255))
    image.paste((255, 0, 0), (0, 0, 450, 300))  # left half red, right half blue
    fitted = fit_to_bucket(image, 256)
    assert fitted.size == nearest_bucket(900, 300, buckets(256))
    row = np.asarray(fitted)[fitted.height // 2]
    red = (row[:, 0] > 200) & (row[:, 2] < 50)
    middle = fitted.width // 2
    assert red[: middle - 2].all() and not red[middle + 2 :].any()  # the cut sits in the middle
    exact = Image.new("RGB", buckets(256)[0], (10, 20, 30))
    assert fit_to_bucket(exact, 256).tobytes() == exact.tobytes()  # already a bucket: untouched


def test_fit_to_bucket_random_crop_is_seeded_and_explicit():
    image = Image.fromarray(np.random.default_rng(0).integers(0, 255, (300, 1000, 3), dtype=np.uint8))
    a = fit_to_bucket(image, 128, crop="random", rng=random.Random(1))
    b = fit_to_bucket(image, 128, crop="random", rng=random.Random(1))
    assert a.tobytes() == b.tobytes() and a.size == nearest_bucket(1000, 300, buckets(128))
    with pytest.raises(LuminaError, match="needs an explicit rng"):
        fit_to_bucket(image, 128, crop="random")
    with pytest.raises(LuminaError, match="crop must be"):
        fit_to_bucket(image, 128, crop="middle")


def test_save_and_load_our_folder(tokenizer, tmp_path):
    folder = save_image_tokenizer(tokenizer, tmp_path / "vq")
    config = json.loads((folder / "config.json").read_text())
    assert config["format"] == "lumina-mgpt-image-tokenizer" and config["rounding"] == "round"
    assert config["vqmodel"]["norm_type"] == "spatial"
    loaded = load_image_tokenizer(folder, dtype=torch.float64)
    assert loaded.factor == 4 and loaded.name == "tiny" and not loaded.training
    for (k, a), (k2, b) in zip(
        tokenizer.vq.state_dict().items(), loaded.vq.state_dict().items(), strict=True
    ):
        assert k == k2 and torch.equal(a, b)
    pixels = _pixels(1, 8, 8, seed=4)
    assert torch.equal(loaded.encode(pixels), tokenizer.encode(pixels))


def test_our_folder_with_renamed_key_fails(tokenizer, tmp_path):
    import safetensors.torch

    folder = save_image_tokenizer(tokenizer, tmp_path / "vq")
    state = safetensors.torch.load_file(folder / "model.safetensors")
    state["post_quant_conv.weight_renamed"] = state.pop("post_quant_conv.weight")
    safetensors.torch.save_file(state, folder / "model.safetensors")
    with pytest.raises(LuminaError, match=r"missing 1 \[post_quant_conv\.weight\], unexpected 1"):
        load_image_tokenizer(folder)


def test_unknown_paths_fail_clearly(tmp_path):
    with pytest.raises(LuminaError, match="no image tokenizer here"):
        load_image_tokenizer(tmp_path)
    with pytest.raises(LuminaError, match="not a Hugging Face repo id"):
        load_image_tokenizer(tmp_path / "missing")


def test_hub_repo_id_offline(tokenizer, tmp_path, monkeypatch):
    from huggingface_hub import constants

    cache = tmp_path / "hub"
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(cache))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    with pytest.raises(
        LuminaError,
        match=r"^someone/nothing is not in the Hugging Face cache and the Hub cannot be reached",
    ):
        load_image_tokenizer("someone/nothing")
    commit = "0" * 40  # a cached snapshot, laid out as huggingface_hub stores it
    repo = cache / "models--someone--shapes-vq"
    save_image_tokenizer(tokenizer, repo / "snapshots" / commit / "vq")
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    loaded = load_image_tokenizer("someone/shapes-vq/vq", dtype=torch.float64)
    assert torch.equal(loaded.codebook, tokenizer.codebook)


# ---- PatchPaletteVQ (our shapes-world architecture) ---------------------------------------------------------

PALETTE = [[128, 128, 128], [220, 40, 40], [0, 0, 0], [255, 255, 255]]
PATCH = {
    "output_palette": PALETTE,
    "patch_size": 4,
    "encoder_hidden": 16,
    "vq_embed_dim": 4,
    "num_vq_embeddings": 32,
    "decoder_channels": 16,
    "decoder_blocks": 1,
    "upsample_channels": 8,
}


@pytest.fixture(scope="module")
def patch_tokenizer() -> ImageTokenizer:
    torch.manual_seed(0)
    tok = ImageTokenizer.from_config(PATCH, architecture="patch-palette", name="patch").double().eval()
    with torch.no_grad():
        tok.codebook.normal_(0, 0.3)
    return tok


def test_patch_encoder_codes_depend_only_on_their_patch(patch_tokenizer):
    assert patch_tokenizer.factor == 4 and patch_tokenizer.architecture == "patch-palette"
    pixels = _pixels(1, 12, 16, seed=5)
    changed = pixels.clone()
    changed[:, :, 4:8, 8:12] = -pixels[:, :, 4:8, 8:12]  # only the cell (1, 2)
    a = patch_tokenizer.vq.encode(pixels).latents
    b = patch_tokenizer.vq.encode(changed).latents
    differs = (a != b).any(1)[0]
    assert differs[1, 2] and differs.sum() == 1
    flat = torch.full((2, 3, 8, 8), 0.25, dtype=torch.float64)  # a flat image: one code everywhere
    assert patch_tokenizer.encode(flat).unique().numel() == 1


def test_patch_palette_decoder_paints_only_palette_colours(patch_tokenizer):
    vq = patch_tokenizer.vq
    codes = torch.randint(0, 32, (2, 3, 4), generator=torch.Generator().manual_seed(6))
    pixels = patch_tokenizer.decode(codes)
    assert pixels.shape == (2, 3, 12, 16)
    colours = {tuple(c) for c in pixels_to_uint8(pixels).reshape(-1, 3).tolist()}
    assert colours <= {tuple(c) for c in PALETTE}
    logits = torch.zeros(1, 4, 1, 2, dtype=torch.float64)
    logits[0, 1, 0, 0] = logits[0, 3, 0, 1] = 1.0  # red, then edge white
    assert pixels_to_uint8(vq.paint(logits))[0, 0].tolist() == [[220, 40, 40], [255, 255, 255]]
    near = torch.tensor([[130, 126, 129], [250, 250, 250], [3, 0, 2]], dtype=torch.float64) / 127.5 - 1
    assert vq.palette_index(near.T.reshape(1, 3, 1, 3)).tolist() == [[[0, 3, 2]]]


def test_patch_palette_drops_stray_colours_when_asked():
    from lumina_mgpt.vq.patch import PatchPaletteVQ

    logits = torch.zeros(2, 4, 4, 4)
    logits[:, 0] = 1.0  # background almost everywhere
    logits[0, 1, 0, :] = 2.0  # image 0: a red row of 4 pixels ...
    logits[0, 3, 2, 2], logits[0, 1, 2, 2] = 3.0, 2.5  # ... and one stray white pixel, red its second best
    logits[1, 2] = 2.0  # image 1: all black (its only colour is never dropped)
    keep = PatchPaletteVQ(PALETTE, patch_size=4, min_colour_pixels=1).paint(logits)
    tidy = PatchPaletteVQ(PALETTE, patch_size=4, min_colour_pixels=3).paint(logits)
    assert pixels_to_uint8(keep)[0, 2, 2].tolist() == [255, 255, 255]
    expected = np.full((2, 4, 4, 3), 128, np.uint8)
    expected[0, 0, :] = expected[0, 2, 2] = (220, 40, 40)
    expected[1] = 0
    assert np.array_equal(pixels_to_uint8(tidy), expected)


def test_patch_palette_folder_round_trip(patch_tokenizer, tmp_path):
    folder = save_image_tokenizer(patch_tokenizer, tmp_path / "vq")
    config = json.loads((folder / "config.json").read_text())
    assert config["architecture"] == "patch-palette" and config["vqmodel"]["output_palette"] == PALETTE
    loaded = load_image_tokenizer(folder, dtype=torch.float64)
    assert loaded.factor == 4 and loaded.architecture == "patch-palette"
    pixels = _pixels(2, 8, 12, seed=7)
    codes = patch_tokenizer.encode(pixels)
    assert torch.equal(loaded.encode(pixels), codes)
    assert torch.equal(loaded.decode(codes), patch_tokenizer.decode(codes))
    config["architecture"] = "wavelet"
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(LuminaError, match=r"bad tokenizer config .*unknown tokenizer architecture 'wavelet'"):
        load_image_tokenizer(folder)
    config["architecture"], config["vqmodel"]["patch_size"] = "patch-palette", 5
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(LuminaError, match="patch_size must be 4, 8 or 16, not 5"):
        load_image_tokenizer(folder)
