"""TokenLayout: the release ids, resolution by token name from tokenizer.json files, the dense lookups."""

import json
import os
import random

import pytest
import torch
from tokenizers import AddedToken, Tokenizer, models

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.text.tokenizer import build_text_tokenizer
from lumina_mgpt.vocab import MAX_SIZE_UNITS, TokenLayout, size_token_name, v1_image_token_name


def write_word_level(folder, names: list[str], added: list[str], config: dict | None = None):
    """A WordLevel tokenizer.json whose id i is names[i]; `added` are also registered as special tokens."""
    folder.mkdir(parents=True, exist_ok=True)
    tokenizer = Tokenizer(models.WordLevel({name: i for i, name in enumerate(names)}, unk_token=names[0]))
    tokenizer.add_special_tokens([AddedToken(name, special=True) for name in added])
    tokenizer.save(str(folder / "tokenizer.json"))
    if config is not None:
        (folder / "tokenizer_config.json").write_text(json.dumps(config))
    return folder / "tokenizer.json"


def chameleon_names(code_order: list[int] | None = None) -> list[str]:
    """65,536 names laid out as the Chameleon vocabulary; image code code_order[i] at id 4 + i."""
    names = ["<s>", "<pad>", "</s>", "<unk>"]
    names += [v1_image_token_name(code) for code in code_order or range(8192)]
    names += ["<eoss>", "<racm3:break>"]
    names += [f"<reserved{i - 4:05d}>" for i in range(8198, 65536)]  # <reservedNNNNN> is id NNNNN + 4
    return names


def lumina2_names() -> list[str]:
    """171,385 names at REFERENCE.md's v2 ids (and the inferred ones TokenLayout.v2 documents)."""
    names = [f"qwen{i}" for i in range(151665)]
    names[151643] = "<|endoftext|>"
    names += [
        "<racm3:break>",
        "<eoss>",
        "<reserved08796>",
        "<reserved08797>",
        "<reserved08798>",
        "<reserved08799>",
    ]
    names += [size_token_name(n) for n in range(155000 - 151671)]  # <reserved08800> ... at 151671 ...
    names += [f"<MOVQGAN_{k}>" for k in range(16384)]
    names.append("<reserved08706>")
    return names


@pytest.fixture(scope="module")
def v1_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("v1")
    return write_word_level(
        folder, chameleon_names(), ["<s>", "</s>", "<eoss>", "<racm3:break>", "<reserved08706>"]
    )


@pytest.fixture(scope="module")
def v2_file(tmp_path_factory):
    folder = tmp_path_factory.mktemp("v2")
    return write_word_level(
        folder, lumina2_names(), ["<|endoftext|>", "<racm3:break>", "<eoss>", "<reserved08799>"]
    )


def test_v1_reference_ids():
    layout = TokenLayout.v1()
    assert (layout.vocab_size, layout.bos_id, layout.turn_sep_id, layout.stop_ids) == (
        65536,
        0,
        8710,
        (8710,),
    )
    assert (layout.image_start_id, layout.image_end_id, layout.eol_id) == (8197, 8196, 8803)
    assert (layout.codebook_size, layout.latent_factor, layout.grid_per_unit) == (8192, 16, 2)
    assert layout.image_token_ids[[0, 8191]].tolist() == [4, 8195]
    assert [layout.size_token_id(n) for n in (1, 16, 24, 32)] == [8805, 8820, 8828, 8836]
    assert layout.size_of_token(8836) == 32


def test_v2_reference_ids():
    layout = TokenLayout.v2()
    assert (layout.vocab_size, layout.stop_ids) == (171385, (151666,))
    assert (layout.image_start_id, layout.image_end_id, layout.eol_id) == (151665, 151666, 151670)
    assert (layout.codebook_size, layout.latent_factor, layout.grid_per_unit) == (16384, 8, 4)
    assert layout.image_token_ids[[0, 16383]].tolist() == [155000, 171383]


def test_v1_resolves_from_tokenizer_json(v1_file):
    layout = TokenLayout.from_tokenizer(v1_file, "v1")
    assert layout == TokenLayout.v1()
    assert layout.max_size_units == MAX_SIZE_UNITS


def test_v2_resolves_from_tokenizer_json(v2_file):
    assert TokenLayout.from_tokenizer(v2_file.parent, "v2") == TokenLayout.v2()


def test_v2_bos_follows_tokenizer_config(tmp_path, v2_file):
    folder = tmp_path / "v2cfg"
    folder.mkdir()
    (folder / "tokenizer.json").write_bytes(v2_file.read_bytes())
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": None, "eos_token": "qwen7"}))
    assert TokenLayout.from_tokenizer(folder, "v2").bos_id == 7  # no BOS: the release falls back to EOS
    (folder / "tokenizer_config.json").write_text(json.dumps({"bos_token": {"content": "qwen9"}}))
    os.utime(folder / "tokenizer_config.json", ns=(1, 1))  # a new mtime, so the cache resolves afresh
    assert TokenLayout.from_tokenizer(folder, "v2").bos_id == 9


def test_v1_image_table_is_built_from_the_names(tmp_path):
    order = list(range(8192))
    random.Random(0).shuffle(order)
    file = write_word_level(tmp_path, chameleon_names(order), [])
    layout = TokenLayout.from_tokenizer(file, "v1")
    assert layout != TokenLayout.v1()
    codes = torch.tensor(order)
    assert torch.equal(layout.image_token_ids[codes], torch.arange(8192) + 4)
    assert torch.equal(layout.code_of(torch.arange(8192) + 4), codes)


def test_v1_image_token_names():
    assert v1_image_token_name(0) == "IMGIMGAZ"
    assert v1_image_token_name(124) == "IMGIMGBCEZ"
    assert v1_image_token_name(8191) == "IMGIMGIBJBZ"


def test_missing_token_names_token_and_file(tmp_path):
    names = chameleon_names()
    names[8803] = "something_else"  # <reserved08799>, the end-of-line token
    file = write_word_level(tmp_path, names, [])
    with pytest.raises(
        LuminaError, match=rf"token <reserved08799> is missing from .*{tmp_path.name}.*tokenizer\.json"
    ):
        TokenLayout.from_tokenizer(file, "v1")


def test_bad_image_names_are_rejected(tmp_path):
    names = chameleon_names()
    names[10] = "IMGIMGXYZ"
    with pytest.raises(LuminaError, match=r"IMGIMGXYZ .* does not spell a code"):
        TokenLayout.from_tokenizer(write_word_level(tmp_path / "a", names, []), "v1")
    names = chameleon_names()
    names[10] = "plain"
    with pytest.raises(LuminaError, match="do not cover codes"):
        TokenLayout.from_tokenizer(write_word_level(tmp_path / "b", names, []), "v1")


def test_v2_requires_movqgan_names_at_the_image_ids(tmp_path):
    names = lumina2_names()
    names[160000] = "oops"
    with pytest.raises(LuminaError, match=r"token 160000 .* 'oops', not a <MOVQGAN"):
        TokenLayout.from_tokenizer(write_word_level(tmp_path, names, []), "v2")


def test_file_errors(tmp_path):
    with pytest.raises(LuminaError, match="does not exist"):
        TokenLayout.from_tokenizer(tmp_path / "nope.json", "v1")
    with pytest.raises(LuminaError, match="holds no tokenizer file"):
        TokenLayout.from_tokenizer(tmp_path, "v1")
    (tmp_path / "tokenizer.json").write_text("{not json")
    with pytest.raises(LuminaError, match="not a readable tokenizers JSON"):
        TokenLayout.from_tokenizer(tmp_path, "v1")
    with pytest.raises(LuminaError, match="unknown layout kind 'v3'"):
        TokenLayout.from_tokenizer(tmp_path, "v3")


def test_text_tokenizer_json_name_is_accepted_and_cached(tmp_path, v1_file):
    (tmp_path / "text_tokenizer.json").write_bytes(v1_file.read_bytes())
    first = TokenLayout.from_tokenizer(tmp_path, "v1")
    assert TokenLayout.from_tokenizer(tmp_path / "text_tokenizer.json", "v1") is first


def test_ours_layout_matches_the_token_names(tmp_path):
    tokenizer = build_text_tokenizer(["a red circle", "two blue squares"], 700, 64, 12)
    layout = TokenLayout.from_tokenizer(tokenizer.save(tmp_path), "ours")
    assert (layout.vocab_size, layout.codebook_size, layout.max_size_units) == (700, 64, 12)
    assert layout.bos_id == tokenizer.token_to_id("<s>") == 0
    assert layout.turn_sep_id == tokenizer.token_to_id("<reserved08706>")
    assert layout.stop_ids == (layout.turn_sep_id,)
    assert layout.image_start_id == tokenizer.token_to_id("<racm3:break>")
    assert layout.image_end_id == tokenizer.token_to_id("<eoss>")
    assert layout.eol_id == tokenizer.token_to_id("<reserved08799>")
    assert layout.size_token_id(12) == tokenizer.token_to_id("<reserved08812>")
    assert layout.image_token_ids.tolist() == [tokenizer.token_to_id(f"<img{k}>") for k in range(64)]
    assert (layout.latent_factor, layout.grid_per_unit) == (8, 4)


def test_dense_lookups():
    layout = TokenLayout.v1()
    ids = torch.tensor([[0, 4, 8195], [8196, 8805, 5000]])
    assert layout.code_of(ids).tolist() == [[-1, 0, 8191], [-1, -1, 4996]]
    assert layout.image_ids(torch.tensor([0, 4996])).tolist() == [4, 5000]
    assert layout.size_of_id[[8805, 8836, 8804, 4]].tolist() == [1, 32, -1, -1]
    assert layout.code_of(8195).item() == 8191


def test_lookup_errors():
    layout = TokenLayout.v2()
    with pytest.raises(LuminaError, match="size of 0 units"):
        layout.size_token_id(0)
    with pytest.raises(LuminaError, match=f"size of 129 units .* outside 1..{MAX_SIZE_UNITS}"):
        layout.size_token_id(129)
    with pytest.raises(LuminaError, match="token 151665 is not a size token"):
        layout.size_of_token(151665)
    with pytest.raises(LuminaError, match=r"token ids must lie in 0\.\.171384"):
        layout.code_of(torch.tensor([171385]))
    with pytest.raises(LuminaError, match=r"image codes must lie in 0\.\.16383"):
        layout.image_ids(torch.tensor([16384]))
    with pytest.raises(LuminaError, match="must be integers"):
        layout.image_ids(torch.tensor([1.0]))


def test_layout_validation():
    sizes = torch.tensor([-1, 10, 11])
    with pytest.raises(LuminaError, match="overlap"):
        TokenLayout(
            "bad", 32, 0, 1, (1,), 2, 3, 4, 8, image_token_ids=torch.tensor([4, 5]), size_token_ids=sizes
        )
    with pytest.raises(LuminaError, match="outside the vocabulary of 12"):
        TokenLayout(
            "bad", 12, 0, 1, (1,), 2, 3, 4, 8, image_token_ids=torch.tensor([5, 12]), size_token_ids=sizes
        )
    tiny = TokenLayout(
        "tiny", 12, 0, 1, (1,), 2, 3, 4, 8, image_token_ids=torch.tensor([5, 6]), size_token_ids=sizes
    )
    assert tiny.to("cpu") == tiny and hash(tiny.to("cpu")) == hash(tiny)
    assert tiny.code_of_id.tolist() == [-1] * 5 + [0, 1] + [-1] * 5


def test_package_exports_the_public_api():
    import lumina_mgpt
    from lumina_mgpt.model import load_transformer
    from lumina_mgpt.pipeline import LuminaMGPTPipeline
    from lumina_mgpt.vq import load_image_tokenizer

    assert lumina_mgpt.LuminaMGPTPipeline is LuminaMGPTPipeline
    assert lumina_mgpt.load_transformer is load_transformer
    assert lumina_mgpt.load_image_tokenizer is load_image_tokenizer
    assert set(lumina_mgpt.__all__) >= {"LuminaMGPTPipeline", "load_transformer", "load_image_tokenizer"}
