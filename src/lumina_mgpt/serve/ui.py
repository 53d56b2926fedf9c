"""The web UI at `/ui` (Gradio): text-to-image with live row-by-row previews, every task from presets (the
exact message of each task, with an example image), and a multimodal chat that keeps the latest image.

The tabs build the API's own request bodies and go through its validation and batcher, so UI and API
requests share decode batches and limits. Every generation option of a tab's use (`generate/config.py`) is a
control (`option_controls`), its value the model's preset, its limits the config's; an option whose preset
differs between chats of text alone and chats that hold an image starts empty, so the server picks by the
conversation. Needs `gradio` (the `serve` extra).
"""

import math
import tempfile
from pathlib import Path

import gradio as gr
from fastapi import FastAPI
from PIL import Image
from pydantic import ValidationError

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.generate.config import GenerationConfig, Option, options_of
from lumina_mgpt.generate.tasks import TASKS
from lumina_mgpt.pipeline import LuminaMGPTPipeline
from lumina_mgpt.serve.app import validation_error
from lumina_mgpt.serve.batcher import Batcher
from lumina_mgpt.serve.jobs import APIError, chat_job, image_job
from lumina_mgpt.serve.limits import Limits
from lumina_mgpt.serve.media import png_data_url
from lumina_mgpt.serve.presets import draws_from_words, example_image, presets_for
from lumina_mgpt.serve.schemas import CHAT_NAMES, ChatCompletionRequest, ImageGenerationRequest
from lumina_mgpt.text import IMAGE_PLACEHOLDER
from lumina_mgpt.unirep import block_length, buckets, parse_size

UI_PATH = "/ui"


def mount_ui(app: FastAPI, batcher: Batcher, model_id: str) -> FastAPI:
    return gr.mount_gradio_app(app, build_ui(batcher, model_id), path=UI_PATH, ssr_mode=False)


def size_presets(pipe: LuminaMGPTPipeline, limits: Limits) -> list[str]:
    """ "WxH" choices: the model's canvas first, then the aspect-ratio buckets of its area and of a quarter of
    it (quick drafts), keeping those the model can draw within the server's pixel limit."""
    unit, canvas = pipe.layout.size_unit_px, pipe.preset.canvas
    side = round(math.sqrt(canvas[0] * canvas[1]) / unit) * unit
    half = side // 2 // unit * unit
    candidates = set(buckets(side, unit)) | (set(buckets(half, unit)) if half else set())
    sizes = [canvas, *sorted(candidates - {canvas}, key=lambda s: (-s[0] * s[1], -s[0]))]

    def allowed(width: int, height: int) -> bool:
        try:
            pipe.check_size(width, height)
        except LuminaError:
            return False
        return width * height <= limits.max_pixels

    return [f"{w}x{h}" for w, h in sizes if allowed(w, h)]


def option_control(spec: Option, value: object, elem_id: str) -> gr.components.Component:
    """The control of one generation option: a checkbox, a choice or a number within the option's limits (an
    optional number's control shows its default, None, as 0)."""
    label = f"{spec.help} 0: the default." if spec.optional else spec.help
    if spec.kind is bool:
        return gr.Checkbox(value, label=label, elem_id=elem_id)
    if spec.choices:
        return gr.Dropdown(list(spec.choices), value=value, label=label, elem_id=elem_id)
    return _number(spec, 0 if value is None else value, label, elem_id)


def per_kind_control(spec: Option, text: object, images: object, elem_id: str) -> gr.components.Component:
    """The control of an option whose default differs between a chat of text alone (`text`) and one that holds
    an image (`images`): it starts empty, and left empty the server picks the default by the conversation."""
    label = f"{spec.help} Empty: the model's default, {text} for a chat of text alone, {images} for one with an image."
    if spec.kind is bool:
        return gr.Dropdown(["true", "false"], value=None, label=label, elem_id=elem_id)
    if spec.choices:
        return gr.Dropdown(list(spec.choices), value=None, label=label, elem_id=elem_id)
    return _number(spec, None, label, elem_id)


def _number(spec: Option, value: float | None, label: str, elem_id: str) -> gr.Number:
    return gr.Number(
        value,
        minimum=0 if spec.optional else spec.minimum,
        maximum=spec.high,
        precision=0 if spec.kind is int else None,
        label=label,
        elem_id=elem_id,
    )


def option_controls(
    use: str, config: GenerationConfig, prefix: str, with_images: GenerationConfig | None = None
) -> dict[str, gr.components.Component]:
    """A control per generation option of `use`, showing `config`'s values (made inside a Blocks context); with
    `with_images` (the config of a chat that holds an image), an option whose two defaults differ gets a
    `per_kind_control`."""
    controls = {}
    for spec in options_of(use):
        value, elem_id = getattr(config, spec.name), f"{prefix}-{spec.name.replace('_', '-')}"
        other = value if with_images is None else getattr(with_images, spec.name)
        controls[spec.name] = (
            option_control(spec, value, elem_id)
            if other == value
            else per_kind_control(spec, value, other, elem_id)
        )
    return controls


def request_options(use: str, values: tuple) -> dict[str, object]:
    """The request fields of the controls' `values` (in `option_controls` order); empty ones are left out."""
    names = CHAT_NAMES if use == "chat" else {}
    fields = {}
    for spec, value in zip(options_of(use), values, strict=True):
        if spec.kind is bool and isinstance(value, str):  # a per-kind control's choice
            value = value == "true"
        if value is not None and not (spec.optional and value == 0):
            number = spec.kind in (int, float) and not isinstance(value, bool)
            whole = number and spec.kind is int and float(value).is_integer()
            fields[names.get(spec.name, spec.name)] = int(value) if whole else value
    return fields


def build_ui(batcher: Batcher, model_id: str) -> gr.Blocks:
    pipe, limits, preset = batcher.pipe, batcher.limits, batcher.pipe.preset
    sizes = size_presets(pipe, limits)
    tasks = {p.name: p for p in presets_for(pipe.layout.name)}
    files = Path(tempfile.mkdtemp(prefix="lumina-ui-"))  # example images and downloads
    examples = {}
    for name, task in tasks.items():
        if task.example is not None:
            examples[name] = files / f"example_{len(examples)}.png"
            Image.fromarray(example_image(task.example, *preset.canvas)).save(examples[name])

    async def generate(prompt: str, size: str, n: float, seed: float | None, *values):
        options = request_options("t2i", values)
        body = _body(
            ImageGenerationRequest,
            prompt=prompt,
            size=size,
            n=int(n),
            seed=int(seed or 0),
            stream=options.get("best_of", preset.t2i.best_of) == 1,  # best-of shows the picks only
            **options,
        )
        try:
            job = image_job(pipe, limits, body, model_id)
            batcher.submit(job)
        except APIError as error:
            raise gr.Error(error.message) from None
        previews: list[Image.Image | None] = [None] * job.n
        try:
            async for kind, data in job.events():
                if kind == "partial":
                    previews[data.image_index] = data.image
                    yield (
                        [p for p in previews if p is not None],
                        f"Drawing row {data.rows} of {data.total_rows}…",
                    )
                elif kind == "done":
                    batch = data.metrics.batch_requests
                    shared = f", in one batch with {batch - 1} other request(s)" if batch > 1 else ""
                    yield (
                        [
                            (image, f"seed {seed}")
                            for image, seed in zip(data.images, data.seeds, strict=True)
                        ],
                        f"Done: {len(data.images)} image(s) of {size} in {data.metrics.decode_seconds:.1f} s"
                        f"{shared}.",
                    )
        except APIError as error:
            raise gr.Error(error.message) from None
        finally:
            batcher.cancel(job)  # does nothing once finished; stops the work of a closed page

    def fill_task(name: str, size: str):
        """The preset's exact message for the chosen size, and its example image."""
        task = tasks[name]
        image = Image.open(examples[name]) if name in examples else None
        return task.message(*parse_size(size)), image

    async def run_task(
        name: str, size: str, message: str, image: Image.Image | None, seed: float | None, *values
    ):
        task = tasks[name]
        width, height = parse_size(size)
        spec = TASKS[task.task]
        if spec.images and image is None:
            raise gr.Error(f"{name} needs an input image: upload one (or pick the preset again)")
        pieces = message.split(IMAGE_PLACEHOLDER)
        if len(pieces) > 1 and image is None:
            raise gr.Error(f"the message holds {IMAGE_PLACEHOLDER} but there is no input image")
        parts = [{"type": "text", "text": pieces[0]}]
        for piece in pieces[1:]:
            parts += [{"type": "image_url", "image_url": {"url": png_data_url(image.convert("RGB"))}}]
            parts += [{"type": "text", "text": piece}]
        drawn = task.frames if task.task == "frames" else 1  # images the task draws: the reply's room
        options = request_options("chat", values)
        options.setdefault(
            "max_tokens", min(limits.max_new_tokens, drawn * block_length(width, height, pipe.layout) + 64)
        )
        body = _turn(parts, size, seed, options)
        result = await _answer(body, image.convert("RGB") if spec.prefix else None)
        text = result.output.text.replace(IMAGE_PLACEHOLDER, " ").strip()
        saved = _save(result.output.images, text, files)
        count = len(result.output.images)
        status = f"Done: {name}: {count} image(s) and {len(text)} character(s) in {result.metrics.decode_seconds:.1f} s."
        return result.output.images, text, status, saved

    async def _answer(body: ChatCompletionRequest, prefix: Image.Image | None):
        try:
            job = await chat_job(pipe, limits, body, model_id, prefix)
            batcher.submit(job)
        except APIError as error:
            raise gr.Error(error.message) from None
        try:
            return await job.result()
        except APIError as error:
            raise gr.Error(error.message) from None
        finally:
            batcher.cancel(job)

    async def chat(
        message: dict,
        shown: list,
        latest: Image.Image | None,
        size: str,
        seed: float | None,
        *values,
    ):
        """One turn, sent with its own images, else with the latest image (the last one uploaded or drawn)
        unless the message is a task that draws from words alone; the context is that image, not the
        earlier turns (which derail the models)."""
        uploads = [file["path"] if isinstance(file, dict) else file for file in message.get("files") or []]
        text = message.get("text") or ""
        images = [Image.open(file).convert("RGB") for file in uploads]
        if not images and latest is not None and not draws_from_words(text):
            images = [latest]
        parts = [{"type": "text", "text": text}]
        parts += [{"type": "image_url", "image_url": {"url": png_data_url(image)}} for image in images]
        body = _turn(parts, size, seed, request_options("chat", values))
        shown = [*shown, *_bubbles("user", text, images if uploads else [])]
        yield gr.MultimodalTextbox(value=None, interactive=False), shown, latest, None
        result = await _answer(body, None)
        reply = result.output.text.replace(IMAGE_PLACEHOLDER, " ").strip()
        shown = [*shown, *_bubbles("assistant", reply, result.output.images)]
        latest = (result.output.images or images or [latest])[-1]
        saved = _save(result.output.images, reply, files)
        yield gr.MultimodalTextbox(value=None, interactive=True), shown, latest, saved

    # no telemetry; Gradio's copies of shown images are deleted after an hour
    with gr.Blocks(
        title=f"Lumina-mGPT · {model_id}", analytics_enabled=False, delete_cache=(3600, 3600)
    ) as demo:
        gr.Markdown(f"### Lumina-mGPT · `{model_id}`")
        with gr.Tab("Text to image"):
            with gr.Row():
                with gr.Column(scale=2):
                    prompt = gr.Textbox(
                        label="Prompt", lines=3, max_length=limits.max_prompt_chars, elem_id="prompt"
                    )
                    size = gr.Dropdown(sizes, value=sizes[0], label="Size (W x H)", elem_id="size")
                    n = gr.Slider(1, limits.max_images, value=1, step=1, label="Images")
                    seed = gr.Number(value=0, precision=0, minimum=0, label="Seed (image k uses seed + k)")
                    run = gr.Button("Generate", variant="primary", elem_id="generate")
                    with gr.Accordion("Generation options", open=False):
                        t2i_options = option_controls("t2i", preset.t2i, "t2i")
                with gr.Column(scale=3):
                    gallery = gr.Gallery(label="Images", columns=2, format="png", elem_id="gallery")
                    status = gr.Markdown(elem_id="status")
            inputs = [prompt, size, n, seed, *t2i_options.values()]
            run.click(generate, inputs, [gallery, status], concurrency_limit=None)
        with gr.Tab("Tasks"):
            first = next(iter(tasks))
            message0, image0 = fill_task(first, sizes[0])
            with gr.Row():
                with gr.Column(scale=2):
                    task_name = gr.Dropdown(list(tasks), value=first, label="Task", elem_id="task-preset")
                    task_size = gr.Dropdown(sizes, value=sizes[0], label="Size (W x H)", elem_id="task-size")
                    task_message = gr.Textbox(
                        message0,
                        lines=4,
                        max_length=limits.max_prompt_chars,
                        label=f"Message ({IMAGE_PLACEHOLDER} is the input image)",
                        elem_id="task-message",
                    )
                    task_image = gr.Image(
                        image0, type="pil", image_mode="RGB", label="Input image", elem_id="task-image"
                    )
                    task_seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
                    task_run = gr.Button("Run", variant="primary", elem_id="task-run")
                    with gr.Accordion("Generation options", open=False):
                        task_options = option_controls("chat", preset.chat, "task", preset.chat_with_images)
                with gr.Column(scale=3):
                    task_gallery = gr.Gallery(label="Images", columns=2, format="png", elem_id="task-gallery")
                    task_text = gr.Textbox(label="Text reply", interactive=False, elem_id="task-text")
                    task_status = gr.Markdown(elem_id="task-status")
                    task_files = gr.File(
                        label="Download", file_count="multiple", interactive=False, elem_id="task-files"
                    )
            gr.Examples(
                [[name, str(path)] for name, path in examples.items()],
                [task_name, task_image],
                label="Examples",
                examples_per_page=len(examples) or 1,
                elem_id="task-examples",
            )
            task_name.change(fill_task, [task_name, task_size], [task_message, task_image])
            task_size.change(
                lambda name, size: fill_task(name, size)[0], [task_name, task_size], task_message
            )
            task_run.click(
                run_task,
                [task_name, task_size, task_message, task_image, task_seed, *task_options.values()],
                [task_gallery, task_text, task_status, task_files],
                concurrency_limit=None,
            )
        with gr.Tab("Chat"):
            chatbot = gr.Chatbot(label="Conversation", elem_id="chatbot", height=420)
            box = gr.MultimodalTextbox(
                file_types=["image"],
                file_count="multiple",
                elem_id="chat-input",
                show_label=False,
                placeholder="Ask, instruct or describe; attach images with the clip",
            )
            with gr.Accordion("Settings", open=False):
                chat_size = gr.Dropdown(
                    ["auto", *sizes], value="auto", label="Size of images the model draws"
                )
                chat_seed = gr.Number(value=0, precision=0, minimum=0, label="Seed")
                chat_options = option_controls("chat", preset.chat, "chat", preset.chat_with_images)
            chat_files = gr.File(label="Download the last reply", file_count="multiple", interactive=False)
            latest = gr.State(None)
            box.submit(
                chat,
                [box, chatbot, latest, chat_size, chat_seed, *chat_options.values()],
                [box, chatbot, latest, chat_files],
                concurrency_limit=None,
            )
    return demo


def _body(schema, **fields):
    """The API request body of a UI action; a bad value shows as the API's error message."""
    try:
        return schema(**fields)
    except ValidationError as error:
        raise gr.Error(validation_error(error.errors()).message) from None


def _turn(parts: list[dict], size: str, seed: float | None, options: dict):
    """The chat body of one user turn of content `parts`, with the generation options' request fields."""
    return _body(
        ChatCompletionRequest,
        messages=[{"role": "user", "content": parts}],
        size=size,
        seed=int(seed or 0),
        **options,
    )


def _save(images: list[Image.Image], text: str, folder: Path) -> list[str]:
    """A reply's images (PNG) and text as files to download, in a fresh subfolder of `folder`."""
    out = Path(tempfile.mkdtemp(dir=folder))
    paths = []
    for k, image in enumerate(images):
        image.save(out / f"image_{k:03d}.png")
        paths.append(str(out / f"image_{k:03d}.png"))
    if text:
        (out / "reply.txt").write_text(text + "\n", encoding="utf-8")
        paths.append(str(out / "reply.txt"))
    return paths


def _bubbles(role: str, text: str, images: list[Image.Image]) -> list[dict]:
    """Chatbot messages: a text bubble (if any text), then one image bubble per image."""
    shown = [{"role": role, "content": text}] if text.strip() else []
    return shown + [{"role": role, "content": gr.Image(image, format="png")} for image in images]
