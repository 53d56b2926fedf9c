"""The shipped shapes-world tokenizer: held-out scenes and maps survive encode -> decode, with tidy codes.

200 held-out scenes per canvas: at 50 the 99 % target would allow no miss at all (one scene is 2 %).
"""

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from lumina_mgpt.vq import load_image_tokenizer
from lumina_mgpt.vq.evaluate import code_stability, held_out_scenes, reconstruct, same_objects
from lumina_mgpt.vq.loading import SHAPES_TOKENIZER
from lumina_mgpt.world.detect import detect
from lumina_mgpt.world.render import edge_map, render, segmentation_map
from lumina_mgpt.world.score import map_score, scene_masks

SCENES_PER_CANVAS = 200
TEST_SEED = 20_240_917  # not the training stream (seeded by step) nor the training-time evaluation seed
CANVASES = [(128, 128), (160, 96), (96, 160)]
TARGET = 0.99  # issue 4: the detector finds the same objects on >= 99% of held-out scenes
# Measured on 200 scenes per canvas, the decoder retrained on panels (configs/vq/shapes-patch-panels.yaml): this
# seed 99.0% / 99.5% / 100%, the training-time eval seed 99.5% / 98.5% / 99.5% (the decoder before it: 99.5% /
# 100% / 100% and 100% / 98.5% / 99.5%); pooled over both, >= 99.0% on every canvas.
MAP_FLOOR = {"segmentation map": 0.95, "edge map": 0.95}  # mean mIoU / edge F1 (WORLD.md passes at 0.75)


@pytest.fixture(scope="module")
def tokenizer():
    if not (SHAPES_TOKENIZER / "model.safetensors").exists():
        pytest.fail(f"the shipped tokenizer is missing: {SHAPES_TOKENIZER}")
    return load_image_tokenizer(SHAPES_TOKENIZER)


def test_shipped_tokenizer_is_a_small_f8_patch_palette_vq(tokenizer):
    assert tokenizer.factor == 8 and tokenizer.codebook_size == 1024 and tokenizer.rounding == "round"
    assert tokenizer.architecture == "patch-palette"
    assert (SHAPES_TOKENIZER / "model.safetensors").stat().st_size <= 5 * 1024 * 1024


@pytest.mark.parametrize("canvas", CANVASES, ids=lambda c: f"{c[0]}x{c[1]}")
def test_detector_finds_the_same_objects_after_reconstruction(tokenizer, canvas):
    width, height = canvas
    scenes = held_out_scenes(width, height, SCENES_PER_CANVAS, TEST_SEED)
    originals = np.stack([render(s) for s in scenes])
    with torch.inference_mode():
        recon, _ = reconstruct(tokenizer, originals, batch_size=50)
    agreement = np.mean([same_objects(s, detect(r)) for s, r in zip(scenes, recon, strict=True)])
    assert agreement >= TARGET, f"{width}x{height}: the detector agrees on only {agreement:.0%}"


@pytest.mark.parametrize("kind", list(MAP_FLOOR))
def test_maps_survive_reconstruction(tokenizer, kind):
    draw = segmentation_map if kind == "segmentation map" else edge_map
    for width, height in CANVASES:
        scenes = held_out_scenes(width, height, SCENES_PER_CANVAS, TEST_SEED)
        with torch.inference_mode():
            recon, _ = reconstruct(tokenizer, np.stack([draw(s) for s in scenes]), batch_size=50)
        score = np.mean([map_score(r, kind, scene_masks(s)) for s, r in zip(scenes, recon, strict=True)])
        assert score >= MAP_FLOOR[kind], f"{width}x{height}: mean {kind} score {score:.3f}"


def test_codes_are_stable_and_background_has_one_code(tokenizer):
    scenes = held_out_scenes(128, 128, 16, TEST_SEED + 1)
    with torch.inference_mode():
        same, background = code_stability(tokenizer, np.stack([render(s) for s in scenes]))
    assert background == 1  # every pure-grey cell, in every image, is the same code
    assert same >= 0.98, f"re-encoding a reconstruction keeps only {same:.1%} of its codes"


def test_reconstruct_cli(tokenizer, tmp_path):
    import typer

    from lumina_mgpt.vq.cli import reconstruct

    app = typer.Typer()
    app.command()(reconstruct)
    scene = held_out_scenes(160, 96, 1, TEST_SEED + 2)[0]
    Image.fromarray(render(scene)).save(tmp_path / "in.png")
    result = CliRunner().invoke(app, [str(tmp_path / "in.png"), str(tmp_path / "out.png")])
    assert result.exit_code == 0, result.output
    assert "160x96 px -> grid 12x20 (240 codes)" in result.output
    out = np.asarray(Image.open(tmp_path / "out.png").convert("RGB"))
    expected = tokenizer.decode_image(tokenizer.encode_image(Image.open(tmp_path / "in.png")))
    assert out.shape == (96, 160, 3) and np.array_equal(out, np.asarray(expected))


def test_reconstruct_refuses_bad_outputs_before_any_work_and_never_overwrites_its_input(tmp_path):
    from lumina_mgpt.cli import app

    source = tmp_path / "in.png"
    Image.fromarray(render(held_out_scenes(64, 64, 1, TEST_SEED)[0])).save(source)
    original = source.read_bytes()
    (tmp_path / "folder").mkdir()
    (tmp_path / "file").write_text("")
    cases = {
        str(source): "is the input image",
        str(tmp_path / "." / "in.png"): "is the input image",
        str(tmp_path / "folder"): "is a folder; give a file name",
        str(tmp_path / "out.xyz"): "no image format has the suffix '.xyz'",
        str(tmp_path / "missing" / "out.png"): "is not an existing folder",
        str(tmp_path / "file" / "out.png"): "is not an existing folder",
    }
    for output, message in cases.items():
        result = CliRunner().invoke(app, ["reconstruct", str(source), output])
        assert result.exit_code == 2 and message in result.output, (output, result.output)
    assert source.read_bytes() == original
    wide = tmp_path / "wide.png"
    Image.new("RGB", (2049, 2048)).save(wide)
    result = CliRunner().invoke(app, ["reconstruct", str(wide), str(tmp_path / "w.png")])
    assert result.exit_code == 2 and "over 2048² pixels; pass --area" in result.output


def test_reconstruct_takes_a_model_folder_for_its_image_tokenizer(tmp_path):
    from lumina_mgpt.cli import app
    from lumina_mgpt.vq.loading import SHAPES_TOKENIZER

    Image.fromarray(render(held_out_scenes(64, 64, 1, TEST_SEED)[0])).save(tmp_path / "in.png")
    for model, name in [(SHAPES_TOKENIZER.parent, "a.png"), (SHAPES_TOKENIZER, "b.png")]:
        args = ["reconstruct", str(tmp_path / "in.png"), str(tmp_path / name), "--model", str(model)]
        assert CliRunner().invoke(app, args).exit_code == 0
    assert (tmp_path / "a.png").read_bytes() == (tmp_path / "b.png").read_bytes()
