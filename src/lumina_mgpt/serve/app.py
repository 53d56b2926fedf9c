"""The HTTP API: OpenAI-compatible image generation and chat over one pipeline, with the web UI at `/ui`.

    POST /v1/images/generations   {"prompt", "n", "size": "WxH", "response_format": "b64_json", "stream",
                                   + "seed" and the text-to-image generation options ("cfg_scale",
                                   "temperature", "top_k", "top_p", "speculative", "window", "best_of", ...;
                                   generate/config.py; null or absent: the model's preset)}
        -> {"created", "data": [{"b64_json", "seed"}], "size", "output_format": "png", "usage", "metrics"}
    POST /v1/images/edits         multipart form: "image" (file), "prompt", optional "mask" (a PNG whose
                                   alpha is 0 where the image may change), and the fields of generations
        -> as generations: n edits of the image (the editing task, `{prompt} <|image|>`), each reply exactly
           one image of the canvas ("size", else the image's own bucket); same streaming events but no
           partial images
    Generations and edits also take OpenAI's "output_format" (png, jpeg, webp) and "output_compression";
    "quality", "style", "moderation", "background" (auto/opaque), "user", "partial_images" and
    "input_fidelity" are accepted and ignored (listed in /v1/models as `ignored_fields`).
    POST /v1/chat/completions     {"messages": [{"role", "content": str | [{"type": "text", "text"} |
                                   {"type": "image_url", "image_url": {"url": "data:image/png;base64,."}}]}],
                                   "max_tokens", "seed", "temperature"/"top_p"/"top_k" (text), "size",
                                   "cfg_scale", "image_temperature"/"image_top_k"/"image_top_p", "stream"
                                   and the other chat generation options ("speculative", "window", ...)}
        -> a chat.completion whose message content is always the reply's text (a string); the images the
           model drew are in the message's extra field "images": [{"image_url": {"url":
           "data:image/png;base64,..."}, "offset"}] (offset: where in the text the image was). With
           "image_markdown": true the content also holds each image as a markdown data URL at its place.
           An assistant message sent back as history may carry the same "images" field.
    GET  /v1/models (with each endpoint's generation defaults), GET /health  (/health also counts decodes,
                                   batched requests and cancellations)

With `"stream": true` the reply is server-sent events. Images: `image_generation.progress` ({step, total,
progress}), `image_generation.partial_image` after each finished latent row of each image (OpenAI's fields
plus `image_index`, `rows`, `total_rows`), one `image_generation.completed` per image, then `data: [DONE]`.
Chat: `chat.completion.chunk` objects (role, then empty deltas carrying `progress`, then the content and the
finish reason), then `data: [DONE]`. Every error is `{"error": {"message", "type", "param", "code"}}` with a
4xx status (5xx only for the server's own failures); a client that disconnects cancels its work.
"""

import asyncio
import json
import secrets
import time
from contextlib import asynccontextmanager
from dataclasses import asdict

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import ValidationError
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.pipeline import ChatOutput, LuminaMGPTPipeline
from lumina_mgpt.serve.batcher import Batcher
from lumina_mgpt.serve.jobs import (
    APIError,
    ChatJob,
    ChatResult,
    ImageResult,
    ImagesJob,
    Job,
    chat_job,
    edit_job,
    image_job,
)
from lumina_mgpt.serve.limits import Limits
from lumina_mgpt.serve.media import encoded_base64, png_data_url
from lumina_mgpt.serve.schemas import (
    IGNORED_IMAGE_FIELDS,
    ChatCompletionRequest,
    ImageEditRequest,
    ImageGenerationRequest,
    generation_defaults,
)
from lumina_mgpt.text import IMAGE_PLACEHOLDER

CLIENT_CLOSED = 499  # nginx's status for a request whose client went away (nobody reads it)


def create_app(
    pipeline: LuminaMGPTPipeline,
    limits: Limits | None = None,
    *,
    model_id: str = "lumina-mgpt",
    ui: bool = True,
) -> FastAPI:
    """The API over `pipeline` (decoded on one worker thread, started and stopped with the app), plus the
    Gradio UI at `/ui` when `ui` (needs the `serve` extra)."""
    limits = limits or Limits()
    batcher = Batcher(pipeline, limits)
    started = int(time.time())

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        batcher.start()
        yield
        await asyncio.to_thread(batcher.stop)

    app = FastAPI(title="Lumina-mGPT", summary="Text-to-image and multimodal chat", lifespan=lifespan)
    app.state.batcher = batcher
    app.add_middleware(_BodyLimit, limit=limits.max_body_bytes)
    _install_error_handlers(app)

    @app.get("/health")
    async def health() -> dict:
        return {"status": "ok", "model": model_id, **batcher.health()}

    @app.get("/v1/models")
    async def models() -> dict:
        canvas = "x".join(map(str, pipeline.preset.canvas))
        card = {
            "id": model_id,
            "object": "model",
            "created": started,
            "owned_by": "lumina-mgpt",
            "family": pipeline.layout.name,
            "default_size": canvas,
            "max_positions": pipeline.transformer.config.max_position_embeddings,
            "output_formats": ["png", "jpeg", "webp"],
            "ignored_fields": list(IGNORED_IMAGE_FIELDS),
            "generation_defaults": generation_defaults(pipeline.preset),
        }
        return {"object": "list", "data": [card]}

    @app.post("/v1/images/generations")
    async def generations(body: ImageGenerationRequest, request: Request) -> Response:
        return await _images_reply(image_job(pipeline, limits, body, model_id), request)

    @app.post("/v1/images/edits", openapi_extra=_EDIT_FORM)
    async def edits(request: Request) -> Response:
        body, image, mask = await _edit_form(request)
        return await _images_reply(await edit_job(pipeline, limits, body, image, mask, model_id), request)

    async def _images_reply(job: ImagesJob, request: Request) -> Response:
        batcher.submit(job)
        if job.stream:
            return _event_stream(_image_events(job), job, batcher)
        result = await _wait(request, job, batcher)
        if result is None:
            return Response(status_code=CLIENT_CLOSED)
        data = await asyncio.to_thread(
            lambda: [
                {"b64_json": _encoded(job, image), "seed": seed}
                for image, seed in zip(result.images, result.seeds, strict=True)
            ]
        )
        return JSONResponse({"created": int(time.time()), "data": data, **_image_fields(job, result)})

    @app.post("/v1/chat/completions")
    async def chat(body: ChatCompletionRequest, request: Request) -> Response:
        job = await chat_job(pipeline, limits, body, model_id)
        batcher.submit(job)
        reply_id = "chatcmpl-" + secrets.token_hex(12)
        if job.stream:
            return _event_stream(_chat_events(job, reply_id, model_id), job, batcher)
        result = await _wait(request, job, batcher)
        if result is None:
            return Response(status_code=CLIENT_CLOSED)
        message = {
            "role": "assistant",
            **await asyncio.to_thread(reply_message, result.output, body.image_markdown),
        }
        return JSONResponse(
            {
                "id": reply_id,
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model_id,
                "choices": [{"index": 0, "message": message, "finish_reason": result.finish_reason}],
                **_chat_fields(job, result),
            }
        )

    if ui:
        from lumina_mgpt.serve.ui import mount_ui

        app = mount_ui(app, batcher, model_id)
    return app


def reply_message(output: ChatOutput, markdown: bool = False) -> dict:
    """A chat reply's message fields: `content` its text (a string, as OpenAI clients expect) and, when the
    model drew images, `images` with where each was in the text (and, with `markdown`, also in the text)."""
    text, images = [], []
    for part in reply_parts(output):
        if part["type"] == "text":
            text.append(part["text"])
            continue
        offset = sum(map(len, text))
        images.append({"image_url": part["image_url"], "offset": offset})
        if markdown:
            text.append(f"![image {len(images)}]({part['image_url']['url']})")
    return {"content": "".join(text), **({"images": images} if images else {})}


def reply_parts(output: ChatOutput) -> list[dict]:
    """Text and image (data URL) content parts of a chat reply, in reply order."""
    parts, images = [], iter(output.images)
    for k, text in enumerate(output.text.split(IMAGE_PLACEHOLDER)):
        image = next(images, None) if k else None
        if image is not None:
            parts.append({"type": "image_url", "image_url": {"url": png_data_url(image)}})
        elif k:  # the model wrote the placeholder's text itself
            text = IMAGE_PLACEHOLDER + text
        if text:
            parts.append({"type": "text", "text": text})
    return parts


# ---------------------------------------------------------------------------------------------- waiting


async def _wait(request: Request, job: Job, batcher: Batcher) -> ImageResult | ChatResult | None:
    """The job's result, or None (and the job cancelled) if the client disconnects first."""
    result = asyncio.ensure_future(job.result())
    gone = asyncio.ensure_future(_disconnected(request))
    try:
        await asyncio.wait({result, gone}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        gone.cancel()
        left = not result.done()  # the client left first (a cancelled future is done only later)
        if left:
            result.cancel()
            batcher.cancel(job)
    return None if left else result.result()


async def _disconnected(request: Request) -> None:
    while (await request.receive())["type"] != "http.disconnect":
        pass


def _event_stream(events, job: Job, batcher: Batcher) -> StreamingResponse:
    """Server-sent events; an error becomes an `error` event, a client that leaves cancels the job."""

    async def stream():
        try:
            try:
                async for event in events:
                    yield event
            except APIError as error:
                yield _sse(error.body(), "error")
            yield "data: [DONE]\n\n"
        finally:
            batcher.cancel(job)  # does nothing once the job has finished

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})


async def _edit_form(request: Request) -> tuple[ImageEditRequest, bytes, bytes | None]:
    """The fields and files of an edit's multipart form; anything else in it is a 400 naming it."""
    if not request.headers.get("content-type", "").startswith("multipart/form-data"):
        raise APIError(400, "send an edit as multipart/form-data with an 'image' file and a 'prompt'")
    form = await request.form(max_files=4, max_fields=64)
    files: dict[str, list[bytes]] = {}
    fields: dict[str, str] = {}
    for key, value in form.multi_items():
        if isinstance(value, str):
            if key in fields:
                raise APIError(400, f"the form field {key!r} is sent twice", key)
            fields[key] = value
        else:
            files.setdefault(key.removesuffix("[]"), []).append(await value.read())
    unknown = set(files) - {"image", "mask"}
    if unknown:
        name = sorted(unknown)[0]
        raise APIError(400, f"{name}: unknown file field (an edit takes 'image' and 'mask')", name)
    if len(files.get("image", [])) != 1:
        raise APIError(400, "an edit takes exactly one 'image' file", "image")
    if len(files.get("mask", [])) > 1:
        raise APIError(400, "an edit takes at most one 'mask' file", "mask")
    try:
        body = ImageEditRequest(**fields)
    except ValidationError as error:
        raise validation_error([{**e, "loc": ("body", *e["loc"])} for e in error.errors()]) from None
    return body, files["image"][0], (files.get("mask") or [None])[0]


_EDIT_FORM = {
    "requestBody": {
        "required": True,
        "content": {
            "multipart/form-data": {
                "schema": {
                    "type": "object",
                    "required": ["image", "prompt"],
                    "properties": {
                        "image": {"type": "string", "format": "binary"},
                        "mask": {"type": "string", "format": "binary"},
                        **{name: {"type": "string"} for name in ImageEditRequest.model_fields},
                    },
                }
            }
        },
    }
}


def _encoded(job: ImagesJob, image) -> str:
    return encoded_base64(image, job.output_format, job.output_compression)


async def _image_events(job: ImagesJob):
    size = job.size
    async for kind, data in job.events():
        if kind == "progress":
            name = "image_generation.progress"
            yield _sse({"type": name, **data, "progress": data["step"] / data["total"]}, name)
        elif kind == "partial":
            name = "image_generation.partial_image"
            b64 = await asyncio.to_thread(_encoded, job, data.image)
            yield _sse(
                {
                    "type": name,
                    "b64_json": b64,
                    "partial_image_index": data.partial_index,
                    "image_index": data.image_index,
                    "rows": data.rows,
                    "total_rows": data.total_rows,
                    "size": size,
                    "output_format": job.output_format,
                },
                name,
            )
        else:
            name = "image_generation.completed"
            for k, (image, seed) in enumerate(zip(data.images, data.seeds, strict=True)):
                b64 = await asyncio.to_thread(_encoded, job, image)
                yield _sse(
                    {
                        "type": name,
                        "b64_json": b64,
                        "image_index": k,
                        "seed": seed,
                        "created_at": int(time.time()),
                        **_image_fields(job, data),
                    },
                    name,
                )


async def _chat_events(job: ChatJob, reply_id: str, model_id: str):
    head = {"id": reply_id, "object": "chat.completion.chunk", "created": int(time.time()), "model": model_id}

    def chunk(delta: dict, finish_reason: str | None = None, **extra) -> str:
        return _sse(
            {**head, "choices": [{"index": 0, "delta": delta, "finish_reason": finish_reason}], **extra}
        )

    yield chunk({"role": "assistant"})
    async for kind, data in job.events():
        if kind == "progress":
            yield chunk({}, progress=data)
        else:
            yield chunk(await asyncio.to_thread(reply_message, data.output, job.image_markdown))
            yield chunk({}, data.finish_reason, **_chat_fields(job, data))


def _image_fields(job: ImagesJob, result: ImageResult) -> dict:
    inputs = job.prompt_tokens * job.n
    return {
        "size": job.size,
        "output_format": job.output_format,
        "usage": {
            "input_tokens": inputs,
            "output_tokens": result.output_tokens,
            "total_tokens": inputs + result.output_tokens,
        },
        "metrics": asdict(result.metrics),
    }


def _chat_fields(job: ChatJob, result: ChatResult) -> dict:
    prompt, completion = int(result.output.stats["prompt_tokens"]), len(result.output.tokens)
    return {
        "usage": {
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        },
        "seed": job.seed,
        "metrics": asdict(result.metrics),
    }


def _sse(data: dict, event: str | None = None) -> str:
    head = f"event: {event}\n" if event else ""
    return f"{head}data: {json.dumps(data, separators=(',', ':'))}\n\n"


# ----------------------------------------------------------------------------------------------- errors


def _install_error_handlers(app: FastAPI) -> None:
    """OpenAI-style JSON errors for everything, never a traceback."""

    @app.exception_handler(APIError)
    async def api_error(_: Request, error: APIError) -> JSONResponse:
        return JSONResponse(error.body(), error.status)

    @app.exception_handler(LuminaError)
    async def lumina_error(_: Request, error: LuminaError) -> JSONResponse:
        return JSONResponse(APIError(400, str(error)).body(), 400)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, error: RequestValidationError) -> JSONResponse:
        problem = validation_error(error.errors())
        return JSONResponse(problem.body(), problem.status)

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, error: HTTPException) -> JSONResponse:
        code = {404: "not_found", 405: "method_not_allowed"}.get(error.status_code)
        return JSONResponse(
            APIError(error.status_code, str(error.detail), code=code).body(),
            error.status_code,
            headers=error.headers,
        )

    @app.exception_handler(Exception)
    async def failure(_: Request, error: Exception) -> JSONResponse:
        return JSONResponse(APIError(500, f"internal error ({type(error).__name__})").body(), 500)


def validation_error(errors: list[dict]) -> APIError:
    """A 400 naming the first problem of a body that does not fit its schema."""
    first = errors[0]
    path = [str(part) for part in first["loc"] if part != "body" and not _is_type_label(part)]
    param = ".".join(path) or None
    if first["type"] == "json_invalid":
        message = f"the request body is not valid JSON ({first.get('ctx', {}).get('error', 'parse error')})"
        param = None
    elif param is None:
        message = "the request body must be a JSON object sent as Content-Type: application/json"
    else:
        message = f"{param or 'the request body'}: {first['msg']}"
    if len(errors) > 1:
        message += f" (and {len(errors) - 1} more problem{'s' if len(errors) > 2 else ''})"
    return APIError(400, message, param, first["type"])


def _is_type_label(part: object) -> bool:
    """Pydantic's union-member labels in an error location (`str`, `list[...]`, `bool`, ...)."""
    return isinstance(part, str) and (part in {"str", "int", "float", "bool", "none"} or "[" in part)


class _BodyLimit:
    """Refuse API request bodies over the limit (413) from their Content-Length, before reading them; a POST
    without one (a chunked body) gets 411."""

    def __init__(self, app: ASGIApp, limit: int) -> None:
        self.app, self.limit = app, limit

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["path"].startswith("/v1/") and scope["method"] == "POST":
            length = dict(scope["headers"]).get(b"content-length")
            error = None
            if length is None:
                error = APIError(
                    411, "send the request body with a Content-Length header", code="length_required"
                )
            elif not length.isdigit() or int(length) > self.limit:
                error = APIError(
                    413,
                    f"the request body is over this server's limit of {self.limit} bytes",
                    code="body_too_large",
                )
            if error is not None:
                await JSONResponse(error.body(), error.status)(scope, receive, send)
                return
        await self.app(scope, receive, send)
