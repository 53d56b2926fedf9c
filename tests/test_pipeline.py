"""LuminaMGPTPipeline on a tiny model folder of our layout: loading, text-to-image, size checks, previews, and
one chat per task kind (editing, dense prediction, condition -> image, QA, several images, dual-panel pair and
image-to-image with a given upper half)."""

import re

import numpy as np
import pytest
import torch
from PIL import Image
from test_generate_helpers import favour_token, one_thread, ours_folder

import lumina_mgpt.hub as hub
from lumina_mgpt.errors import LuminaError
from lumina_mgpt.generate.tasks import task_message
from lumina_mgpt.pipeline import LuminaMGPTPipeline
from lumina_mgpt.text import serialize
from lumina_mgpt.unirep import (
    check_size,
    decode_image_block,
    encode_image_block,
    find_image_blocks,
    t2i_prompt,
)


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_thread()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return ours_folder(tmp_path_factory.mktemp("ours"))


@pytest.fixture(scope="module")
def pipe(folder):
    return LuminaMGPTPipeline.from_pretrained(folder)


def scene(width: int, height: int, seed: int = 0) -> np.ndarray:
    """A flat-coloured test image: grey with two coloured boxes."""
    image = np.full((height, width, 3), 128, dtype=np.uint8)
    rng = np.random.default_rng(seed)
    for colour in ((220, 40, 40), (40, 80, 220)):
        x, y = rng.integers(0, width - 16), rng.integers(0, height - 16)
        image[y : y + 12, x : x + 12] = colour
    return image


def test_from_pretrained_reads_the_family_and_preset(pipe):
    assert pipe.layout.name == "ours" and pipe.preset.canvas == (128, 128)
    assert pipe.image_tokenizer.factor == pipe.layout.latent_factor == 8


def test_sampling_json_sets_the_default_speculative_mode_and_calls_can_turn_it_off(pipe, folder, tmp_path):
    import shutil

    fast = tmp_path / "fast"
    shutil.copytree(folder, fast)
    (fast / "sampling.json").write_text('{"speculative": "exact"}')
    fast_pipe = LuminaMGPTPipeline.from_pretrained(fast)
    assert fast_pipe.preset.t2i.speculative == "exact" and pipe.preset.t2i.speculative == "off"
    options = dict(width=64, height=32, seed=4, progress=False)
    default = fast_pipe("a red star", **options)
    explicit = pipe("a red star", speculative="exact", **options)
    assert default.settings["speculative"]["mode"] == "exact"
    assert [b.tolist() for b in default.tokens] == [b.tolist() for b in explicit.tokens]
    off = fast_pipe("a red star", speculative="off", **options)
    assert off.settings["speculative"] is None
    assert [b.tolist() for b in off.tokens] == [b.tolist() for b in pipe("a red star", **options).tokens]
    (fast / "sampling.json").write_text('{"speculative": "fastest"}')
    with pytest.raises(LuminaError, match=r"sampling\.json is not a valid sampling preset.*fastest"):
        LuminaMGPTPipeline.from_pretrained(fast)


def test_a_chat_that_holds_an_image_samples_with_the_presets_chat_with_images(folder, tmp_path):
    """`sampling.json`'s "chat_with_images" section (on top of "chat") is the default of a chat that holds an
    image or an image prefix; text-only chats keep "chat"'s. In one `chat_many` call each chat gets the reply
    it gets alone with its own config; options a call gives apply to both kinds."""
    import shutil

    greedy = tmp_path / "greedy"
    shutil.copytree(folder, greedy)
    (greedy / "sampling.json").write_text('{"chat": {"top_k": 5}, "chat_with_images": {"temperature": 0}}')
    pipe = LuminaMGPTPipeline.from_pretrained(greedy)
    assert (pipe.preset.chat.temperature, pipe.preset.chat.top_k) == (1.0, 5)
    assert (pipe.preset.chat_with_images.temperature, pipe.preset.chat_with_images.top_k) == (0.0, 5)
    assert pipe.preset.config("edit") == pipe.preset.config("chat", with_images=True)
    favour_token(pipe.transformer, pipe.layout.image_start_id)  # every reply draws
    edit = [
        {"role": "user", "content": task_message("edit", "Remove it.", 64, 32), "images": [scene(64, 32)]}
    ]
    words = [{"role": "user", "content": task_message("frames", "a photo of a red star", 64, 32, frames=2)}]
    i2i = [{"role": "user", "content": task_message("i2i", "a red star", 64, 64, map_name="edge map")}]
    requests = [
        pipe.prepare_chat(edit),
        pipe.prepare_chat(words, 64, 32),
        pipe.prepare_chat(i2i, image_prefix=scene(64, 32)),
    ]
    assert [r.with_images for r in requests] == [True, False, True]
    options = dict(max_new_tokens=40, progress=False)
    replies = pipe.chat_many(requests, seed=3, **options)
    assert [r.settings["image"]["temperature"] for r in replies] == [0.0, 1.0, 0.0]
    alone = [
        pipe.chat(edit, seed=3, temperature=0, **options),
        pipe.chat(words, 64, 32, seed=4, temperature=1, **options),
        pipe.chat(i2i, image_prefix=scene(64, 32), seed=5, temperature=0, **options),
    ]
    _replies_match(alone, replies)
    given = pipe.chat_many(requests, seed=3, temperature=0.5, **options)
    assert [r.settings["image"]["temperature"] for r in given] == [0.5] * 3
    assert len({r.stats["seconds"] for r in given}) == 1  # one decode batch (its time)
    assert replies[0].stats["seconds"] == replies[2].stats["seconds"] != replies[1].stats["seconds"]
    (greedy / "sampling.json").write_text('{"chat_with_images": {"temprature": 0}}')
    with pytest.raises(LuminaError, match=r"unknown chat_with_images keys \['temprature'\]"):
        LuminaMGPTPipeline.from_pretrained(greedy)


def test_text_to_image_batch_of_prompts_and_images(pipe):
    out = pipe(
        ["a red star", "two blue circles"],
        width=64,
        height=32,
        num_images_per_prompt=2,
        seed=3,
        cfg_scale=2.0,
        progress=False,
    )
    assert [image.size for image in out.images] == [(64, 32)] * 4
    grids = torch.stack([decode_image_block(block, pipe.layout) for block in out.tokens])
    assert grids.shape == (4, 4, 8)
    vq = pipe.image_tokenizer  # each image decodes alone (a batched decode may round a pixel apart)
    expected = [vq.to_image(vq.decode(grid[None]))[0] for grid in grids]
    assert all(
        np.array_equal(np.asarray(a), np.asarray(b)) for a, b in zip(out.images, expected, strict=True)
    )
    assert out.stats["generated_tokens"] == 4 * (4 * 9 + 3) and out.stats["forward_passes"] == 39
    prompts = [
        serialize([{"role": "user", "content": t2i_prompt(p, 64, 32)}], pipe.text_tokenizer, pipe.layout)[0]
        for p in ("a red star", "two blue circles")
    ]
    assert out.stats["prompt_tokens"] == 2 * sum(
        len(p) + 1 for p in prompts
    )  # + the image start of the reply
    assert out.settings["cfg_scale"] == 2.0 and out.settings["image"]["top_k"] == 0
    # image k uses seed + k: the third image is the second prompt's first, alone with seed 5
    alone = pipe("two blue circles", width=64, height=32, seed=5, cfg_scale=2.0, progress=False)
    assert torch.equal(alone.tokens[0], out.tokens[2])
    assert np.array_equal(np.asarray(alone.images[0]), np.asarray(out.images[2]))


@pytest.mark.parametrize("size", [(32, 32), (96, 32), (32, 96), (64, 64), (128, 32), (160, 96), (96, 160)])
def test_requested_size_is_honoured(pipe, size):
    out = pipe("a red star", *size, seed=0, progress=False)
    assert out.images[0].size == size
    assert decode_image_block(out.tokens[0], pipe.layout).shape == (size[1] // 8, size[0] // 8)


def test_sampled_sizes_still_decode(pipe):
    out = pipe("a red star", 64, 64, num_images_per_prompt=2, seed=1, force_size=False, progress=False)
    assert all(img.size[0] % 32 == 0 and img.size[1] % 32 == 0 for img in out.images)


def test_sizes_the_model_cannot_draw_are_refused_with_nearby_sizes(pipe):
    with pytest.raises(LuminaError, match=r"a positive multiple of 32 px; valid sizes nearby: 96x96, "):
        pipe("a red star", 100, 100, progress=False)
    with pytest.raises(LuminaError, match=r"limited to 256 px"):
        pipe.check_size(288, 32)
    # 512 positions: a 256x128 image needs 16*33+4 = 532 tokens; nearby sizes keep the aspect and fit
    with pytest.raises(
        LuminaError, match=r"need 532 tokens, the model holds 512; valid sizes nearby: 224x128, 256x96, "
    ):
        check_size(256, 128, pipe.layout, 512)


def test_previews_show_finished_rows(pipe):
    previews = []
    out = pipe("a red star", 32, 64, seed=2, progress=False, preview_rows=2, on_preview=previews.append)
    assert len(previews) == 3  # after rows 2, 4, 6 of 8
    assert all(len(p) == 1 and p[0].size == (32, 64) for p in previews)
    grey = np.asarray(previews[0][0])[16:]  # below the two finished latent rows (16 px)
    assert (np.abs(grey.astype(int) - 128) <= 1).all()
    assert out.images[0].size == (32, 64)


def test_loading_errors_are_one_line(tmp_path, folder, monkeypatch):
    monkeypatch.setattr(hub, "DEFAULT_MODEL", tmp_path / "nothing")
    with pytest.raises(LuminaError, match="default model is not installed"):
        LuminaMGPTPipeline.from_pretrained()
    with pytest.raises(LuminaError, match="no such folder"):
        LuminaMGPTPipeline.from_pretrained(tmp_path / "missing")
    with pytest.raises(LuminaError, match=r"holds no tokenizer\.json"):
        LuminaMGPTPipeline.from_pretrained(folder / "vq")
    cuda = (
        "this machine (or this torch build) has no CUDA device" if not torch.cuda.is_available() else "only"
    )
    for device, message in [
        ("bogus", "unknown device 'bogus'"),
        ("meta", "device 'meta': not supported"),
        ("cuda:99", cuda),
    ]:
        with pytest.raises(LuminaError, match=re.escape(message)):
            LuminaMGPTPipeline.from_pretrained(folder, device=device)


# ---------------------------------------------------------------------------------------------------- chat


def test_chat_prompt_holds_the_encoded_images_in_order(pipe):
    a, b = scene(160, 96, 1), Image.fromarray(scene(100, 60, 2))  # a is a bucket of 128², b is fitted to one
    messages = [{"role": "user", "content": "Describe the image.", "images": [a, b]}]
    request = pipe.prepare_chat(messages)
    blocks = [pipe.encode_image(a), pipe.encode_image(b)]
    assert torch.equal(
        blocks[0], encode_image_block(pipe.image_tokenizer.encode_image(Image.fromarray(a)), pipe.layout)
    )
    assert decode_image_block(blocks[1], pipe.layout).shape == (12, 20)  # 160x96, the closest aspect
    text = "<|image|> <|image|> Describe the image."  # placeholders put first, as v1 does
    expected, _ = serialize(
        [{"role": "user", "content": text, "images": blocks}], pipe.text_tokenizer, pipe.layout
    )
    assert request.ids == expected.tolist() and request.prefix == []
    assert (request.width, request.height) == (160, 96)  # the last input image's canvas
    on_canvas = pipe.prepare_chat(messages, 64, 32)  # a given canvas: inputs are resized to it
    assert on_canvas.ids.count(pipe.layout.eol_id) == 2 * 4 and (on_canvas.width, on_canvas.height) == (
        64,
        32,
    )


@pytest.mark.parametrize("task", ["edit", "segmentation", "condition"])
def test_image_to_image_tasks_return_an_image_on_the_input_canvas(folder, task):
    pipe = LuminaMGPTPipeline.from_pretrained(folder)
    favour_token(pipe.transformer, pipe.layout.image_start_id)  # the random model answers with an image
    words = {"edit": "Remove the red square.", "condition": "a photo of a red square"}.get(task, "")
    content = task_message(task, words, 96, 64)
    reply = pipe.chat(
        [{"role": "user", "content": content, "images": [scene(96, 64)]}],
        96,
        64,
        seed=0,
        max_new_tokens=8 * 13 + 4,
    )
    assert reply.text == "<|image|>" and len(reply.images) == 1 and reply.images[0].size == (96, 64)
    assert reply.stats["unfinished_images"] == 0


def test_question_answering_returns_text(folder):
    pipe = LuminaMGPTPipeline.from_pretrained(folder)
    word = pipe.text_tokenizer.encode("yes")
    favour_token(pipe.transformer, word[0])
    reply = pipe.chat(
        [
            {
                "role": "user",
                "content": task_message("qa", "Is there a red star?", 64, 64),
                "images": [scene(64, 64)],
            }
        ],
        64,
        64,
        max_new_tokens=3,
    )
    assert reply.images == [] and reply.text == pipe.text_tokenizer.decode(word[:1] * 3)
    assert reply.tokens == word[:1] * 3


def test_several_images_in_one_reply(folder):
    pipe = LuminaMGPTPipeline.from_pretrained(folder)
    favour_token(pipe.transformer, pipe.layout.image_start_id)
    content = task_message("frames", "a photo of a red star", 32, 32, frames=3)
    reply = pipe.chat([{"role": "user", "content": content}], 32, 32, seed=1, max_new_tokens=3 * 24 + 10)
    assert reply.text == "<|image|>" * 3 and [i.size for i in reply.images] == [(32, 32)] * 3
    assert reply.stats["unfinished_images"] == 1  # the fourth was cut off by the token limit


def test_dual_panel_pair_is_one_canvas(folder):
    pipe = LuminaMGPTPipeline.from_pretrained(folder)
    favour_token(pipe.transformer, pipe.layout.image_start_id)
    content = task_message("pair", "a photo of a red star", 64, 128)
    reply = pipe.chat(
        [{"role": "user", "content": content}], 64, 128, cfg_scale=3.0, seed=2, max_new_tokens=16 * 9 + 4
    )
    assert [image.size for image in reply.images] == [(64, 128)]


def test_image_to_image_continues_the_given_upper_half(pipe):
    upper = scene(64, 64, 3)
    content = task_message("i2i", "a photo of a red star", 64, 128, map_name="edge map")
    reply = pipe.chat(
        [{"role": "user", "content": content}], cfg_scale=2.0, image_prefix=upper, seed=4, max_new_tokens=200
    )
    assert [image.size for image in reply.images] == [(64, 128)]
    start, end = find_image_blocks(reply.tokens, pipe.layout)[0]
    codes = decode_image_block(reply.tokens[start:end], pipe.layout)
    given = pipe.image_tokenizer.encode_image(Image.fromarray(upper))
    assert torch.equal(codes[:8], given) and codes.shape == (16, 8)
    layout = pipe.layout
    assert reply.tokens[:3] == [layout.image_start_id, layout.size_token_id(4), layout.size_token_id(2)]


@pytest.mark.parametrize(("width", "height"), [(160, 96), (96, 160), (64, 64)])
def test_image_prefix_is_the_upper_half_in_whole_grid_rows(pipe, width, height):
    """The benchmark's landscape and portrait canvases halve into whole grid rows but not whole 32-px units:
    the given upper half is kept as it is (48 px of 96, 80 of 160), not squashed to a unit."""
    half = height // 2
    upper = scene(width, half, 5)
    content = task_message("i2i", "a photo of a red star", width, height, map_name="edge map")
    request = pipe.prepare_chat([{"role": "user", "content": content}], width, height, image_prefix=upper)
    layout, rows = pipe.layout, half // pipe.layout.latent_factor
    given = pipe.image_tokenizer.encode_image(Image.fromarray(upper))
    assert given.shape == (rows, width // layout.latent_factor)
    assert request.prefix[:3] == [
        layout.image_start_id,
        layout.size_token_id(height // 32),
        layout.size_token_id(width // 32),
    ]
    assert torch.equal(layout.code_of_id[torch.tensor(request.prefix[3:])].view(rows, -1)[:, :-1], given)
    assert request.ids[-len(request.prefix) :] == request.prefix and (request.width, request.height) == (
        width,
        height,
    )


def _replies_match(alone, together) -> None:
    assert [r.tokens for r in together] == [r.tokens for r in alone]
    assert [r.text for r in together] == [r.text for r in alone]
    for a, b in zip(alone, together, strict=True):
        assert [np.asarray(i).tolist() for i in a.images] == [np.asarray(i).tolist() for i in b.images]
        for key in ("unfinished_images", "prompt_tokens", "generated_tokens"):
            assert a.stats[key] == b.stats[key]


@pytest.mark.parametrize("speculative", ["off", "exact"])
def test_chat_many_gives_each_conversation_the_reply_it_gets_alone(folder, speculative):
    """Prompts of different lengths and canvases (an edit, a question, i2i replies continuing given upper
    halves) in one decode batch: reply k is `chat`'s reply to conversation k alone with seed + k (tokens, text,
    images). With exact speculative decoding too: alone a grid is decoded in windows, in a batch with a row
    that talks it may take one-token steps, and its draws are keyed to token indices either way."""
    pipe = LuminaMGPTPipeline.from_pretrained(folder)
    favour_token(pipe.transformer, pipe.layout.image_start_id, 2.0)  # some rows draw, some talk
    edit = [
        {"role": "user", "content": task_message("edit", "Remove it.", 96, 64), "images": [scene(96, 64)]}
    ]
    question = [
        {"role": "user", "content": task_message("qa", "Is it red?", 64, 64), "images": [scene(64, 64)]}
    ]
    words = ["a photo of a red star", "a photo of two blue circles", "a photo of a green heart"]
    i2i = [
        (
            [{"role": "user", "content": task_message("i2i", w, 64, 128, map_name="edge map")}],
            dict(image_prefix=scene(64, 64, 10 + k)),
        )
        for k, w in enumerate(words)
    ]
    chats = [(edit, dict(width=96, height=64)), (question, {}), *i2i]
    options = dict(cfg_scale=2.0, max_new_tokens=200, speculative=speculative, window=8)
    alone = [pipe.chat(m, seed=7 + k, **where, **options) for k, (m, where) in enumerate(chats)]
    requests = [pipe.prepare_chat(m, **where) for m, where in chats]
    _replies_match(alone, pipe.chat_many(requests, seed=7, **options))
    assert [r.text.count("<|image|>") for r in alone] == [1, 0, 1, 1, 1]
    # without the talking row the batch takes windows, and rows that reach their end first (their windows
    # took more) hold still in the KV cache while the others go on
    drawing = [0, 2, 3, 4]
    _replies_match(
        [alone[k] for k in drawing],
        pipe.chat_many([requests[k] for k in drawing], seed=[7 + k for k in drawing], **options),
    )
    if speculative == "exact":
        assert alone[2].stats["window_forwards"] > 0
    with pytest.raises(LuminaError, match="at least one chat request"):
        pipe.chat_many([])


def test_chat_input_errors(pipe):
    with pytest.raises(LuminaError, match="ending with the user's turn"):
        pipe.chat([{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}])
    with pytest.raises(LuminaError, match="uint8 array"):
        pipe.chat([{"role": "user", "content": "<|image|>", "images": [np.zeros((8, 8))]}])
    with pytest.raises(LuminaError, match="unknown task"):
        task_message("paint", "x", 64, 64)
    with pytest.raises(LuminaError, match="message 0 has role 'wizard', expected 'user'"):
        pipe.chat([{"role": "wizard", "content": "hi"}])
    for bad in ("hello", {"role": "user", "content": "hi"}, ["hi"]):
        with pytest.raises(LuminaError, match="a chat is a list of message dicts"):
            pipe.chat(bad)
    with pytest.raises(LuminaError, match=r"whole numbers of pixels, got 64\.0 and 64"):
        pipe("a red star", 64.0, 64)
    with pytest.raises(LuminaError, match="a seed must be an int"):
        pipe("a red star", 64, 64, seed=1.5)
    for bad, message in [
        (dict(width=0, height=64), "cannot generate 0x64"),
        (dict(images=Image.new("RGB", (32, 32))), "'images' must be a list of images"),
    ]:
        images = bad.pop("images", None)
        with pytest.raises(LuminaError, match=re.escape(message)):
            pipe.chat([{"role": "user", "content": "Edit.", "images": images}], **bad)
    with pytest.raises(LuminaError, match="chat_many takes prepared chats"):
        pipe.chat_many([[{"role": "user", "content": "hi"}]])
    for bad, message in [
        (dict(prompt=None), "prompt must be a string or a non-empty list of strings, got None"),
        (dict(prompt=5), "got 5"),
        (dict(width=0), "cannot generate 0x64"),
        (dict(num_images_per_prompt=2.0), "num_images_per_prompt must be a whole number >= 1, got 2.0"),
        (dict(best_of=0), "best_of must be >= 1, got 0"),
        (dict(on_preview=print), "preview_rows (with on_preview) must be a whole number >= 1, got 0"),
        (dict(speculative="exact", window=2.5), "window must be a whole number (>= 1), got 2.5"),
    ]:
        kwargs = {"prompt": "a red star", "width": 64, "height": 64} | bad
        with pytest.raises(LuminaError, match=re.escape(message)):
            pipe(**kwargs)
    for frames in (-1, 0, 1, 17):
        with pytest.raises(LuminaError, match=f"the frames task draws 2..16 frames, got {frames}"):
            task_message("frames", "a red star", 64, 64, frames=frames)
    with pytest.raises(LuminaError, match="max_new_tokens must be >= 1, got 0"):
        pipe.chat([{"role": "user", "content": "hi"}], max_new_tokens=0)
