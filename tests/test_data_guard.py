"""The image-tokenizer guard rail of pretokenize and finetune: the shipped shapes tokenizer on pictures that
are not shapes-world scenes is refused in one line naming the figures and the fix; --force goes on."""

import json

import numpy as np
from PIL import Image
from train_fixtures import coloured_pictures, one_thread  # noqa: F401 (one_thread: a fixture)
from typer.testing import CliRunner

from lumina_mgpt.cli import app
from lumina_mgpt.data.guard import MARGIN_DB, reference_psnr
from lumina_mgpt.vq import SHAPES_TOKENIZER
from lumina_mgpt.world.render import render
from lumina_mgpt.world.scene import sample_scene

OWN = f"{reference_psnr(SHAPES_TOKENIZER):.1f}"  # the figure of the shipped tokenizer's training.json
REFUSED = (
    r"error: the image tokenizer {vq} reconstructs these images at (\d+\.\d) dB PSNR, far below the {own} dB "
    r"it reaches on its own training data: a model trained on its codes would draw noise\. Train one on your "
    r"images \(lumina-mgpt train-vq --images DIR --out VQ, then --image-tokenizer VQ\), or pass --force\n"
)


def test_the_shapes_tokenizer_on_other_pictures_is_refused_and_force_goes_on(tmp_path):
    import re

    records = coloured_pictures(tmp_path / "pictures", n=6)
    command = ["pretokenize", str(records), "--out", str(tmp_path / "shards"), "--area", "64"]
    result = CliRunner().invoke(app, command)
    assert result.exit_code == 2
    match = re.fullmatch(
        REFUSED.format(vq=re.escape(str(SHAPES_TOKENIZER.parent)), own=re.escape(OWN)), result.output
    )
    assert match, result.output
    assert float(match.group(1)) < reference_psnr(SHAPES_TOKENIZER) - MARGIN_DB
    assert not (tmp_path / "shards").exists()

    result = CliRunner().invoke(app, [*command, "--force"])
    assert result.exit_code == 0, result.output
    assert (
        f"{match.group(1)} dB PSNR on 6 sampled images ({OWN} dB on its own data) -- below" in result.output
    )
    assert len(list((tmp_path / "shards").glob("shard-*.safetensors"))) == 1

    result = CliRunner().invoke(
        app, ["finetune", str(records), "--out", str(tmp_path / "run"), "--area", "64"]
    )
    assert result.exit_code == 2 and f"far below the {OWN} dB" in result.output and "--force" in result.output
    assert (
        not (tmp_path / "run" / "config.yaml").exists() and not (tmp_path / "run" / "data" / "train").exists()
    )


def test_shapes_world_scenes_pass_the_check(tmp_path):
    rng = np.random.default_rng(0)
    lines = []
    for i in range(4):
        Image.fromarray(render(sample_scene(rng, 64, 64))).save(tmp_path / f"{i}.png")
        lines.append(json.dumps({"image": f"{i}.png", "caption": "a scene"}))
    (tmp_path / "data.jsonl").write_text("\n".join(lines) + "\n")
    result = CliRunner().invoke(
        app, ["pretokenize", str(tmp_path / "data.jsonl"), "--out", str(tmp_path / "shards"), "--area", "64"]
    )
    assert result.exit_code == 0, result.output
    figure = float(result.output.split("image tokenizer: ")[1].split(" dB")[0])
    assert figure > reference_psnr(SHAPES_TOKENIZER) - MARGIN_DB
