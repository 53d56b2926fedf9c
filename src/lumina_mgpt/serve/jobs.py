"""Units of work for the batcher: a validated text-to-image or chat request, its event channel and its result.

Building a job checks everything a request can get wrong (model, limits, size, sampling, images) and raises
`APIError` with the offending parameter, so nothing invalid ever reaches the decode worker. The worker thread
talks back through `emit` (thread-safe); the request's coroutine reads `events()`.
"""

import asyncio
import contextlib
import secrets
import threading
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, replace

from PIL import Image, ImageOps

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.generate.config import GenerationConfig
from lumina_mgpt.generate.tasks import task_message
from lumina_mgpt.pipeline import ChatOutput, ChatRequest, LuminaMGPTPipeline
from lumina_mgpt.serve.limits import Limits
from lumina_mgpt.serve.media import image_from_bytes, image_from_data_url
from lumina_mgpt.serve.schemas import (
    MAX_SEED,
    ChatCompletionRequest,
    ImageEditRequest,
    ImageGenerationRequest,
    ImagePart,
    TextPart,
    generation_options,
)
from lumina_mgpt.text import IMAGE_PLACEHOLDER, serialize
from lumina_mgpt.unirep import block_length, parse_size, t2i_prompt
from lumina_mgpt.vq.images import to_rgb


class APIError(Exception):
    """A request that cannot be served: the HTTP status and OpenAI's error fields."""

    def __init__(
        self,
        status: int,
        message: str,
        param: str | None = None,
        code: str | None = None,
        kind: str | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.message, self.param, self.code = status, message, param, code
        self.kind = kind or ("invalid_request_error" if status < 500 else "server_error")

    def body(self) -> dict:
        return {"error": {"message": self.message, "type": self.kind, "param": self.param, "code": self.code}}


@dataclass(frozen=True)
class ImageSettings:
    """Everything a decode batch shares: requests with equal settings can run as one batch."""

    width: int
    height: int
    config: GenerationConfig


@dataclass
class Partial:
    """A partial image: its finished latent rows, grey below."""

    image_index: int
    partial_index: int
    image: Image.Image
    rows: int  # finished latent rows
    total_rows: int


@dataclass
class Metrics:
    decode_id: int  # the server's decode counter: requests of one batch share it
    batch_requests: int
    batch_images: int
    queue_seconds: float
    decode_seconds: float


@dataclass
class ImageResult:
    images: list[Image.Image]
    seeds: list[int]
    output_tokens: int
    metrics: Metrics


@dataclass
class ChatResult:
    output: ChatOutput
    finish_reason: str  # "stop" or "length"
    metrics: Metrics


class Job:
    """A request in flight: created on the event loop, decoded on the worker thread."""

    def __init__(self, stream: bool) -> None:
        self.stream = stream
        self.cancelled = threading.Event()
        self.submitted = time.perf_counter()
        self.finished = False  # the final event (result or error) was read
        self._loop = asyncio.get_running_loop()
        self._events: asyncio.Queue = asyncio.Queue()

    @property
    def rows(self) -> int:
        return 1

    def emit(self, kind: str, data: object = None) -> None:
        """From the worker: "progress" (dict), "partial" (Partial), "done" (result) or "error" (APIError)."""
        with contextlib.suppress(RuntimeError):  # a closed event loop: nobody is listening any more
            self._loop.call_soon_threadsafe(self._events.put_nowait, (kind, data))

    async def events(self) -> AsyncIterator[tuple[str, object]]:
        """Progress and partial events (streaming jobs only), then ("done", result); an error is raised."""
        while True:
            kind, data = await self._events.get()
            if kind == "error":
                self.finished = True
                raise data
            if kind == "done":
                self.finished = True
            yield kind, data
            if kind == "done":
                return

    async def result(self) -> ImageResult | ChatResult:
        async for kind, data in self.events():
            if kind == "done":
                return data
        raise AssertionError("a job's events end with its result")


class ImagesJob(Job):
    """A job whose result is `n` images (image k uses seed + k), sent back as `output_format`."""

    def __init__(self, n: int, seed: int, stream: bool) -> None:
        super().__init__(stream)
        self.n, self.seed = n, seed
        self.output_format, self.output_compression = "png", None

    @property
    def rows(self) -> int:
        return self.n


class ImageJob(ImagesJob):
    def __init__(
        self, prompt: str, n: int, settings: ImageSettings, seed: int, prompt_tokens: int, stream: bool
    ) -> None:
        super().__init__(n, seed, stream)
        self.prompt, self.settings, self.prompt_tokens = prompt, settings, prompt_tokens

    @property
    def rows(self) -> int:
        return self.n * self.settings.config.best_of  # every candidate is a row of the decode batch

    @property
    def size(self) -> str:
        return f"{self.settings.width}x{self.settings.height}"


class EditJob(ImagesJob):
    """`n` edits of one image: the editing chat with its reply opened as an image, so each reply is exactly
    one image of the canvas; a mask keeps the input where it is opaque."""

    def __init__(
        self,
        request: ChatRequest,
        n: int,
        settings: GenerationConfig,
        seed: int,
        image: Image.Image,
        mask: Image.Image | None,
        stream: bool,
    ) -> None:
        super().__init__(n, seed, stream)
        self.request, self.settings, self.image, self.mask = request, settings, image, mask
        self.prompt_tokens = len(request.ids) - len(request.prefix)

    @property
    def size(self) -> str:
        return f"{self.request.width}x{self.request.height}"

    def finish(self, edited: Image.Image) -> Image.Image:
        """The edited image, with the input kept where the mask is opaque (alpha > 0)."""
        if self.mask is None:
            return edited
        keep = ImageOps.fit(self.mask, edited.size, Image.Resampling.NEAREST).point(lambda a: 255 * (a > 0))
        return Image.composite(ImageOps.fit(self.image, edited.size, Image.Resampling.BICUBIC), edited, keep)


class ChatJob(Job):
    def __init__(
        self,
        messages: list[dict],
        canvas: tuple[int | None, int | None],
        settings: GenerationConfig,
        seed: int,
        stream: bool,
        image_prefix: Image.Image | None = None,
    ) -> None:
        super().__init__(stream)
        self.messages, self.canvas, self.settings, self.seed = messages, canvas, settings, seed
        self.image_markdown = False  # also write the reply's images into its text as markdown data URLs
        self.image_prefix = image_prefix  # the given upper part of the canvas (v2 i2i; web UI)


def image_job(
    pipe: LuminaMGPTPipeline, limits: Limits, body: ImageGenerationRequest, model_id: str
) -> ImageJob:
    """A validated text-to-image job; raises APIError naming the bad parameter."""
    _check_request(body, limits, model_id)
    config = _config(pipe, "t2i", body)
    if body.n * config.best_of > limits.max_images:
        raise APIError(
            400,
            f"n x best_of is {body.n * config.best_of}; this server draws at most {limits.max_images} images "
            "per request",
            "best_of",
        )
    if body.stream and config.best_of > 1:
        raise APIError(400, "a stream shows the rows of one drawing; use it with best_of 1", "stream")
    width, height = request_size(body.size, pipe.preset.canvas, limits)
    message = {"role": "user", "content": t2i_prompt(body.prompt, width, height)}
    prompt_tokens = len(serialize([message], pipe.text_tokenizer, pipe.layout)[0]) + 1  # + the image start
    try:
        pipe.check_size(width, height, prompt_tokens)
    except LuminaError as error:
        raise APIError(400, str(error), "size") from None
    settings = ImageSettings(width, height, config)
    seed = secrets.randbelow(MAX_SEED) if body.seed is None else body.seed
    job = ImageJob(body.prompt, body.n, settings, seed, prompt_tokens, body.stream)
    job.output_format, job.output_compression = body.output_format, body.output_compression
    return job


async def edit_job(
    pipe: LuminaMGPTPipeline,
    limits: Limits,
    body: ImageEditRequest,
    image: bytes,
    mask: bytes | None,
    model_id: str,
) -> EditJob:
    """A validated edit job: the editing task's message (`{prompt} <|image|>`) on the uploaded image."""
    _check_request(body, limits, model_id)
    config = _config(pipe, "edit", body)
    canvas = None if body.size in (None, "auto") else request_size(body.size, pipe.preset.canvas, limits)
    picture = _upload(image, limits, "image")
    alpha = None
    if mask is not None:
        held = _upload(mask, limits, "mask")
        if "A" not in held.getbands():
            raise APIError(
                400, "the mask needs an alpha channel (transparent where the image is edited)", "mask"
            )
        if held.size != picture.size:
            raise APIError(
                400,
                f"the mask is {held.width}x{held.height} but the image {picture.width}x{picture.height}",
                "mask",
            )
        alpha = held.getchannel("A")
    picture = to_rgb(picture)
    content = task_message("edit", body.prompt, *(canvas or pipe.preset.canvas))
    messages = [{"role": "user", "content": content, "images": [picture]}]
    try:
        prepared = await asyncio.to_thread(pipe.prepare_chat, messages, *(canvas or (None, None)))
    except LuminaError as error:
        raise APIError(400, str(error), "size" if canvas else "image") from None
    start = [pipe.layout.image_start_id]
    request = ChatRequest(prepared.ids + start, prepared.width, prepared.height, start, with_images=True)
    try:
        pipe.check_size(request.width, request.height, len(request.ids))
    except LuminaError as error:
        raise APIError(400, str(error), "size") from None
    settings = replace(config, max_new_tokens=block_length(request.width, request.height, pipe.layout) - 1)
    seed = secrets.randbelow(MAX_SEED) if body.seed is None else body.seed
    job = EditJob(request, body.n, settings, seed, picture, alpha, body.stream)
    job.output_format, job.output_compression = body.output_format, body.output_compression
    return job


def _check_request(body: ImageGenerationRequest, limits: Limits, model_id: str) -> None:
    """The checks an image request's common fields need: model, response format, n, prompt."""
    _check_model(body.model, model_id)
    if body.response_format == "url":
        raise APIError(
            400,
            "response_format 'url' is not supported (this server stores no files); use 'b64_json'",
            "response_format",
            "unsupported_response_format",
        )
    if body.n > limits.max_images:
        raise APIError(
            400, f"n is {body.n}; this server makes at most {limits.max_images} images per request", "n"
        )
    _check_text(body.prompt, limits, "prompt")
    if IMAGE_PLACEHOLDER in body.prompt:
        raise APIError(400, f"a prompt cannot hold {IMAGE_PLACEHOLDER}", "prompt")


def _upload(data: bytes, limits: Limits, param: str) -> Image.Image:
    try:
        return image_from_bytes(data, limits.max_input_pixels, f"the {param} file")
    except LuminaError as error:
        raise APIError(400, str(error), param) from None


async def chat_job(
    pipe: LuminaMGPTPipeline,
    limits: Limits,
    body: ChatCompletionRequest,
    model_id: str,
    image_prefix: Image.Image | None = None,
) -> ChatJob:
    """A validated chat job: image parts become `<|image|>` placeholders and images (decoded in a thread); the
    preset's config is that of a chat with images when it holds one (or an `image_prefix`)."""
    _check_model(body.model, model_id)
    width = height = None
    if body.size is not None and body.size != "auto":
        width, height = request_size(body.size, pipe.preset.canvas, limits)
        try:
            pipe.check_size(width, height)
        except LuminaError as error:
            raise APIError(400, str(error), "size") from None
    messages = await asyncio.to_thread(chat_messages, body, limits)
    with_images = image_prefix is not None or any(m.get("images") for m in messages)
    settings = _config(pipe, "chat", body, with_images)
    if body.max_completion_tokens is not None:
        settings = replace(settings, max_new_tokens=body.max_completion_tokens)
    if settings.max_new_tokens is not None and settings.max_new_tokens > limits.max_new_tokens:
        raise APIError(
            400,
            f"max_tokens is {settings.max_new_tokens}; this server allows at most {limits.max_new_tokens}",
            "max_tokens",
        )
    seed = secrets.randbelow(MAX_SEED) if body.seed is None else body.seed
    job = ChatJob(messages, (width, height), settings, seed, body.stream, image_prefix)
    job.image_markdown = body.image_markdown
    return job


def chat_messages(body: ChatCompletionRequest, limits: Limits) -> list[dict]:
    """The pipeline's messages (`role`, `content` with placeholders, `images`) of a chat request."""
    messages, count = [], 0
    for i, message in enumerate(body.messages):
        parts = (
            [TextPart(type="text", text=message.content)]
            if isinstance(message.content, str)
            else message.content
        )
        text, images = [], []
        if message.images:
            if message.role != "assistant" or not isinstance(message.content, str):
                raise APIError(
                    400, "only assistant messages with text content carry 'images'", f"messages.{i}.images"
                )
            parts = _with_reply_images(message.content, message.images)
        for j, part in enumerate(parts):
            if part.type == "text":
                if IMAGE_PLACEHOLDER in part.text:
                    raise APIError(
                        400,
                        f"send images as image_url parts, not as {IMAGE_PLACEHOLDER} in text",
                        f"messages.{i}.content",
                    )
                text.append(part.text)
                continue
            count += 1
            if count > limits.max_chat_images:
                raise APIError(
                    400,
                    f"this server takes at most {limits.max_chat_images} images per chat request",
                    "messages",
                )
            try:
                images.append(image_from_data_url(part.image_url.url, limits.max_input_pixels))
            except LuminaError as error:
                raise APIError(400, str(error), f"messages.{i}.content.{j}.image_url.url") from None
            text.append(IMAGE_PLACEHOLDER)
        messages.append({"role": message.role, "content": "".join(text), "images": images})
    _check_text("".join(m["content"] for m in messages), limits, "messages")
    return messages


def _with_reply_images(content: str, images: list) -> list:
    """Content parts of an assistant reply sent back as `content` + `images` (each at its `offset`)."""
    parts, at = [], 0
    for image in sorted(images, key=lambda image: image.offset):
        offset = min(max(image.offset, at), len(content))
        parts += [
            TextPart(type="text", text=content[at:offset]),
            ImagePart(type="image_url", image_url=image.image_url),
        ]
        at = offset
    return [*parts, TextPart(type="text", text=content[at:])]


def request_size(size: str | None, default: tuple[int, int], limits: Limits) -> tuple[int, int]:
    """`(width, height)` of "WxH" ("auto" or None: `default`), within the server's pixel limit."""
    if size is None or size == "auto":
        return default
    try:
        width, height = parse_size(size)
    except LuminaError as error:
        raise APIError(400, f"{error}, or 'auto'", "size") from None
    if width * height > limits.max_pixels:
        raise APIError(
            400, f"size {width}x{height} is over this server's limit of {limits.max_pixels} pixels", "size"
        )
    return width, height


def _check_model(requested: str | None, model_id: str) -> None:
    if requested is not None and requested != model_id:
        raise APIError(
            404,
            f"model {requested!r} is not served here; this server serves {model_id!r}",
            "model",
            "model_not_found",
        )


def _config(pipe: LuminaMGPTPipeline, use: str, body, with_images: bool = False) -> GenerationConfig:
    """The generation config of a request: the model's preset (of a chat with images when `with_images`) with
    the body's options (checked by the schema; a combination the config refuses is a 400)."""
    try:
        return pipe.generation_config(use, with_images=with_images, **generation_options(body, use))
    except LuminaError as error:
        raise APIError(400, str(error)) from None


def _check_text(text: str, limits: Limits, param: str) -> None:
    if len(text) > limits.max_prompt_chars:
        raise APIError(
            400,
            f"{param} has {len(text)} characters; this server takes at most {limits.max_prompt_chars}",
            param,
        )
