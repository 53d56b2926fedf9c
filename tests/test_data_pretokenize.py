"""Pre-tokenisation: t2i and conversation records to shards, bad records reported and skipped, resume."""

import json

import numpy as np
import pytest
import torch
import typer
from PIL import Image
from train_fixtures import one_thread, tiny_image_tokenizer, tiny_text_tokenizer  # noqa: F401 (fixture)
from typer.testing import CliRunner

from lumina_mgpt.data.cli import pretokenize as pretokenize_command
from lumina_mgpt.data.pretokenize import pretokenize
from lumina_mgpt.data.shards import ShardSet
from lumina_mgpt.errors import LuminaError
from lumina_mgpt.text import TextTokenizer
from lumina_mgpt.unirep import decode_image_block
from lumina_mgpt.vocab import TokenLayout
from lumina_mgpt.vq import fit_to_bucket, load_image_tokenizer, pil_to_pixels, to_rgb


@pytest.fixture(scope="module")
def tools(tmp_path_factory):
    root = tmp_path_factory.mktemp("tools")
    tokenizer_dir, vq_dir = tiny_text_tokenizer(root / "tokenizer"), tiny_image_tokenizer(root / "vq")
    return dict(
        tokenizer_dir=tokenizer_dir,
        vq_dir=vq_dir,
        tokenizer=TextTokenizer.from_folder(tokenizer_dir),
        layout=TokenLayout.from_tokenizer(tokenizer_dir, "ours"),
        image_tokenizer=load_image_tokenizer(vq_dir),
    )


def _image(path, size, color):
    image = Image.new("RGB", size, (128, 128, 128))
    image.paste(color, (size[0] // 4, size[1] // 4, size[0] // 2, size[1] // 2))
    image.save(path)
    return path


def _records(folder, lines):
    path = folder / "records.jsonl"
    path.write_text("\n".join(x if isinstance(x, str) else json.dumps(x) for x in lines) + "\n")
    return path


def _run(records, out, tools, **kwargs):
    return pretokenize(
        records,
        out,
        tokenizer=tools["tokenizer"],
        layout=tools["layout"],
        image_tokenizer=tools["image_tokenizer"],
        area=64,
        progress=False,
        **kwargs,
    )


def test_records_become_samples_with_exact_targets(tmp_path, tools):
    _image(tmp_path / "wide.png", (96, 80), (220, 40, 40))
    _image(tmp_path / "square.png", (64, 64), (40, 80, 220))
    records = _records(
        tmp_path,
        [
            {"image": "wide.png", "caption": "a red square", "id": "r1"},
            {
                "conversations": [
                    {"from": "human", "value": "Describe the image. <|image|>"},
                    {"from": "gpt", "value": "a blue square."},
                ],
                "images": ["square.png"],
                "task": "captioning",
            },
        ],
    )
    report = _run(records, tmp_path / "shards", tools)
    assert (report.shards_written, report.samples, report.skipped) == (1, 2, [])
    samples = ShardSet([tmp_path / "shards"])
    tokenizer, layout = tools["tokenizer"], tools["layout"]

    t2i = samples[0]
    start, end = t2i.image_span
    assert (t2i.task, t2i.record, t2i.canvas) == (
        "t2i",
        1,
        (64, 64),
    )  # 96x80 fits the 64x64 bucket of area 64
    prompt = "Generate an image of 64x64 according to the following prompt:\na red square"
    assert t2i.ids[0] == layout.bos_id and tokenizer.decode(t2i.ids[1 : start - 1]) == prompt
    assert t2i.ids[start - 1] == layout.turn_sep_id and t2i.ids[-1] == layout.turn_sep_id
    assert end == len(t2i) - 1 and not t2i.target[:start].any() and t2i.target[start:].all()
    fitted = fit_to_bucket(to_rgb(Image.open(tmp_path / "wide.png")), 64)
    expected_codes = tools["image_tokenizer"].encode(pil_to_pixels(fitted))[0]
    assert torch.equal(
        decode_image_block(torch.from_numpy(t2i.ids[start:end]).long(), layout), expected_codes
    )

    chat = samples[1]
    assert (chat.task, chat.record, chat.image_span) == (
        "captioning",
        2,
        (0, 0),
    )  # the image is in the question
    answer = [*tokenizer.encode("a blue square."), layout.turn_sep_id]
    assert chat.ids[chat.target].tolist() == answer and chat.ids[-len(answer) :].tolist() == answer


def test_bad_records_are_reported_and_skipped_and_runs_resume(tmp_path, tools):
    _image(tmp_path / "ok.png", (64, 64), (40, 170, 60))
    (tmp_path / "corrupt.png").write_bytes(b"\x89PNG\r\n\x1a\n not really an image")
    records = _records(
        tmp_path,
        [
            {"image": "ok.png", "caption": "a green square"},
            {"image": "corrupt.png", "caption": "broken"},
            {"image": "missing.png", "caption": "gone"},
            "{not json",
            {"conversations": [{"from": "human", "value": "Two images? <|image|>"}], "images": []},
            {"image": "ok.png", "caption": "a green square again"},
        ],
    )
    app = typer.Typer()
    app.command()(pretokenize_command)
    args = [
        str(records),
        "--out",
        str(tmp_path / "shards"),
        "--tokenizer",
        str(tools["tokenizer_dir"]),
        "--image-tokenizer",
        str(tools["vq_dir"]),
        "--area",
        "64",
        "--records-per-shard",
        "4",
    ]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "record 2: skipped: cannot read image corrupt.png" in result.output
    assert "record 3: skipped: image missing.png not found" in result.output
    assert "record 4: skipped: invalid JSON" in result.output
    assert (
        "record 5: skipped: the conversation has 1 <|image|> placeholder(s) but 0 image block(s)"
        in result.output
    )
    assert result.output.strip().endswith("2 shards written (2 samples), 0 already done; 4 records skipped")
    assert [s.record for s in (ShardSet([tmp_path / "shards"])[i] for i in range(2))] == [1, 6]

    again = CliRunner().invoke(app, args)
    assert again.output.strip().endswith("0 shards written (0 samples), 2 already done; 4 records skipped")


def _cli(records, out, tools, *args):
    from lumina_mgpt.cli import app

    return CliRunner().invoke(
        app,
        [
            "pretokenize",
            str(records),
            "--out",
            str(out),
            "--tokenizer",
            str(tools["tokenizer_dir"]),
            "--image-tokenizer",
            str(tools["vq_dir"]),
            *args,
        ],
    )


def test_bad_output_folder_rank_world_size_and_area_are_refused_up_front(tmp_path, tools):
    _image(tmp_path / "a.png", (64, 64), (245, 140, 20))
    records, afile = _records(tmp_path, [{"image": "a.png", "caption": "a square"}]), tmp_path / "afile"
    afile.touch()
    for args, message in (
        (["--out", str(afile)], f"error: {afile} exists and is not a folder"),
        (["--rank", "3", "--world-size", "2"], "error: rank 3 is outside 0..1 (world size 2)"),
        (["--area", "0"], "error: bucket side 0 px is not a positive multiple of the unit 32 px"),
        (["--area", "48"], "error: bucket side 48 px is not a positive multiple of the unit 32 px"),
        (["--area", "1024"], "error: area 1024 px is larger than layout ours's largest image side, 512 px"),
    ):
        result = _cli(records, tmp_path / "shards", tools, *args)
        assert (result.exit_code, result.output) == (2, message + "\n"), args
    result = _cli(records, tmp_path / "shards", tools, "--world-size", "0")
    assert result.exit_code == 2 and "Invalid value for '--world-size'" in result.output
    assert not (tmp_path / "shards").exists()


def test_shards_of_other_records_or_settings_are_redone_not_reused(tmp_path, tools):
    _image(tmp_path / "a.png", (64, 64), (245, 140, 20))
    records, out = (
        _records(tmp_path, [{"image": "a.png", "caption": f"old {i}"} for i in range(4)]),
        tmp_path / "out",
    )
    assert _run(records, out, tools).shards_written == 1
    assert _run(records, out, tools).shards_already_done == 1
    _records(tmp_path, [{"image": "a.png", "caption": f"new {i}"} for i in range(4)])
    assert _run(records, out, tools).shards_written == 1
    sample = ShardSet([out])[0]
    assert tools["tokenizer"].decode(sample.ids[1 : sample.image_span[0] - 1]).endswith("new 0")
    result = _cli(records, out, tools, "--area", "128")
    assert (
        "shard-00000.safetensors: written from other records, tokenizer or settings: redone" in result.output
    )
    assert result.output.strip().endswith("1 shards written (4 samples), 0 already done; 0 records skipped")
    assert ShardSet([out])[0].canvas == (128, 128)
    assert _run(records, out, tools, records_per_shard=2).shards_written == 2
    with pytest.raises(
        LuminaError, match=f"{out / 'shard-00001.safetensors'} is not one of the 1 shards of "
    ):
        _run(records, out, tools)  # area 64, 1 shard: shard 1 would be left over


def test_ranks_split_shards_and_size_phrase_drop_is_seeded(tmp_path, tools):
    _image(tmp_path / "a.png", (64, 64), (245, 140, 20))
    records = _records(tmp_path, [{"image": "a.png", "caption": f"scene {i}"} for i in range(60)])
    for rank in (0, 1):
        _run(records, tmp_path / "seed0", tools, records_per_shard=16, rank=rank, world_size=2)
    _run(records, tmp_path / "single", tools, records_per_shard=16)
    _run(records, tmp_path / "seed1", tools, records_per_shard=16, seed=1)
    assert sorted(p.name for p in (tmp_path / "seed0").iterdir()) == [
        f"shard-{k:05d}.safetensors" for k in range(4)
    ]

    def sizeless(folder):
        samples = ShardSet([folder])
        prompts = [
            tools["tokenizer"].decode(samples[i].ids[1 : samples[i].image_span[0] - 1]) for i in range(60)
        ]
        assert all(
            p.startswith(("Generate an image of 64x64 according", "Generate an image according"))
            for p in prompts
        )
        return {i for i, p in enumerate(prompts) if p.startswith("Generate an image according")}

    dropped, other_seed = sizeless(tmp_path / "seed0"), sizeless(tmp_path / "seed1")
    assert 1 <= len(dropped) <= 15 and 1 <= len(other_seed) <= 15 and dropped != other_seed
    split, single = ShardSet([tmp_path / "seed0"]), ShardSet([tmp_path / "single"])
    assert all(np.array_equal(split[i].ids, single[i].ids) for i in range(60))  # two ranks = one rank


def test_the_shipped_models_tokenizers_and_area_are_the_defaults(tmp_path):
    from lumina_mgpt.cli import app

    _image(tmp_path / "a.png", (96, 64), (245, 140, 20))
    records = _records(tmp_path, [{"image": "a.png", "caption": "an orange square"}])
    result = CliRunner().invoke(app, ["pretokenize", str(records), "--out", str(tmp_path / "shards")])
    assert result.exit_code == 0, result.output
    assert result.output.strip().endswith("1 shards written (1 samples), 0 already done; 0 records skipped")
