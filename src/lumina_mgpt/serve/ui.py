"""The web UI at `/ui` (Gradio): text-to-image with live row-by-row previews, and a multimodal chat.

Both tabs build the API's own request bodies and go through its validation and batcher, so UI and API
requests share decode batches and limits. Needs `gradio` (the `serve` extra).
"""

import math

import gradio as gr
from fastapi import FastAPI
from PIL import Image
from pydantic import ValidationError

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.pipeline import LuminaMGPTPipeline
from lumina_mgpt.serve.app import reply_parts, validation_error
from lumina_mgpt.serve.batcher import Batcher
from lumina_mgpt.serve.jobs import APIError, chat_job, image_job
from lumina_mgpt.serve.limits import Limits
from lumina_mgpt.serve.media import png_data_url
from lumina_mgpt.serve.schemas import ChatCompletionRequest, ImageGenerationRequest
from lumina_mgpt.text import IMAGE_PLACEHOLDER
from lumina_mgpt.unirep import buckets

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


def build_ui(batcher: Batcher, model_id: str) -> gr.Blocks:
    pipe, limits, preset = batcher.pipe, batcher.limits, batcher.pipe.preset
    sizes = size_presets(pipe, limits)

    async def generate(
        prompt: str,
        size: str,
        n: float,
        cfg: float,
        top_k: float | None,
        temperature: float,
        seed: float | None,
        speculative: bool,
    ):
        body = _body(
            ImageGenerationRequest,
            prompt=prompt,
            size=size,
            n=int(n),
            cfg_scale=float(cfg),
            top_k=int(top_k or 0),
            temperature=float(temperature),
            seed=int(seed or 0),
            speculative=bool(speculative),
            stream=True,
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

    async def chat(
        message: dict,
        shown: list,
        history: list,
        size: str,
        seed: float | None,
        cfg: float,
        max_tokens: float | None,
    ):
        files = [file["path"] if isinstance(file, dict) else file for file in message.get("files") or []]
        parts = [{"type": "text", "text": message.get("text") or ""}]
        for file in files:
            with Image.open(file) as image:
                parts.append({"type": "image_url", "image_url": {"url": png_data_url(image.convert("RGB"))}})
        turn = {"role": "user", "content": parts}
        body = _body(
            ChatCompletionRequest,
            messages=[*history, turn],
            size=size,
            seed=int(seed or 0),
            cfg_scale=float(cfg),
            max_tokens=int(max_tokens) if max_tokens else None,
        )
        try:
            job = await chat_job(pipe, limits, body, model_id)
            batcher.submit(job)
        except APIError as error:
            raise gr.Error(error.message) from None
        shown = [*shown, *_bubbles("user", parts[0]["text"], [Image.open(file) for file in files])]
        yield gr.MultimodalTextbox(value=None, interactive=False), shown, history
        try:
            result = await job.result()
        except APIError as error:
            raise gr.Error(error.message) from None
        finally:
            batcher.cancel(job)
        reply = {"role": "assistant", "content": reply_parts(result.output)}
        text = result.output.text.replace(IMAGE_PLACEHOLDER, " ").strip()
        shown = [*shown, *_bubbles("assistant", text, result.output.images)]
        yield gr.MultimodalTextbox(value=None, interactive=True), shown, [*history, turn, reply]

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
                    cfg = gr.Slider(0.0, 16.0, value=preset.t2i_cfg, step=0.5, label="CFG scale")
                    top_k = gr.Number(
                        value=preset.t2i_image.top_k, precision=0, minimum=0, label="Top-k (0 = all)"
                    )
                    temperature = gr.Slider(
                        0.0, 2.0, value=preset.t2i_image.temperature, step=0.05, label="Temperature"
                    )
                    seed = gr.Number(value=0, precision=0, minimum=0, label="Seed (image k uses seed + k)")
                    speculative = gr.Checkbox(
                        preset.speculative == "exact", label="Speculative decoding (exact)"
                    )
                    run = gr.Button("Generate", variant="primary", elem_id="generate")
                with gr.Column(scale=3):
                    gallery = gr.Gallery(label="Images", columns=2, format="png", elem_id="gallery")
                    status = gr.Markdown(elem_id="status")
            inputs = [prompt, size, n, cfg, top_k, temperature, seed, speculative]
            run.click(generate, inputs, [gallery, status], concurrency_limit=None)
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
                chat_cfg = gr.Slider(0.0, 16.0, value=preset.chat_cfg, step=0.5, label="CFG scale")
                max_tokens = gr.Number(
                    value=None, precision=0, minimum=1, label="Max new tokens (empty: default)"
                )
            history = gr.State([])
            box.submit(
                chat,
                [box, chatbot, history, chat_size, chat_seed, chat_cfg, max_tokens],
                [box, chatbot, history],
                concurrency_limit=None,
            )
    return demo


def _body(schema, **fields):
    """The API request body of a UI action; a bad value shows as the API's error message."""
    try:
        return schema(**fields)
    except ValidationError as error:
        raise gr.Error(validation_error(error.errors()).message) from None


def _bubbles(role: str, text: str, images: list[Image.Image]) -> list[dict]:
    """Chatbot messages: a text bubble (if any text), then one image bubble per image."""
    shown = [{"role": role, "content": text}] if text.strip() else []
    return shown + [{"role": role, "content": gr.Image(image, format="png")} for image in images]
