"""The HTTP API: OpenAI-compatible image generation and chat over one pipeline, with the web UI at `/ui`.

    POST /v1/images/generations   {"prompt", "n", "size": "WxH", "response_format": "b64_json", "stream",
                                   + "seed", "cfg_scale", "temperature", "top_k", "top_p", "speculative"}
        -> {"created", "data": [{"b64_json", "seed"}], "size", "output_format": "png", "usage", "metrics"}
    POST /v1/chat/completions     {"messages": [{"role", "content": str | [{"type": "text", "text"} |
                                   {"type": "image_url", "image_url": {"url": "data:image/png;base64,."}}]}],
                                   "max_tokens", "seed", "temperature"/"top_p"/"top_k" (text), "size",
                                   "cfg_scale", "image_temperature"/"image_top_k"/"image_top_p", "stream"}
        -> a chat.completion whose message content is a string when the reply is text only, else a list of
           parts in reply order: {"type": "text", "text"} and {"type": "image_url", "image_url": {"url":
           "data:image/png;base64,..."}} for each image the model drew
    GET  /v1/models, GET /health  (/health also counts decodes, batched requests and cancellations)

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
from starlette.exceptions import HTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from lumina_mgpt.errors import LuminaError
from lumina_mgpt.pipeline import ChatOutput, LuminaMGPTPipeline
from lumina_mgpt.serve.batcher import Batcher
from lumina_mgpt.serve.jobs import (
    APIError,
    ChatJob,
    ChatResult,
    ImageJob,
    ImageResult,
    Job,
    chat_job,
    image_job,
)
from lumina_mgpt.serve.limits import Limits
from lumina_mgpt.serve.media import png_base64, png_data_url
from lumina_mgpt.serve.schemas import ChatCompletionRequest, ImageGenerationRequest
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
        }
        return {"object": "list", "data": [card]}

    @app.post("/v1/images/generations")
    async def generations(body: ImageGenerationRequest, request: Request) -> Response:
        job = image_job(pipeline, limits, body, model_id)
        batcher.submit(job)
        if job.stream:
            return _event_stream(_image_events(job), job, batcher)
        result = await _wait(request, job, batcher)
        if result is None:
            return Response(status_code=CLIENT_CLOSED)
        data = await asyncio.to_thread(
            lambda: [
                {"b64_json": png_base64(image), "seed": seed}
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
        message = {"role": "assistant", "content": await asyncio.to_thread(reply_content, result.output)}
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


def reply_content(output: ChatOutput) -> str | list[dict]:
    """A chat reply as OpenAI message content: the text alone, or (with images) its content parts."""
    return reply_parts(output) if output.images else output.text


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


async def _image_events(job: ImageJob):
    size = f"{job.settings.width}x{job.settings.height}"
    async for kind, data in job.events():
        if kind == "progress":
            name = "image_generation.progress"
            yield _sse({"type": name, **data, "progress": data["step"] / data["total"]}, name)
        elif kind == "partial":
            name = "image_generation.partial_image"
            b64 = await asyncio.to_thread(png_base64, data.image)
            yield _sse(
                {
                    "type": name,
                    "b64_json": b64,
                    "partial_image_index": data.partial_index,
                    "image_index": data.image_index,
                    "rows": data.rows,
                    "total_rows": data.total_rows,
                    "size": size,
                    "output_format": "png",
                },
                name,
            )
        else:
            name = "image_generation.completed"
            for k, (image, seed) in enumerate(zip(data.images, data.seeds, strict=True)):
                b64 = await asyncio.to_thread(png_base64, image)
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
            yield chunk({"content": await asyncio.to_thread(reply_content, data.output)})
            yield chunk({}, data.finish_reason, **_chat_fields(job, data))


def _image_fields(job: ImageJob, result: ImageResult) -> dict:
    inputs = job.prompt_tokens * job.n
    return {
        "size": f"{job.settings.width}x{job.settings.height}",
        "output_format": "png",
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
