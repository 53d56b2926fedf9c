"""Uni-Rep blocks (round trips, exact lengths, malformed streams), buckets and the t2i prompt."""

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.text.tokenizer import build_text_tokenizer
from lumina_mgpt.unirep import (
    T2IPrompt,
    block_length,
    buckets,
    decode_image_block,
    encode_image_block,
    find_image_blocks,
    image_block_header,
    image_block_prefix,
    latent_grid,
    nearest_bucket,
    parse_size,
    parse_t2i_prompt,
    prefix_height,
    t2i_prompt,
)
from lumina_mgpt.vocab import TokenLayout

V1 = TokenLayout.v1()
V2 = TokenLayout.v2()


@pytest.fixture(scope="module")
def ours(tmp_path_factory):
    tokenizer = build_text_tokenizer(["a photo of a red circle"], 600, 256, 8)
    return TokenLayout.from_tokenizer(tokenizer.save(tmp_path_factory.mktemp("ours")), "ours")


def random_codes(layout, rows_units, columns_units, seed=0, batch=()):
    generator = torch.Generator().manual_seed(seed)
    shape = (*batch, rows_units * layout.grid_per_unit, columns_units * layout.grid_per_unit)
    return torch.randint(0, layout.codebook_size, shape, generator=generator)


@given(
    layout_index=st.sampled_from([0, 1, 2]),
    rows=st.integers(1, 5),
    columns=st.integers(1, 5),
    seed=st.integers(0, 2**31),
)
def test_round_trip(ours, layout_index, rows, columns, seed):
    layout = [V1, V2, ours][layout_index]
    codes = random_codes(layout, rows, columns, seed)
    block = encode_image_block(codes, layout)
    assert block.numel() == block_length(columns * 32, rows * 32, layout)
    assert block[:3].tolist() == [
        layout.image_start_id,
        layout.size_token_id(rows),
        layout.size_token_id(columns),
    ]
    assert torch.equal(decode_image_block(block, layout), codes)
    assert torch.equal(decode_image_block(block.tolist(), layout), codes)


def test_exact_tokens_v1():
    block = encode_image_block(torch.tensor([[0, 1], [2, 8191]]), V1)
    assert block.tolist() == [8197, 8805, 8805, 4, 5, 8803, 6, 8195, 8803, 8196]


def test_exact_tokens_v2_height_first():
    codes = torch.arange(32).view(8, 4)  # 64 px tall, 32 px wide
    block = encode_image_block(codes, V2)
    rows = [[155000 + 4 * r + c for c in range(4)] + [151670] for r in range(8)]
    assert block.tolist() == [151665, 151673, 151672, *(token for row in rows for token in row), 151666]


@pytest.mark.parametrize(
    ("layout", "width", "height", "length"),
    [
        (V2, 768, 768, 9316),
        (V2, 512, 512, 4164),
        (V2, 512, 1024, 8324),
        (V1, 512, 512, 1060),
        (V1, 768, 768, 2356),
        (V1, 1024, 1024, 4164),
        (V1, 1024, 256, 1044),
    ],
)
def test_block_lengths(layout, width, height, length):
    assert block_length(width, height, layout) == length


def test_block_length_of_encoded_v1_1024x256():
    codes = torch.zeros(16, 64, dtype=torch.long)
    block = encode_image_block(codes, V1)
    assert block.numel() == 1044 and block[1:3].tolist() == [8812, 8836]


def test_batched_encode_matches_single(ours):
    codes = random_codes(ours, 2, 3, batch=(3,))
    batch = encode_image_block(codes, ours)
    assert batch.shape == (3, block_length(96, 64, ours))
    for row, grid in zip(batch, codes, strict=True):
        assert torch.equal(row, encode_image_block(grid, ours))


def test_encode_errors():
    with pytest.raises(LuminaError, match=r"shape \[h, w\] or \[B, h, w\]"):
        encode_image_block(torch.zeros(4, dtype=torch.long), V1)
    with pytest.raises(LuminaError, match="3 rows, not a multiple of 2"):
        encode_image_block(torch.zeros(3, 2, dtype=torch.long), V1)
    with pytest.raises(LuminaError, match="multiple of 4 columns"):
        encode_image_block(torch.zeros(4, 6, dtype=torch.long), V2)
    with pytest.raises(LuminaError, match=r"image codes must lie in 0..8191"):
        encode_image_block(torch.full((2, 2), 8192), V1)
    with pytest.raises(LuminaError, match="500x512: each side must be a positive multiple of 32 px"):
        latent_grid(500, 512, V1)


def good_v1_block():
    return encode_image_block(torch.arange(16).view(4, 4), V1)  # 64 x 64 px: 4 rows of 4 codes


def edited(position, token=None, remove=False, insert=None):
    ids = good_v1_block().tolist()
    if remove:
        del ids[position]
    elif insert is not None:
        ids.insert(position, insert)
    else:
        ids[position] = token
    return ids


@pytest.mark.parametrize(
    ("ids", "message"),
    [
        ([8197, 8806], "image block has only 2 tokens"),
        (edited(0, 5), "starts with token 5, not image start 8197"),
        (edited(1, 100), r"token 100 at position 1 is not a size token \(height\)"),
        (edited(2, 8197), r"token 8197 at position 2 is not a size token \(width\)"),
        (good_v1_block().tolist()[:-1], "not closed: last token 8803 is not image end 8196"),
        (edited(9, 8710), r"token 8710 at position 9 \(row 1\) is not an image code or end-of-line"),
        (edited(13, 8196), r"token 8196 at position 13 \(row 2\) is not an image code"),
        (edited(-2, remove=True), "row 3 is not closed by end-of-line"),
        (edited(10, remove=True), "row 1 has 3 codes, expected 4"),
        (edited(4, insert=4), "row 0 has 5 codes, expected 4"),
        (edited(-1, insert=8803), "row 4 has 0 codes, expected 4"),
        (
            [*good_v1_block().tolist()[:-6], 8196],
            "image block has 3 rows, expected 4 .height token says 64 px",
        ),
        (edited(8, 70000), "token 70000 lies outside the vocabulary of 65536"),
    ],
)
def test_malformed_blocks_are_rejected(ids, message):
    with pytest.raises(LuminaError, match=message):
        decode_image_block(ids, V1)


def test_too_many_rows_are_rejected():
    ids = good_v1_block().tolist()
    ids = ids[:-1] + ids[3:8] + [8196]  # one more row of 4 codes
    with pytest.raises(LuminaError, match="image block has 5 rows, expected 4"):
        decode_image_block(ids, V1)


def test_find_image_blocks():
    block = good_v1_block().tolist()
    stream = [0, 300, 301, *block, 8710, *block, 302, 8197, 8805]  # the last block is unfinished
    first = 3
    second = first + len(block) + 1
    assert find_image_blocks(stream, V1) == [(first, first + len(block)), (second, second + len(block))]
    assert find_image_blocks([8196, 5, 8197, 8197, 8196], V1) == [(3, 5)]
    assert find_image_blocks([], V1) == []


def test_header_and_prefix():
    assert image_block_header(512, 1024, V2).tolist() == [151665, 151671 + 32, 151671 + 16]
    upper = torch.arange(8).view(2, 4)
    prefix = image_block_prefix(upper, 64, V2)
    assert prefix.tolist() == [
        151665,
        151673,
        151672,
        155000,
        155001,
        155002,
        155003,
        151670,
        155004,
        155005,
        155006,
        155007,
        151670,
    ]
    with pytest.raises(LuminaError, match="prefix has 9 rows but a 64 px canvas has only 8"):
        image_block_prefix(torch.zeros(9, 4, dtype=torch.long), 64, V2)


@pytest.mark.parametrize(
    ("side", "count", "first", "last", "v1_tokens"),
    [
        (512, 49, (1024, 256), (256, 1024), (916, 1092)),
        (768, 73, (1536, 384), (384, 1536), (2140, 2404)),
        (1024, 97, (2048, 512), (512, 2048), (3846, 4228)),
    ],
)
def test_bucket_counts_and_extremes(side, count, first, last, v1_tokens):
    sizes = buckets(side)
    assert len(sizes) == count == len(set(sizes))
    assert (sizes[0], sizes[-1]) == (first, last)
    assert (side, side) in sizes
    assert all(w * h <= side * side and max(w, h) <= 4 * min(w, h) for w, h in sizes)
    lengths = [block_length(w, h, V1) for w, h in sizes]
    assert (min(lengths), max(lengths)) == v1_tokens


def test_bucket_errors():
    with pytest.raises(LuminaError, match="not a positive multiple of the unit 32"):
        buckets(500)
    with pytest.raises(LuminaError, match="max_ratio must be at least 1"):
        buckets(512, max_ratio=0.5)


def test_nearest_bucket():
    sizes = buckets(512)
    assert nearest_bucket(512, 512, sizes) == (512, 512)
    assert nearest_bucket(2000, 2000, sizes) == (512, 512)
    assert nearest_bucket(4000, 1000, sizes) == (1024, 256)
    assert nearest_bucket(300, 1200, sizes) == (256, 1024)
    assert nearest_bucket(700, 340, [(512, 512), (768, 384), (1024, 256)]) == (768, 384)
    assert nearest_bucket(100, 100, [(256, 512), (512, 256)]) == (512, 256)  # a tie goes to the larger


def test_nearest_bucket_errors():
    with pytest.raises(LuminaError, match="must be positive"):
        nearest_bucket(0, 10, buckets(512))
    with pytest.raises(LuminaError, match="no buckets"):
        nearest_bucket(10, 10, [])


def test_t2i_prompt_and_parser():
    text = t2i_prompt("a photo of a red circle", 768, 512)
    assert text == "Generate an image of 768x512 according to the following prompt:\na photo of a red circle"
    assert parse_t2i_prompt(text) == T2IPrompt("a photo of a red circle", 768, 512)
    multi = t2i_prompt("line one\nline two", 64, 32)
    assert parse_t2i_prompt(multi) == T2IPrompt("line one\nline two", 64, 32)
    sizeless = "Generate an image according to the following prompt:\na blue star"
    assert parse_t2i_prompt(sizeless) == T2IPrompt("a blue star", None, None)
    assert parse_t2i_prompt("Describe the image. <|image|>") is None


def test_parse_size_takes_ascii_wxh_only():
    assert parse_size("768x512") == (768, 512)
    assert parse_size("96X160") == (96, 160)
    for text in [
        "big",
        "128x",
        "x128",
        "128x128\n",
        " 128x128",
        "128 x 128",
        "+128x128",
        "128x128x1",
        "١٢٨x١٢٨",
        "１２８x128",
        "123456x1",
    ]:
        with pytest.raises(LuminaError, match=r"^canvas .* is not 'WxH' in pixels with ASCII digits"):
            parse_size(text, "canvas")


def test_prefix_height_is_half_the_canvas_in_whole_grid_rows():
    """Not whole 32-px units: 48 px of a 96 px canvas (6 rows of 8 px, or 3 of 16 px)."""
    heights = (32, 64, 96, 128, 160, 224)
    assert [prefix_height(h, V2) for h in heights] == [16, 32, 48, 64, 80, 112]
    assert [prefix_height(h, V1) for h in heights] == [16, 32, 48, 64, 80, 112]
    with pytest.raises(LuminaError, match="each side must be a positive multiple of 32 px"):
        prefix_height(100, V2)
