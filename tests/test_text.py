"""Text tokenizer (BPE builder, loading, saving) and the chat serialisation with its labels."""

import itertools
import json

import pytest
import torch

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.text import IGNORE_INDEX, TextTokenizer, build_text_tokenizer, serialize, split_response
from lumina_mgpt.unirep import encode_image_block, t2i_prompt
from lumina_mgpt.vocab import TokenLayout

SHAPES = ["circle", "square", "triangle", "star", "heart", "cross"]
COLORS = ["red", "orange", "yellow", "green", "blue", "purple", "pink", "brown", "black", "white"]


def article(word):
    return "an" if word[0] in "aeiou" else "a"


def world_texts():
    """Benchmark descriptions and omni messages of WORLD.md, as t2i prompts on a few canvases."""
    plural = {shape: "crosses" if shape == "cross" else shape + "s" for shape in SHAPES}
    texts = [f"a photo of {article(s)} {s}" for s in SHAPES]
    texts += [f"a photo of {n} {plural[s]}" for n in ("two", "three", "four") for s in SHAPES]
    texts += [f"a photo of {article(c)} {c} {s}" for c in COLORS for s in SHAPES]
    for a, b in itertools.permutations(SHAPES, 2):
        texts.append(f"a photo of {article(a)} {a} and {article(b)} {b}")
        texts += [
            f"a photo of {article(a)} {a} {rel} {article(b)} {b}"
            for rel in ("to the left of", "to the right of", "above", "below")
        ]
    prompts = [t2i_prompt(text, w, h) for text in texts for w, h in ((256, 256), (384, 160))]
    omni = [
        "Semantic segmentation. <|image|>",
        "Edge detection. <|image|>",
        "Describe the image. <|image|>",
        "How many crosses are there? <|image|>",
        "a red circle, a blue star and a white heart.",
        "Generate an image according to the provided image, and according to the following caption:\n"
        "a green square <|image|>",
        "12,40,96,128",
        "zero",
        "yes",
    ]
    return texts + prompts + omni


@pytest.fixture(scope="module")
def tokenizer():
    return build_text_tokenizer(world_texts(), 1024, 64, 8, number_tokens=257)


@pytest.fixture(scope="module")
def layout(tokenizer, tmp_path_factory):
    return TokenLayout.from_tokenizer(tokenizer.save(tmp_path_factory.mktemp("ours")), "ours")


def test_bpe_round_trips_every_caption(tokenizer):
    texts = [*world_texts(), "  two  spaces\tand tabs\n", "héllo wörld ✓", ""]
    for text in texts:
        ids = tokenizer.encode(text)
        assert tokenizer.decode(ids) == text
    assert (
        len(tokenizer.encode("a photo of a red circle")) < len("a photo of a red circle") / 2
    )  # merges learned


def test_every_pixel_coordinate_is_one_token_wherever_it_stands(tokenizer):
    ids = {n: tokenizer.encode(str(n)) for n in range(8 * 32 + 1)}
    assert all(len(i) == 1 for i in ids.values())
    assert len({i[0] for i in ids.values()}) == 257
    box = "12,145,142,256"
    comma = tokenizer.encode(",")
    assert tokenizer.encode(box) == ids[12] + comma + ids[145] + comma + ids[142] + comma + ids[256]
    assert tokenizer.encode(f"Generate an image of 160x96 {box}")[-7:] == tokenizer.encode(box)
    assert tokenizer.encode("x1420y") == tokenizer.encode("x") + ids[142] + ids[0] + tokenizer.encode("y")
    assert tokenizer.encode("3000") == ids[30] + ids[0] + ids[0]  # longest numbers first, left to right
    assert tokenizer.decode(tokenizer.encode(f"a {box}.")) == f"a {box}."


def test_with_numbers_adds_the_missing_numbers_after_the_last_id():
    plain = build_text_tokenizer(world_texts(), 1024, 64, 8)
    assert len(plain.encode("145")) > 1  # the BPE alone has no token for it
    extended = plain.with_numbers(257)
    vocabulary = plain.tokenizer.get_vocab()
    assert {t: extended.token_to_id(t) for t in vocabulary} == vocabulary
    added = {n: extended.encode(str(n)) for n in range(257) if str(n) not in vocabulary}
    assert sorted(i for ids in added.values() for i in ids) == list(range(1024, extended.vocab_size))
    assert all(len(extended.encode(str(n))) == 1 for n in range(257))
    assert extended.with_numbers(257).tokenizer.to_str() == extended.tokenizer.to_str()
    text = "Detect: the red star. 12,145,142,256"
    assert extended.decode(extended.encode(text)) == text


def test_bpe_vocabulary_layout(tokenizer):
    assert tokenizer.vocab_size == 1024
    assert [tokenizer.token_to_id(t) for t in ("<s>", "<pad>", "</s>", "<|image|>")] == [0, 1, 2, 3]
    first = tokenizer.token_to_id("<img0>")
    assert [tokenizer.token_to_id(f"<img{k}>") for k in range(64)] == list(range(first, first + 64))
    assert tokenizer.encode("<reserved08706><img5>") == [tokenizer.token_to_id("<reserved08706>"), first + 5]


def test_bpe_builder_errors():
    with pytest.raises(LuminaError, match="vocab_size 300 is too small"):
        build_text_tokenizer(["abc"], 300, 64, 8)
    with pytest.raises(LuminaError, match="and 247 numbers need at least 583"):
        build_text_tokenizer(["abc"], 582, 64, 8, number_tokens=257)
    with pytest.raises(LuminaError, match=r"max_size_units must lie in 1\.\.128"):
        build_text_tokenizer(["abc"], 1000, 64, 129)


def test_save_and_load(tokenizer, tmp_path):
    path = tokenizer.save(tmp_path / "a")
    assert json.loads((tmp_path / "a" / "tokenizer_config.json").read_text())["bos_token"] == "<s>"
    loaded = TextTokenizer.from_folder(tmp_path / "a")
    text = t2i_prompt("a photo of a blue star", 256, 256)
    assert loaded.encode(text) == tokenizer.encode(text)
    assert loaded.special_tokens == tokenizer.special_tokens
    (tmp_path / "b").mkdir()
    path.rename(tmp_path / "b" / "text_tokenizer.json")  # the v1 release's file name
    assert TextTokenizer.from_folder(tmp_path / "b").encode(text) == tokenizer.encode(text)


def test_load_errors(tmp_path):
    with pytest.raises(LuminaError, match="does not exist"):
        TextTokenizer.from_file(tmp_path / "missing.json")
    with pytest.raises(LuminaError, match="holds no tokenizer file"):
        TextTokenizer.from_folder(tmp_path)
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(LuminaError, match="not a readable tokenizers JSON file"):
        TextTokenizer.from_folder(tmp_path)


def test_token_to_id_and_encode_errors(tokenizer):
    with pytest.raises(LuminaError, match="token <nope> is not in the tokenizer's vocabulary"):
        tokenizer.token_to_id("<nope>")
    with pytest.raises(LuminaError, match="must be a str"):
        tokenizer.encode(3)


def block(layout, seed):
    codes = torch.randint(0, layout.codebook_size, (4, 8), generator=torch.Generator().manual_seed(seed))
    return encode_image_block(codes, layout)  # 64 x 32 px


def release_serialize(messages, tokenizer, layout, blocks):
    """The releases' recipe: [BOS] + tokenize(message + sep + ...) as ONE string, then each <|image|> id
    replaced by its block in order (an independent reference for `serialize`)."""
    text = "".join(m["content"] + "<reserved08706>" for m in messages)
    ids, placeholder, pending = [layout.bos_id], tokenizer.token_to_id("<|image|>"), list(blocks)
    for token in tokenizer.encode(text):
        ids += pending.pop(0).tolist() if token == placeholder else [token]
    assert not pending
    return ids


def test_serialize_understanding_prompt_exact(tokenizer, layout):
    image = block(layout, 0)
    messages = [{"role": "user", "content": "Semantic segmentation. <|image|>", "images": [image]}]
    ids, labels = serialize(messages, tokenizer, layout)
    expected = [0, *tokenizer.encode("Semantic segmentation. "), *image.tolist(), layout.turn_sep_id]
    assert ids.tolist() == expected == release_serialize(messages, tokenizer, layout, [image])
    assert tokenizer.decode(tokenizer.encode("Semantic segmentation. ")) == "Semantic segmentation. "
    assert labels.tolist() == [IGNORE_INDEX] * len(expected)


def test_serialize_training_conversation_exact(tokenizer, layout):
    before, edited = block(layout, 1), block(layout, 2)
    messages = [
        {"role": "user", "content": "Describe the image. <|image|>", "images": [before]},
        {"role": "assistant", "content": "a red circle."},
        {"role": "user", "content": "Remove the red circle. <|image|>", "images": [before]},
        {"role": "assistant", "content": "<|image|>", "images": [edited]},
    ]
    ids, labels = serialize(messages, tokenizer, layout)
    sep = layout.turn_sep_id
    turns = [
        [*tokenizer.encode("Describe the image. "), *before.tolist(), sep],
        [*tokenizer.encode("a red circle."), sep],
        [*tokenizer.encode("Remove the red circle. "), *before.tolist(), sep],
        [*edited.tolist(), sep],
    ]
    assert (
        ids.tolist()
        == [0, *itertools.chain.from_iterable(turns)]
        == release_serialize(messages, tokenizer, layout, [before, before, edited])
    )
    masked = [[IGNORE_INDEX] * len(t) for t in turns]
    assert labels.tolist() == [IGNORE_INDEX, *masked[0], *turns[1], *masked[2], *turns[3]]
    flat_ids, flat_labels = serialize(
        [{**m, "images": ["pixels"] * len(m.get("images", []))} for m in messages],  # image_blocks win
        tokenizer,
        layout,
        [before, before, edited],
    )
    assert torch.equal(flat_ids, ids) and torch.equal(flat_labels, labels)


def test_t2i_prompt_with_image_prefix(tokenizer, layout):
    prompt = t2i_prompt("a photo of a red circle", 32, 64)
    prefix = block(layout, 3)[:-1]
    ids, labels = serialize([{"role": "user", "content": prompt}], tokenizer, layout, response_prefix=prefix)
    expected = [0, *tokenizer.encode(prompt), layout.turn_sep_id, *prefix.tolist()]
    assert ids.tolist() == expected
    assert (labels == IGNORE_INDEX).all()


def test_serialize_uses_the_layout_bos(tokenizer):
    v2 = TokenLayout.v2()
    ids, _ = serialize([{"role": "user", "content": "hi"}], tokenizer, v2)
    assert ids.tolist() == [151643, *tokenizer.encode("hi"), 171384]


@pytest.mark.parametrize(
    ("messages", "blocks", "message"),
    [
        ([], None, "at least one message"),
        ([{"role": "assistant", "content": "x"}], None, "message 0 has role 'assistant', expected 'user'"),
        ([{"role": "user", "content": "x"}, {"role": "user", "content": "y"}], None, "expected 'assistant'"),
        ([{"role": "user", "content": None}], None, "message 0 content must be a str"),
        (
            [{"role": "user", "content": "a <|image|> b <|image|>", "images": [[1]]}],
            None,
            r"message 0 has 2 <\|image\|> placeholder\(s\) but 1 image\(s\)",
        ),
        (
            [{"role": "user", "content": "a <|image|>"}],
            [[1], [2]],
            r"conversation has 1 <\|image\|> placeholder\(s\) but 2 image block\(s\)",
        ),
        (
            [{"role": "user", "content": "a <|image|>", "images": [[1, 2, 3, 4]]}],
            None,
            "image 0 of message 0 does not run from image start",
        ),
    ],
)
def test_serialize_errors(tokenizer, layout, messages, blocks, message):
    with pytest.raises(LuminaError, match=message):
        serialize(messages, tokenizer, layout, blocks)


def test_prefix_needs_an_open_turn(tokenizer, layout):
    messages = [{"role": "user", "content": "x"}, {"role": "assistant", "content": "y"}]
    with pytest.raises(LuminaError, match="needs an open assistant turn"):
        serialize(messages, tokenizer, layout, response_prefix=[1, 2])


def test_split_response(tokenizer, layout):
    image = block(layout, 4)
    text = tokenizer.encode("Sure, here it is. ")
    reply = torch.tensor([*text, *image.tolist(), *tokenizer.encode(" done"), layout.turn_sep_id, 7, 8])
    segments = split_response(reply, layout)
    assert [s.kind for s in segments] == ["text", "image", "text"]
    assert segments[0].ids.tolist() == text and torch.equal(segments[1].ids, image)
    assert tokenizer.decode(segments[2].ids) == " done"
    cut = split_response([*text, *image.tolist()[:20]], layout)
    assert [(s.kind, s.ids.tolist()) for s in cut] == [
        ("text", text),
        ("unfinished_image", image.tolist()[:20]),
    ]
    assert split_response([layout.turn_sep_id], layout) == []
