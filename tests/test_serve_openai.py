"""The official `openai` client against a real `lumina-mgpt serve` process: image generation with OpenAI's
extra fields, image edits (multipart, masks, streaming), chat with images (text content plus an `images`
field), and the 400s that misspelt fields and lenient sizes still get."""

import base64
import io

import httpx
import numpy as np
import openai
import pytest
from PIL import Image
from test_generate_helpers import image_replies_folder, one_thread
from test_serve_app import sse

from lumina_mgpt.pipeline import ChatRequest, LuminaMGPTPipeline
from lumina_mgpt.serve.launch import server_process
from lumina_mgpt.unirep import block_length


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_thread()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return image_replies_folder(tmp_path_factory.mktemp("openai") / "tiny-shapes")  # chat replies are images


@pytest.fixture(scope="module")
def pipe(folder):
    return LuminaMGPTPipeline.from_pretrained(folder)


@pytest.fixture(scope="module")
def url(folder):
    with server_process("--model", str(folder), "--no-ui", "--threads", "1", "--log-level", "warning") as url:
        yield url


@pytest.fixture(scope="module")
def client(url):
    return openai.OpenAI(base_url=f"{url}/v1", api_key="unused", max_retries=0, timeout=120)


def pixels(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))).convert("RGB"))


def png_bytes(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


SCENE = np.zeros((32, 32, 3), dtype=np.uint8)
SCENE[8:24, 8:24] = (230, 25, 75)


def test_generate_takes_openai_fields_and_gives_the_pipelines_image(client, pipe):
    result = client.images.generate(
        prompt="a red star",
        size="32x32",
        quality="hd",
        style="vivid",
        user="someone",
        moderation="low",
        background="opaque",
        extra_body={"seed": 5},
    )
    expected = pipe("a red star", 32, 32, seed=5, progress=False).images[0]
    assert np.array_equal(pixels(result.data[0].b64_json), np.asarray(expected))
    webp = client.images.generate(
        prompt="a red star",
        size="32x32",
        output_format="webp",
        output_compression=100,
        extra_body={"seed": 5},
    )
    assert Image.open(io.BytesIO(base64.b64decode(webp.data[0].b64_json))).format == "WEBP"
    assert webp.output_format == "webp"
    card = client.models.list().data[0].model_extra
    assert {"quality", "style", "moderation", "background", "user"} <= set(card["ignored_fields"])


@pytest.mark.parametrize(
    ("fields", "param"),
    [
        ({"extra_body": {"qualty": "hd"}}, "qualty"),
        ({"size": "١٢٨x١٢٨"}, "size"),  # Arabic-Indic digits
        ({"size": "128x128\n"}, "size"),
        ({"background": "transparent"}, "background"),
    ],
)
def test_misspelt_fields_and_lenient_sizes_get_a_400(client, fields, param):
    with pytest.raises(openai.BadRequestError) as error:
        client.images.generate(prompt="a red star", **fields)
    assert error.value.status_code == 400 and error.value.body["param"] == param


def test_edit_is_the_pipelines_editing_reply_and_a_mask_keeps_the_image(client, pipe):
    result = client.images.edit(
        image=("scene.png", png_bytes(SCENE), "image/png"),
        prompt="Add a blue star.",
        n=2,
        size="32x32",
        extra_body={"seed": 1},
    )
    assert [item.model_extra["seed"] for item in result.data] == [1, 2] and result.size == "32x32"
    prepared = pipe.prepare_chat(
        [{"role": "user", "content": "Add a blue star. <|image|>", "images": [SCENE]}], 32, 32
    )
    start = [pipe.layout.image_start_id]
    opened = ChatRequest(prepared.ids + start, 32, 32, start, with_images=True)
    expected = pipe.chat_many(
        [opened, opened], seed=[1, 2], max_new_tokens=block_length(32, 32, pipe.layout) - 1
    )
    for item, reply in zip(result.data, expected, strict=True):
        assert np.array_equal(pixels(item.b64_json), np.asarray(reply.images[0]))
    # a mask opaque over the upper half keeps it; the lower half is the edit
    mask = np.zeros((32, 32, 4), dtype=np.uint8)
    mask[:16, :, 3] = 255
    masked = client.images.edit(
        image=("scene.png", png_bytes(SCENE), "image/png"),
        mask=("mask.png", png_bytes(mask), "image/png"),
        prompt="Add a blue star.",
        size="32x32",
        extra_body={"seed": 1},
    )
    got = pixels(masked.data[0].b64_json)
    assert np.array_equal(got[:16], SCENE[:16])
    assert np.array_equal(got[16:], np.asarray(expected[0].images[0])[16:])


def test_edit_refuses_misspelt_fields_bad_sizes_and_bad_files(client):
    image = ("scene.png", png_bytes(SCENE), "image/png")
    cases = [
        ({"extra_body": {"sead": 1}}, "sead"),
        ({"size": "３２x３２"}, "size"),  # full-width digits
        ({"size": "32x32 "}, "size"),
        ({"mask": ("mask.png", png_bytes(SCENE), "image/png")}, "mask"),  # no alpha channel
    ]
    for fields, param in cases:
        with pytest.raises(openai.BadRequestError) as error:
            client.images.edit(image=image, prompt="Add a blue star.", **fields)
        assert error.value.body["param"] == param, error.value.body
    with pytest.raises(openai.BadRequestError) as error:
        client.images.edit(image=("x.png", b"not a png", "image/png"), prompt="Add a blue star.")
    assert error.value.body["param"] == "image" and "readable image" in error.value.body["message"]


def test_streamed_edit_sends_progress_and_the_completed_images(url, client):
    files = {"image": ("scene.png", png_bytes(SCENE), "image/png")}
    form = {"prompt": "Add a blue star.", "size": "32x32", "n": "2", "seed": "1", "stream": "true"}
    reply = httpx.post(f"{url}/v1/images/edits", data=form, files=files, timeout=120)
    assert reply.status_code == 200, reply.text
    events = sse(reply.text)
    assert events[-1] == (None, "[DONE]")
    progress = [data for name, data in events if name == "image_generation.progress"]
    done = [data for name, data in events if name == "image_generation.completed"]
    assert progress and progress[-1]["progress"] == 1.0
    assert [event["image_index"] for event in done] == [0, 1] and [event["seed"] for event in done] == [1, 2]
    plain = client.images.edit(
        image=files["image"], prompt="Add a blue star.", n=2, size="32x32", extra_body={"seed": 1}
    )
    assert [event["b64_json"] for event in done] == [item.b64_json for item in plain.data]


def test_chat_with_an_image_gets_text_content_and_an_images_field(client, pipe):
    length = block_length(32, 32, pipe.layout)
    image_url = "data:image/png;base64," + base64.b64encode(png_bytes(SCENE)).decode()
    question = {
        "role": "user",
        "content": [
            {"type": "text", "text": "Describe the image. "},
            {"type": "image_url", "image_url": {"url": image_url}},
        ],
    }
    reply = client.chat.completions.create(
        model="tiny-shapes", messages=[question], max_tokens=length, seed=1, extra_body={"size": "32x32"}
    )
    message = reply.choices[0].message
    assert isinstance(message.content, str) and "<|image|>" not in message.content
    images = message.model_extra["images"]
    assert images and all(item["image_url"]["url"].startswith("data:image/png;base64,") for item in images)
    assert pixels(images[0]["image_url"]["url"].split(",", 1)[1]).shape == (32, 32, 3)
    marked = client.chat.completions.create(
        model="tiny-shapes",
        messages=[question],
        max_tokens=length,
        seed=1,
        extra_body={"size": "32x32", "image_markdown": True},
    )
    assert marked.choices[0].message.content.startswith(f"![image 1]({images[0]['image_url']['url']})")
    # the reply goes back as history, images field included
    history = [question, message.model_dump(exclude_none=True), {"role": "user", "content": "Again."}]
    again = client.chat.completions.create(
        model="tiny-shapes", messages=history, max_tokens=1, extra_body={"size": "32x32"}
    )
    assert isinstance(again.choices[0].message.content, str)
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="tiny-shapes", messages=[question], extra_body={"sise": "32x32"})
