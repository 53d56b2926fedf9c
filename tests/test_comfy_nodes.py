"""The ComfyUI nodes called as ComfyUI calls them (INPUT_TYPES defaults, FUNCTION by name, keyword inputs),
without ComfyUI: IMAGE tensors [B, H, W, C] float 0..1, and the pipeline's own images for the same seed."""

import json
import tomllib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_generate_helpers import one_thread, ours_folder

from lumina_mgpt.comfy import NODE_CLASS_MAPPINGS, NODE_DISPLAY_NAME_MAPPINGS
from lumina_mgpt.comfy.nodes import from_comfy, to_comfy
from lumina_mgpt.errors import LuminaError
from lumina_mgpt.pipeline import LuminaMGPTPipeline


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_thread()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return ours_folder(tmp_path_factory.mktemp("comfy") / "model")


def call(name: str, **inputs):
    """Run node `name` as ComfyUI does: defaults of its INPUT_TYPES, overridden by `inputs`."""
    node = NODE_CLASS_MAPPINGS[name]
    spec = node.INPUT_TYPES()
    values = {key: options[1]["default"] for key, options in spec["required"].items() if len(options) > 1}
    values |= inputs
    assert set(values) <= set(spec["required"]) | set(spec.get("optional", {}))
    outputs = getattr(node(), node.FUNCTION)(**values)
    assert isinstance(outputs, tuple) and len(outputs) == len(node.RETURN_TYPES) == len(node.RETURN_NAMES)
    return outputs


def check_image(tensor: torch.Tensor, shape: tuple[int, ...]) -> None:
    assert tensor.dtype == torch.float32 and tuple(tensor.shape) == shape
    assert tensor.min() >= 0 and tensor.max() <= 1


def test_nodes_are_registered_for_comfyui():
    assert (
        set(NODE_CLASS_MAPPINGS)
        == set(NODE_DISPLAY_NAME_MAPPINGS)
        == {
            "LoadLuminaMGPT",
            "LuminaTextToImage",
            "LuminaOmniTask",
        }
    )
    project = tomllib.loads((Path(__file__).parents[1] / "pyproject.toml").read_text())
    assert project["project"]["entry-points"]["comfyui.custom_nodes"] == {"lumina_mgpt": "lumina_mgpt.comfy"}
    for node in NODE_CLASS_MAPPINGS.values():
        assert callable(getattr(node, node.FUNCTION)) and node.CATEGORY == "Lumina-mGPT"
        for options in node.INPUT_TYPES()["required"].values():
            kind = options[0]
            assert isinstance(kind, list) or kind in {"STRING", "INT", "FLOAT", "IMAGE", "LUMINA_MGPT"}
            if isinstance(kind, list):
                assert options[1]["default"] in kind


def test_text_to_image_is_the_pipelines_image_for_the_seed(folder):
    (pipe,) = call("LoadLuminaMGPT", model=str(folder), device="cpu")
    (images,) = call(
        "LuminaTextToImage", model=pipe, prompt="a red star", width=64, height=32, batch_size=2, seed=7
    )
    check_image(images, (2, 32, 64, 3))
    expected = LuminaMGPTPipeline.from_pretrained(folder)("a red star", 64, 32, 2, seed=7, progress=False)
    for got, image in zip(from_comfy(images), expected.images, strict=True):
        assert np.array_equal(np.asarray(got), np.asarray(image))
    (guided,) = call(
        "LuminaTextToImage", model=pipe, prompt="a red star", width=32, height=32, cfg=1.0, seed=7
    )
    plain = pipe("a red star", 32, 32, cfg_scale=1.0, seed=7, progress=False).images[0]
    assert np.array_equal(np.asarray(from_comfy(guided)[0]), np.asarray(plain))


def test_omni_task_takes_an_image_and_gives_image_and_text(folder):
    (pipe,) = call("LoadLuminaMGPT", model=str(folder), device="cpu", dtype="float32")
    scene = np.full((1, 32, 32, 4), 0.5, dtype=np.float32)  # RGBA in, as some loaders give
    scene[0, 8:20, 8:20, :3] = (0.9, 0.1, 0.3)
    images, text = call(
        "LuminaOmniTask",
        model=pipe,
        task="segmentation",
        image=torch.from_numpy(scene),
        width=32,
        height=32,
        seed=3,
        max_new_tokens=40,
    )
    expected = pipe.chat(
        [
            {
                "role": "user",
                "content": "Semantic segmentation. <|image|>",
                "images": from_comfy(torch.from_numpy(scene)),
            }
        ],
        32,
        32,
        seed=3,
        max_new_tokens=40,
    )
    assert text == expected.text
    drawn = expected.images or [Image.new("RGB", (32, 32))]
    check_image(images, (len(drawn), 32, 32, 3))
    assert torch.equal(images, to_comfy(drawn))
    with pytest.raises(LuminaError, match="needs an image"):
        call("LuminaOmniTask", model=pipe, task="captioning")


def test_image_tensors_round_trip():
    pixels = np.random.default_rng(0).integers(0, 256, (2, 16, 24, 3), dtype=np.uint8)
    tensor = to_comfy([Image.fromarray(p) for p in pixels])
    check_image(tensor, (2, 16, 24, 3))
    assert np.array_equal(np.stack([np.asarray(i) for i in from_comfy(tensor)]), pixels)


def test_the_readme_workflow_runs_on_the_nodes(folder):
    text = (Path(__file__).parents[1] / "README.md").read_text()
    section = text[text.index("### ComfyUI") :]
    workflow = json.loads(
        section[section.index("```json") + 7 : section.index("```", section.index("```json") + 7)]
    )
    outputs = {}
    for key, node in workflow.items():  # listed in dependency order
        if node["class_type"] not in NODE_CLASS_MAPPINGS:
            assert node["class_type"] == "SaveImage"  # ComfyUI's own
            continue
        inputs = {
            name: outputs[value[0]][value[1]] if isinstance(value, list) else value
            for name, value in node["inputs"].items()
        }
        if node["class_type"] == "LoadLuminaMGPT":
            inputs |= {"model": str(folder), "device": "cpu"}  # the tiny model instead of the shipped one
        outputs[key] = call(node["class_type"], **inputs)
    check_image(outputs["2"][0], (1, 128, 128, 3))
    assert isinstance(outputs["3"][1], str) and outputs["3"][0].shape[0] >= 1
