"""`lumina-mgpt serve`: the HTTP API, and the web UI at /ui, on one model."""

import importlib.util
import os
import socket
import threading
from pathlib import Path
from typing import Annotated

import typer

from lumina_mgpt.cli_options import (
    DeviceOption,
    ImageTokenizerOption,
    ModelOption,
    TensorParallelOption,
    TextTokenizerOption,
)
from lumina_mgpt.errors import LuminaError
from lumina_mgpt.serve.limits import Limits

LOG_LEVELS = ("critical", "error", "warning", "info", "debug", "trace")


def serve(
    model: ModelOption = None,
    host: Annotated[str, typer.Option(help="Address to listen on (loopback by default).")] = "127.0.0.1",
    port: Annotated[
        int, typer.Option(min=0, max=65535, help="Port (0: any free port; the URL is printed).")
    ] = 8000,
    served_model_name: Annotated[
        str | None, typer.Option(help="Model id clients see (default: folder name).")
    ] = None,
    ui: Annotated[bool, typer.Option(help="Mount the Gradio web UI at /ui.")] = True,
    max_images: Annotated[int, typer.Option(help="Most images (n) per request.")] = Limits.max_images,
    max_batch_images: Annotated[
        int, typer.Option(help="Most images in one decode batch.")
    ] = Limits.max_batch_images,
    max_queue: Annotated[int, typer.Option(help="Most waiting requests (then 429).")] = Limits.max_queue,
    batch_window_ms: Annotated[
        float, typer.Option(help="How long an idle worker waits for companions.")
    ] = Limits.batch_window_s * 1000,
    text_tokenizer: TextTokenizerOption = None,
    image_tokenizer: ImageTokenizerOption = None,
    device: DeviceOption = None,
    threads: Annotated[
        int | None, typer.Option(help="CPU threads of torch (on a busy CPU box, 1 avoids stalls).")
    ] = None,
    log_level: Annotated[str, typer.Option(help=f"uvicorn log level: {', '.join(LOG_LEVELS)}.")] = "info",
    tensor_parallel: TensorParallelOption = 1,
    rank_timeout: Annotated[
        float,
        typer.Option(help="With --tensor-parallel: seconds without progress before a rank counts as lost."),
    ] = 120.0,
) -> None:
    """Serve the OpenAI-compatible API (/v1/images/generations, /v1/chat/completions) and the web UI."""
    try:
        counts = [max_images, max_batch_images, max_queue, 1 if threads is None else threads]
        if min(counts) < 1 or batch_window_ms < 0:
            raise LuminaError(
                "--max-images, --max-batch-images, --max-queue and --threads must be >= 1, "
                "--batch-window-ms >= 0"
            )
        if max_images > max_batch_images:
            raise LuminaError(
                f"--max-images ({max_images}) must not exceed --max-batch-images ({max_batch_images}): "
                "one request is decoded as one batch"
            )
        if log_level not in LOG_LEVELS:
            raise LuminaError(f"--log-level must be one of {', '.join(LOG_LEVELS)}")
        if rank_timeout <= 0:
            raise LuminaError("--rank-timeout must be > 0 seconds")
        if ui and importlib.util.find_spec("gradio") is None:
            raise LuminaError("the web UI needs gradio: pip install 'lumina-mgpt[serve]', or pass --no-ui")
        limits = Limits(
            max_images=max_images,
            max_batch_images=max_batch_images,
            max_queue=max_queue,
            batch_window_s=batch_window_ms / 1000,
        )
        follower = tensor_parallel > 1 and os.environ.get("RANK", "0") != "0"  # rank 0 alone answers HTTP
        listener = None if follower else _listen(host, port)
        import torch

        from lumina_mgpt.pipeline import LuminaMGPTPipeline  # heavy imports once the arguments are fine

        if threads is not None:
            torch.set_num_threads(threads)
        pipe = LuminaMGPTPipeline.from_pretrained(
            model,
            device=device,
            text_tokenizer=text_tokenizer,
            image_tokenizer=image_tokenizer,
            tensor_parallel=tensor_parallel,
        )
    except LuminaError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(2) from None
    leader = None
    if tensor_parallel > 1:
        from lumina_mgpt.serve.parallel import Leader, follow

        if follower:
            try:
                follow(pipe, rank_timeout)
            except LuminaError as error:
                typer.echo(f"error: {error}", err=True)
                raise typer.Exit(1) from None
            return
        try:
            pipe = leader = Leader(pipe, rank_timeout)
        except LuminaError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(1) from None

    from lumina_mgpt.serve.app import create_app

    name = served_model_name or (Path(model).name if model and Path(model).exists() else model or "shapes")
    app = create_app(pipe, limits, model_id=name, ui=ui)
    address, bound_port = listener.getsockname()[:2]
    url = f"http://{f'[{address}]' if ':' in address else address}:{bound_port}"
    typer.echo(f"serving {name} at {url}/v1" + (f" and the web UI at {url}/ui" if ui else ""))
    _run(app, log_level, listener, leader)


def _listen(host: str, port: int) -> socket.socket:
    """A bound socket (so port 0 picks a free port that we can print before serving)."""
    try:
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
        listener = socket.socket(family, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind((host, port))
    except OSError as error:
        raise LuminaError(f"cannot listen on {host}:{port} ({error.strerror or error})") from None
    return listener


def _run(app, log_level: str, listener: socket.socket, leader=None) -> None:
    """Serve until a shutdown signal, which first stops the decode worker: requests still waiting or decoding
    get 503 `shutting_down` at once instead of being cut off after uvicorn's graceful timeout. A
    tensor-parallel `leader` that loses a rank does the same with 503 `rank_lost`, then ends the process."""
    import uvicorn

    class Server(uvicorn.Server):
        def handle_exit(self, sig: int, frame) -> None:
            threading.Thread(target=app.state.batcher.stop, daemon=True).start()  # not in the signal handler
            super().handle_exit(sig, frame)

    server = Server(uvicorn.Config(app, log_level=log_level, timeout_graceful_shutdown=5))
    if leader is not None:
        leader.stop_when_lost(server, app.state.batcher)
    server.run(sockets=[listener])
    if leader is not None:
        leader.finish()
