"""`lumina-mgpt generate` and `lumina-mgpt chat`: images and answers from the command line.

Both write their images as PNGs plus a `settings.json` of everything used (prompt, size, seed, sampling,
model, timings), and print one line per problem instead of a traceback (exit status 2).
"""

import functools
import inspect
import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Annotated

import typer
from PIL import Image, UnidentifiedImageError

from lumina_mgpt.cli_options import (
    DeviceOption,
    ImageTokenizerOption,
    ModelOption,
    TensorParallelOption,
    TextTokenizerOption,
)
from lumina_mgpt.errors import LuminaError
from lumina_mgpt.generate.config import check_options, options_of
from lumina_mgpt.generate.prompt_file import PromptLine, decode_batches, read_prompts
from lumina_mgpt.generate.tasks import TASK_NAMES, TASKS, task_message
from lumina_mgpt.generate.turns import file_turns, option_turns

DEFAULT_OUT = Path("out")


def generation_options(use: str) -> Callable[[Callable], Callable]:
    """Give a command a flag for every generation option of `use` (`generate/config.py`; not given: the
    model's preset) and call it with the given ones, checked before any model loads, as `options`."""
    specs = options_of(use)

    def flag(spec) -> inspect.Parameter:
        name = "--" + spec.name.replace("_", "-")
        names = {"cfg_scale": ("--cfg", "--cfg-scale"), "force_size": ("--force-size/--sample-size",)}
        names = names.get(spec.name) or ((f"{name}/--no-{name[2:]}",) if spec.kind is bool else (name,))
        help = spec.help if spec.optional else f"{spec.help} Default: the model's preset."
        option = typer.Option(*names, help=help, rich_help_panel="Generation options")
        return inspect.Parameter(
            spec.name,
            inspect.Parameter.KEYWORD_ONLY,
            default=None,
            annotation=Annotated[spec.kind | None, option],
        )

    def wrap(command: Callable) -> Callable:
        own = [p for p in inspect.signature(command).parameters.values() if p.name != "options"]

        @functools.wraps(command)
        def run(**kwargs):
            given = {spec.name: kwargs.pop(spec.name, None) for spec in specs}
            return command(**kwargs, options=check_options(use, **given))

        run.__signature__ = inspect.Signature([*own, *map(flag, specs)])
        return run

    return wrap


@generation_options("t2i")
def generate(
    prompt: Annotated[
        str | None, typer.Argument(help="What to draw (wrapped in the resolution-aware template).")
    ] = None,
    prompts: Annotated[
        Path | None,
        typer.Option(help='A file of prompts: one a line, or JSON lines {"prompt", "size", "seed"}.'),
    ] = None,
    size: Annotated[
        str | None, typer.Option(help="WxH in pixels, e.g. 768x512 (default: the model's canvas).")
    ] = None,
    num_images: Annotated[int, typer.Option("--num-images", "-n", help="Images to draw.")] = 1,
    batch_size: Annotated[
        int, typer.Option(min=1, help="Images decoded at once (memory); the images do not depend on it.")
    ] = 16,
    seed: Annotated[int, typer.Option(help="Image k uses seed + k.")] = 0,
    out: Annotated[Path, typer.Option(help="Folder for the PNGs and settings.json.")] = DEFAULT_OUT,
    model: ModelOption = None,
    text_tokenizer: TextTokenizerOption = None,
    image_tokenizer: ImageTokenizerOption = None,
    device: DeviceOption = None,
    compile: Annotated[bool, typer.Option(help="Compile the decode step (GPU; slow first call).")] = False,
    quantize: Annotated[
        str | None, typer.Option(help="Weight-only int8 or int4 decoder linears (int4: CUDA, bfloat16).")
    ] = None,
    tensor_parallel: TensorParallelOption = 1,
    options: dict | None = None,
) -> None:
    """Draw images from a text prompt."""
    from lumina_mgpt.model.quantize import QUANT_MODES  # torch: imported on use (quick --help)
    from lumina_mgpt.unirep import parse_size

    width, height = parse_size(size) if size else (None, None)
    if width is not None:
        _precheck_size(width, height, model, text_tokenizer)
    options = options or {}
    best_of = options.get("best_of", 1)
    if quantize is not None and quantize not in QUANT_MODES:
        raise LuminaError(f"--quantize must be one of {', '.join(QUANT_MODES)}, got {quantize!r}")
    if num_images < 1:
        raise LuminaError(f"--num-images must be >= 1, got {num_images}")
    if (prompt is None) == (prompts is None):
        raise LuminaError("give a PROMPT or --prompts FILE (one of them)")
    if prompts is not None:
        if best_of != 1:
            raise LuminaError("--best-of draws one prompt's candidates; use it without --prompts")
        items = read_prompts(prompts)
        for w, h in {item.size for item in items if item.size}:
            _precheck_size(w, h, model, text_tokenizer)
    pipe = _load(model, text_tokenizer, image_tokenizer, device, compile, quantize, tensor_parallel)
    if prompts is not None:
        canvas = (width, height) if width else None
        _generate_prompts(pipe, items, canvas, num_images, batch_size, seed, options, out, model)
        return
    results, files = [], []
    for first in range(0, num_images, batch_size):  # image k keeps seed + k (x best_of) whatever the batching
        result = pipe(
            prompt,
            width,
            height,
            min(batch_size, num_images - first),
            seed=seed + first * best_of,
            progress=sys.stderr.isatty(),
            **options,
        )
        files += _save_images(result.images, out, "image", first)
        results.append(result)
    from lumina_mgpt.model.parallel import owns_files

    if not owns_files():  # another rank of this tensor-parallel job writes the files
        return
    seconds = sum(r.stats["seconds"] for r in results)
    stats = (
        results[0].stats if len(results) == 1 else {"batches": [r.stats for r in results], "seconds": seconds}
    )
    size_used = f"{result.images[0].width}x{result.images[0].height}"
    _write_settings(
        out,
        {
            "command": "generate",
            "prompt": prompt,
            "size": size_used,
            "num_images": num_images,
            "seed": seed,
            "sampling": result.settings,
            "best_of": best_of,
            "scores": None if best_of == 1 else [score for r in results for score in r.scores],
            "quantize": quantize,
            "stats": stats,
            "files": files,
            **_model_info(pipe, model),
        },
    )
    typer.echo(f"wrote {len(files)} image(s) to {out} ({seconds:.1f} s)")
    _note_older_images(out, files)


@generation_options("chat")
def chat(
    text: Annotated[
        str, typer.Argument(help="The instruction, caption, question or object (task dependent).")
    ] = "",
    task: Annotated[str, typer.Option(help=f"One of: {', '.join(TASK_NAMES)}.")] = "free",
    turn: Annotated[
        list[str] | None,
        typer.Option(help="A user turn (repeat for a multi-turn chat; TEXT, if given, is the first)."),
    ] = None,
    image: Annotated[
        list[Path] | None,
        typer.Option(help='Input image; with --turn, --image k goes with turn k ("" for none).'),
    ] = None,
    conversation: Annotated[
        Path | None,
        typer.Option(help="A JSON conversation file: a list of {text, task, images, map, frames}."),
    ] = None,
    size: Annotated[str | None, typer.Option(help="WxH of images the model draws.")] = None,
    map_name: Annotated[str, typer.Option("--map", help="Map of the dual-panel tasks.")] = "segmentation map",
    frames: Annotated[int, typer.Option(help="Number of frames of the frames task.")] = 2,
    seed: Annotated[int, typer.Option(help="Turn k uses seed + k.")] = 0,
    out: Annotated[
        Path, typer.Option(help="Folder for the PNGs, chat.json and settings.json.")
    ] = DEFAULT_OUT,
    model: ModelOption = None,
    text_tokenizer: TextTokenizerOption = None,
    image_tokenizer: ImageTokenizerOption = None,
    device: DeviceOption = None,
    tensor_parallel: TensorParallelOption = 1,
    options: dict | None = None,
) -> None:
    """A multimodal chat, one or more turns: editing, dense prediction, condition to image, QA, frames, dual
    panels. Each reply's text goes to stdout, its images to --out, the whole conversation to chat.json."""
    if conversation is not None:
        if turn or text or image:
            raise LuminaError("give either --conversation or TEXT/--turn/--image, not both")
        turns = file_turns(conversation, task)
    else:
        turns = option_turns(
            [text, *(turn or [])] if text or not turn else list(turn), image or [], task, frames=frames
        )
    inputs = [[_read_image(path) for path in t.images] for t in turns]
    from lumina_mgpt.model.parallel import owns_files  # torch: imported on use (quick --help)
    from lumina_mgpt.unirep import parse_size

    width, height = parse_size(size) if size else (None, None)
    if width is not None:
        _precheck_size(width, height, model, text_tokenizer)
    pipe = _load(model, text_tokenizer, image_tokenizer, device, False, tensor_parallel=tensor_parallel)
    messages, transcript, files, replies = [], [], [], []
    for k, (spec, images) in enumerate(zip(turns, inputs, strict=True)):
        prefix = images.pop() if TASKS[spec.task].prefix and images else None
        canvas = (
            (width, height) if width else (prefix.width, 2 * prefix.height) if prefix else pipe.preset.canvas
        )
        if k and TASKS[spec.task].images > 0 and not spec.images:
            content = spec.text  # a later turn of an edit: the instruction alone, on the latest image
        else:
            content = task_message(
                spec.task,
                spec.text,
                *canvas,
                map_name=spec.map_name or map_name,
                frames=spec.frames or frames,
            )
        messages.append({"role": "user", "content": content, "images": images})
        reply = pipe.chat(
            messages,
            width,
            height,
            seed=seed + k,
            image_prefix=prefix,
            progress=sys.stderr.isatty(),
            **(options or {}),
        )
        drawn = _save_images(reply.images, out, f"turn{k + 1}_reply") if reply.images else []
        messages.append({"role": "assistant", "content": reply.text, "images": reply.images})
        transcript += [
            {"role": "user", "task": spec.task, "content": content, "images": [str(p) for p in spec.images]},
            {"role": "assistant", "content": reply.text, "images": drawn},
        ]
        files += drawn
        replies.append(reply)
        if not owns_files():  # another rank of this tensor-parallel job writes and prints
            continue
        typer.echo(reply.text)
        if drawn:
            typer.echo(f"turn {k + 1}: wrote {', '.join(drawn)} to {out}", err=True)
    if not owns_files():
        return
    _write_json(out / "chat.json", {"messages": transcript})
    _write_settings(
        out,
        {
            "command": "chat",
            "task": turns[0].task,
            "message": transcript[0]["content"],
            "inputs": transcript[0]["images"],
            "reply": replies[0].text,
            "turns": len(turns),
            "seed": seed,
            "sampling": replies[-1].settings,
            "stats": replies[0].stats if len(replies) == 1 else [r.stats for r in replies],
            "files": files,
            **_model_info(pipe, model),
        },
    )
    if files:
        _note_older_images(out, files)


def _generate_prompts(
    pipe,
    items: list[PromptLine],
    size: tuple[int, int] | None,
    num_images: int,
    batch_size: int,
    seed: int,
    sampling: dict,
    out: Path,
    model: str | None,
) -> None:
    """Draw `num_images` of every prompt of a prompts file in decode batches of one size; image j of prompt i
    is `image_{i * num_images + j}.png` with seed (the line's seed, else seed + i * num_images) + j."""
    entries: list[dict | None] = [None] * len(items)
    seconds, files = 0.0, []
    for canvas, indices in decode_batches(items, size, num_images, batch_size):
        seeds = [
            (items[i].seed if items[i].seed is not None else seed + i * num_images) + j
            for i in indices
            for j in range(num_images)
        ]
        width, height = canvas or (None, None)
        result = pipe(
            [items[i].prompt for i in indices],
            width,
            height,
            num_images,
            seed=seeds,
            progress=sys.stderr.isatty(),
            **sampling,
        )
        seconds += result.stats["seconds"]
        for k, i in enumerate(indices):
            images = result.images[k * num_images : (k + 1) * num_images]
            names = _save_images(images, out, "image", i * num_images)
            files += names
            entries[i] = {
                "prompt": items[i].prompt,
                "line": items[i].line,
                "size": f"{images[0].width}x{images[0].height}",
                "seeds": seeds[k * num_images : (k + 1) * num_images],
                "files": names,
            }
    from lumina_mgpt.model.parallel import owns_files

    if not owns_files():  # another rank of this tensor-parallel job writes the files
        return
    _write_settings(
        out,
        {
            "command": "generate",
            "prompts": entries,
            "num_images": num_images,
            "sampling": result.settings,
            "seconds": seconds,
            "files": sorted(files),
            **_model_info(pipe, model),
        },
    )
    typer.echo(f"wrote {len(files)} image(s) of {len(items)} prompt(s) to {out} ({seconds:.1f} s)")
    _note_older_images(out, files)


def _precheck_size(width: int, height: int, model: str | None, text_tokenizer: str | None) -> None:
    """Refuse an impossible size from the model's config and tokenizer alone, before loading weights."""
    from lumina_mgpt.loading import model_limits
    from lumina_mgpt.unirep import check_size

    check_size(width, height, *model_limits(model, text_tokenizer))


def _load(
    model: str | None,
    text_tokenizer: str | None,
    image_tokenizer: str | None,
    device: str | None,
    compile: bool,
    quantize: str | None = None,
    tensor_parallel: int = 1,
):
    from lumina_mgpt.pipeline import LuminaMGPTPipeline  # heavy imports only once the arguments are fine

    return LuminaMGPTPipeline.from_pretrained(
        model,
        device=device,
        text_tokenizer=text_tokenizer,
        image_tokenizer=image_tokenizer,
        compile=compile,
        quantize=quantize,
        tensor_parallel=tensor_parallel,
    )


def _read_image(path: Path) -> Image.Image:
    from lumina_mgpt.vq.images import to_rgb  # imports torch

    try:
        with Image.open(path) as image:
            return to_rgb(image)
    except FileNotFoundError:
        raise LuminaError(f"image file {path} does not exist") from None
    except (UnidentifiedImageError, OSError):
        raise LuminaError(f"{path} is not an image file") from None


def _save_images(images: list[Image.Image], out: Path, stem: str, first: int = 0) -> list[str]:
    """Write `stem_NNN.png` files numbered from `first` (rank 0 only in a tensor-parallel job); their names."""
    from lumina_mgpt.model.parallel import owns_files

    names = [f"{stem}_{index:03d}.png" for index in range(first, first + len(images))]
    if not owns_files():
        return names
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise LuminaError(f"cannot create output folder {out} ({error.strerror})") from None
    for name, image in zip(names, images, strict=True):
        image.save(out / name)
    return names


def _note_older_images(out: Path, files: list[str]) -> None:
    """Say on stderr when `out` also holds PNGs this run did not write (they are kept, but settings.json
    describes only this run)."""
    older = sorted(p.name for p in out.glob("*.png") if p.name not in files)
    if older:
        typer.echo(
            f"note: {out} also holds {len(older)} image(s) of earlier runs ({', '.join(older[:3])}"
            f"{', ...' if len(older) > 3 else ''}); settings.json describes this run only",
            err=True,
        )


def _write_settings(out: Path, settings: dict) -> None:
    _write_json(out / "settings.json", settings)


def _write_json(file: Path, data: dict) -> None:
    """Write JSON atomically (a crash leaves the old file or the new one, never half of one)."""
    file.parent.mkdir(parents=True, exist_ok=True)
    partial = file.with_name(file.name + ".partial")
    partial.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    partial.replace(file)


def _model_info(pipe, model: str | None) -> dict:
    return {"model": model or "default (shapes)", "family": pipe.layout.name}
