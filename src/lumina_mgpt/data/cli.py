"""`lumina-mgpt pretokenize RECORDS.jsonl --out DIR ...`: JSONL records to token shards."""

from pathlib import Path
from typing import Annotated

import typer

from lumina_mgpt.errors import check_output_folder


def pretokenize(
    records: Annotated[
        Path, typer.Argument(help="JSONL file: {image, caption} or {conversations, images} lines.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Folder for the shard-*.safetensors files.")],
    model: Annotated[
        Path | None,
        typer.Option(
            "--model",
            help="Model folder whose text and image tokenizers to use (those that --tokenizer and "
            "--image-tokenizer do not name); default: the shipped model.",
        ),
    ] = None,
    tokenizer: Annotated[
        str | None, typer.Option("--tokenizer", help="Folder with tokenizer.json, or the file.")
    ] = None,
    image_tokenizer: Annotated[
        str | None, typer.Option("--image-tokenizer", help="Image tokenizer folder, file or hub id.")
    ] = None,
    layout: Annotated[str, typer.Option("--layout", help="Token layout kind: v1, v2 or ours.")] = "ours",
    area: Annotated[
        int | None,
        typer.Option(
            "--area",
            help="Target area side in px: images go to its buckets. Default: the largest up to 512 whose "
            "buckets all fit the layout.",
        ),
    ] = None,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the 10% size-less prompts.")] = 0,
    records_per_shard: Annotated[int, typer.Option("--records-per-shard", min=1)] = 1024,
    rank: Annotated[int, typer.Option("--rank", envvar="RANK", min=0, help="This worker's index.")] = 0,
    world_size: Annotated[
        int, typer.Option("--world-size", envvar="WORLD_SIZE", min=1, help="Number of workers.")
    ] = 1,
    batch_size: Annotated[int, typer.Option("--batch-size", min=1, help="Images per VQ encoder pass.")] = 16,
    device: Annotated[str, typer.Option("--device", help="Device of the image tokenizer.")] = "cpu",
    force: Annotated[
        bool, typer.Option("--force", help="Go on although the image tokenizer reconstructs the data badly.")
    ] = False,
) -> None:
    """Tokenise image-caption or conversation records into shards for `lumina-mgpt train`.

    Re-running skips finished shards; several workers (--rank/--world-size, or torchrun) split the shards.
    First the image tokenizer's PSNR on a sample of the images is checked against its own training figure.
    """
    # torch and diffusers are imported on use, so that `lumina-mgpt --help` stays quick
    from lumina_mgpt.data.guard import check_fit, measure_fit, reference_psnr
    from lumina_mgpt.data.pretokenize import check_settings, default_area
    from lumina_mgpt.data.pretokenize import pretokenize as run_pretokenize
    from lumina_mgpt.hub import DEFAULT_MODEL
    from lumina_mgpt.text import TextTokenizer
    from lumina_mgpt.vocab import TokenLayout
    from lumina_mgpt.vq import load_image_tokenizer

    check_output_folder(out)
    tokenizer = tokenizer or str(model or DEFAULT_MODEL)
    image_tokenizer = image_tokenizer or str(model or DEFAULT_MODEL)
    token_layout = TokenLayout.from_tokenizer(tokenizer, layout)
    if area is None:
        area = default_area(token_layout)
    vq = load_image_tokenizer(image_tokenizer, device=device)
    check_settings(vq, token_layout, area, rank, world_size)
    if rank == 0:  # one worker checks the image tokenizer on the data
        fit = measure_fit(records, vq, area, reference_psnr(image_tokenizer))
        typer.echo(check_fit(fit, image_tokenizer, force))
    report = run_pretokenize(
        records,
        out,
        tokenizer=TextTokenizer.from_folder(tokenizer),
        layout=token_layout,
        image_tokenizer=vq,
        area=area,
        seed=seed,
        records_per_shard=records_per_shard,
        rank=rank,
        world_size=world_size,
        batch_size=batch_size,
    )
    typer.echo(
        f"{report.shards_written} shards written ({report.samples} samples), "
        f"{report.shards_already_done} already done; {len(report.skipped)} records skipped"
    )
