"""`lumina-mgpt eval`: score a model on the shapes-world benchmark (text-to-image categories and omni tasks)."""

import json
import re
import tempfile
from pathlib import Path
from typing import Annotated

import typer

from lumina_mgpt.cli_options import TensorParallelOption
from lumina_mgpt.errors import LuminaError, check_output_folder

_CANVAS_IN_PROMPT = re.compile(r" of (\d+)x(\d+)")


def pipeline_generate_fn(pipe, batch_size: int = 32):
    """The benchmark's `generate_fn` over a pipeline: templated prompts in, one list of images per prompt out,
    `batch_size` prompts per pipeline call (image k of the request still samples with seed + k)."""
    from lumina_mgpt.unirep import parse_t2i_prompt

    def generate(prompts: list[str], width: int, height: int, per_prompt: int, seed: int) -> list[list]:
        descriptions = [(parse_t2i_prompt(p) or (p,))[0] for p in prompts]
        images = []
        for start in range(0, len(descriptions), batch_size):
            chunk = descriptions[start : start + batch_size]
            images += pipe(
                chunk,
                width=width,
                height=height,
                num_images_per_prompt=per_prompt,
                seed=seed + start * per_prompt,
            ).images
        return [images[i * per_prompt : (i + 1) * per_prompt] for i in range(len(prompts))]

    return generate


def chat_request(pipe, messages: list[dict]):
    """The pipeline's prepared chat for a benchmark conversation. A trailing assistant message with an image
    becomes the reply's given upper half (v2 i2i); drawn images take the canvas named in the request
    ("... of WxH ..."), else the size of the latest input image (tasks answer on the same canvas)."""
    import numpy as np

    prefix = None
    if messages[-1]["role"] == "assistant":
        prefix, messages = messages[-1]["images"][0], messages[:-1]
    named = _CANVAS_IN_PROMPT.search(messages[-1]["content"])
    images = [np.asarray(image) for m in messages for image in m.get("images") or []]
    if named:
        width, height = int(named[1]), int(named[2])
    elif images and prefix is None:
        height, width = images[-1].shape[:2]
    else:
        width = height = None
    return pipe.prepare_chat(messages, width, height, image_prefix=prefix)


def pipeline_chat_fn(pipe, batch_size: int = 32):
    """The benchmark's `chat_fn` over a pipeline, `batch_size` conversations per decode batch, each prepared by
    `chat_request`. A conversation the model cannot take (too long) gets an empty reply with its "error"."""

    def chat(conversations: list[list[dict]], seeds: list[int]) -> list[dict]:
        replies: list[dict] = [{"text": "", "images": []} for _ in conversations]
        answerable, requests = [], []
        for k, messages in enumerate(conversations):
            try:
                requests.append(chat_request(pipe, messages))
                answerable.append(k)
            except LuminaError as error:  # e.g. a conversation grown past the context by the model's replies
                replies[k]["error"] = str(error)
        for start in range(0, len(requests), batch_size):
            chunk = answerable[start : start + batch_size]
            outputs = pipe.chat_many(requests[start : start + batch_size], seed=[seeds[k] for k in chunk])
            for k, out in zip(chunk, outputs, strict=True):
                replies[k] = {"text": out.text, "images": out.images}
        return replies

    return chat


def evaluate(
    model: Annotated[
        str | None, typer.Option(help="Model folder or hub id; default: the shipped shapes model.")
    ] = None,
    out: Annotated[Path, typer.Option(help="Folder for the images, items.jsonl and summary.json.")] = Path(
        "eval"
    ),
    seed: Annotated[
        int, typer.Option(min=0, max=2**32 - 1, help="Seed of the benchmark's prompts and of sampling.")
    ] = 0,
    prompts: Annotated[
        int, typer.Option(min=1, help="Prompts per category (and items per omni task).")
    ] = 100,
    images_per_prompt: Annotated[int, typer.Option(min=1, help="Images drawn for each prompt.")] = 1,
    canvas: Annotated[
        list[str] | None, typer.Option(help="Canvas WxH (repeatable); default 128x128 160x96 96x160.")
    ] = None,
    tasks: Annotated[
        str | None, typer.Option(help="Comma-separated omni tasks, 'none', or all (default).")
    ] = None,
    t2i: Annotated[bool, typer.Option(help="Score the text-to-image categories.")] = True,
    device: Annotated[str | None, typer.Option(help="cpu or cuda (default: cpu).")] = None,
    batch_size: Annotated[int, typer.Option(min=1, help="Prompts or conversations per decode batch.")] = 32,
    tensor_parallel: TensorParallelOption = 1,
) -> None:
    """Run the shapes-world benchmark and print a GenEval-style table."""
    from lumina_mgpt.model.parallel import owns_files
    from lumina_mgpt.pipeline import LuminaMGPTPipeline
    from lumina_mgpt.unirep import parse_size
    from lumina_mgpt.world import DEFAULT_CANVASES, OMNI_KINDS, format_table, run_benchmark

    chosen = list(OMNI_KINDS) if tasks in (None, "all") else [] if tasks == "none" else tasks.split(",")
    if not t2i and not chosen:
        raise LuminaError("nothing to evaluate: --no-t2i with --tasks none")
    canvases = (
        list(dict.fromkeys(parse_size(c, "canvas") for c in canvas)) if canvas else list(DEFAULT_CANVASES)
    )
    check_output_folder(out)
    pipe = LuminaMGPTPipeline.from_pretrained(model, device=device, tensor_parallel=tensor_parallel)
    if not owns_files():  # every rank runs the same decode batches; rank 0's files are the results
        scratch = tempfile.TemporaryDirectory(prefix="lumina-eval-rank-")  # removed when the process ends
        out = Path(scratch.name)
    summary = run_benchmark(
        pipeline_generate_fn(pipe, batch_size) if t2i else None,
        pipeline_chat_fn(pipe, batch_size) if chosen else None,
        seed=seed,
        n_prompts=prompts,
        images_per_prompt=images_per_prompt,
        canvases=canvases,
        tasks=chosen,
        out_dir=out,
    )
    (out / "settings.json").write_text(
        json.dumps(
            {
                "model": model or "default",
                "seed": seed,
                "prompts": prompts,
                "images_per_prompt": images_per_prompt,
                "canvases": canvases,
                "tasks": chosen,
            },
            indent=2,
        )
    )
    if owns_files():
        typer.echo(format_table(summary))


def train_tokenizer(
    out: Annotated[Path, typer.Option(help="Folder to write tokenizer.json into.")],
    vocab_size: Annotated[
        int, typer.Option(help="Total vocabulary: special, text and image-code tokens.")
    ] = 2048,
    image_tokenizer: Annotated[
        str | None,
        typer.Option(help="Its codebook size sets the image tokens; default: the shipped shapes VQ."),
    ] = None,
    max_size_units: Annotated[int, typer.Option(help="Largest image side, in 32-pixel units.")] = 8,
    samples: Annotated[int, typer.Option(min=1, help="World tasks whose texts train the BPE.")] = 20000,
    seed: Annotated[int, typer.Option(min=0, max=2**32 - 1, help="Seed of the sampled tasks.")] = 0,
) -> None:
    """Train the shapes world's BPE text tokenizer (kind "ours": release token names, `<img{k}>` codes)."""
    from lumina_mgpt.vq import load_image_tokenizer
    from lumina_mgpt.vq.loading import SHAPES_TOKENIZER
    from lumina_mgpt.world.corpus import train_world_tokenizer

    check_output_folder(out)
    codebook = load_image_tokenizer(image_tokenizer or SHAPES_TOKENIZER).codebook_size
    tokenizer = train_world_tokenizer(vocab_size, codebook, max_size_units, samples, seed)
    tokenizer.save(out)
    typer.echo(f"{tokenizer.vocab_size} tokens ({codebook} image codes) -> {out / 'tokenizer.json'}")


def extend_tokenizer(
    tokenizer: Annotated[str, typer.Argument(help="Tokenizer folder to extend (e.g. a model folder).")],
    out: Annotated[Path, typer.Option(help="Folder to write the extended tokenizer.json into.")],
    max_size_units: Annotated[int, typer.Option(help="Largest image side, in 32-pixel units.")] = 8,
) -> None:
    """Give every pixel coordinate (0 to the largest side) one token, keeping every existing id; a model of the
    old tokenizer trains on the new one with `grow_vocabulary: true`."""
    from lumina_mgpt.text import TextTokenizer
    from lumina_mgpt.world.corpus import coordinate_tokens

    check_output_folder(out)
    old = TextTokenizer.from_folder(tokenizer)
    new = old.with_numbers(coordinate_tokens(max_size_units))
    new.save(out)
    typer.echo(f"{old.vocab_size} -> {new.vocab_size} tokens -> {out / 'tokenizer.json'}")
