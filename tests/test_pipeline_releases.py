"""The pipeline on tiny models in the releases' own file layouts: v1 (HF folder + `text_tokenizer.json` with
IMGIMG names + Chameleon VQGAN folder) and v2 (vocabulary of 171,385 with the release ids + a MoVQ checkpoint):
text-to-image, an omni task, and v2's dual-panel pair and image-to-image."""

import numpy as np
import pytest
import torch
from PIL import Image
from test_generate_helpers import favour_token, one_thread, v1_folders, v2_folders

from lumina_mgpt.generate.tasks import task_message
from lumina_mgpt.pipeline import LuminaMGPTPipeline
from lumina_mgpt.unirep import decode_image_block, find_image_blocks


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_thread()


@pytest.fixture(scope="module")
def v1_files(tmp_path_factory):
    return v1_folders(tmp_path_factory.mktemp("v1"))


@pytest.fixture(scope="module")
def v2_files(tmp_path_factory):
    return v2_folders(tmp_path_factory.mktemp("v2"))


def load(files) -> LuminaMGPTPipeline:
    model, tokenizer, vq = files
    return LuminaMGPTPipeline.from_pretrained(model, text_tokenizer=tokenizer, image_tokenizer=vq)


def picture(width: int, height: int) -> np.ndarray:
    image = np.full((height, width, 3), 128, dtype=np.uint8)
    image[4:20, 8:30] = (220, 40, 40)
    return image


def test_v1_text_to_image_and_an_omni_task(v1_files):
    pipe = load(v1_files)
    assert (
        pipe.layout.name == "v1"
        and pipe.layout.latent_factor == 16
        and pipe.image_tokenizer.rounding == "truncate"
    )
    out = pipe("a red star", 64, 32, num_images_per_prompt=2, seed=0, top_k=5, progress=False)
    assert [image.size for image in out.images] == [(64, 32)] * 2
    assert decode_image_block(out.tokens[0], pipe.layout).shape == (2, 4)  # factor 16
    assert out.settings["cfg_scale"] == 4.0  # the v1 t2i preset
    favour_token(pipe.transformer, pipe.layout.image_start_id)
    content = task_message("depth", "", 64, 64)
    request = pipe.prepare_chat([{"role": "user", "content": content, "images": [picture(64, 64)]}], 64, 64)
    assert request.ids[0] == 0 and request.ids[-1] == pipe.layout.turn_sep_id  # BOS 0, open assistant turn
    reply = pipe.chat(
        [{"role": "user", "content": content, "images": [picture(64, 64)]}],
        64,
        64,
        seed=1,
        max_new_tokens=4 * 5 + 4,
    )
    assert reply.settings["cfg_scale"] == 1.0 and reply.settings["image"]["top_k"] == 200  # v1 omni preset
    assert [image.size for image in reply.images] == [(64, 64)]


def test_v2_text_to_image_pair_and_image_to_image(v2_files):
    pipe = load(v2_files)
    layout = pipe.layout
    assert layout.name == "v2" and layout.stop_ids == (151666,) and layout.bos_id == 151643
    out = pipe("a red star", 32, 32, seed=0, top_k=64, progress=False)
    assert out.images[0].size == (32, 32) and out.settings["cfg_scale"] == 4.0
    assert int(out.tokens[0][-1]) == layout.image_end_id

    favour_token(pipe.transformer, layout.image_start_id)
    content = task_message("pair", "a red star", 32, 64, map_name="edge map")
    reply = pipe.chat([{"role": "user", "content": content}], 32, 64, top_k=64, seed=1)
    assert [image.size for image in reply.images] == [(32, 64)]
    assert reply.tokens[-1] == layout.image_end_id  # v2 stops at the image end

    content = task_message("i2i", "a red star", 32, 64, map_name="edge map")
    reply = pipe.chat([{"role": "user", "content": content}], top_k=64, seed=2, image_prefix=picture(32, 32))
    assert [image.size for image in reply.images] == [(32, 64)]
    start, end = find_image_blocks(reply.tokens, layout)[0]
    codes = decode_image_block(reply.tokens[start:end], layout)
    assert torch.equal(codes[:4], pipe.image_tokenizer.encode_image(Image.fromarray(picture(32, 32))))
