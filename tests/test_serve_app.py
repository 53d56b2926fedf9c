"""The HTTP API and web UI against a real server process on loopback, serving a tiny random model folder.

The model favours the image start token wherever it is allowed, so chat replies are images (deterministic);
text-to-image is unaffected (the Uni-Rep grammar never allows an image start inside a grid).
"""

import base64
import contextlib
import io
import json
import shutil
import socket
import time
from concurrent.futures import ThreadPoolExecutor
from urllib.parse import urlsplit

import httpx
import numpy as np
import pytest
import typer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image
from test_generate_helpers import image_replies_folder, one_thread
from typer.testing import CliRunner

from lumina_mgpt.pipeline import LuminaMGPTPipeline
from lumina_mgpt.serve.cli import serve
from lumina_mgpt.serve.launch import server_process
from lumina_mgpt.unirep import block_length

GENERATIONS, CHAT = "/v1/images/generations", "/v1/chat/completions"
MAX_QUEUE, MAX_IMAGES = 2, 3
BIG = {"size": "256x256", "seed": 0}  # the tiny model's largest image: ~1000 decode steps, a long-running job


@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    yield from one_thread()


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return image_replies_folder(tmp_path_factory.mktemp("served") / "tiny-shapes")


@pytest.fixture(scope="module")
def pipe(folder):
    return LuminaMGPTPipeline.from_pretrained(folder)


@pytest.fixture(scope="module")
def url(folder):
    options = f"--max-queue {MAX_QUEUE} --max-images {MAX_IMAGES} --log-level warning".split()
    with server_process("--model", str(folder), *options, env={"OMP_NUM_THREADS": "1"}) as url:
        yield url


@pytest.fixture(scope="module")
def client(url):
    with httpx.Client(base_url=url, timeout=60) as client:
        yield client


def health(client: httpx.Client) -> dict:
    return client.get("/health").json()


def wait_until(client: httpx.Client, condition, timeout: float = 30.0) -> dict:
    """Poll /health until `condition(health)` holds; return that health."""
    deadline = time.monotonic() + timeout
    while True:
        state = health(client)
        if condition(state):
            return state
        assert time.monotonic() < deadline, f"timed out; last /health: {state}"
        time.sleep(0.02)


def png(b64: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(b64))))


def data_url(image: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def sse(text: str) -> list[tuple[str | None, dict | str]]:
    """(event name, parsed data) of each server-sent event."""
    events = []
    for block in text.strip().split("\n\n"):
        fields = dict(line.split(": ", 1) for line in block.split("\n"))
        data = fields["data"]
        events.append((fields.get("event"), data if data == "[DONE]" else json.loads(data)))
    return events


def raw_request(url: str, path: str, body: dict) -> socket.socket:
    """Send a request on a socket of our own, so the test decides when the client disconnects."""
    parts = urlsplit(url)
    data = json.dumps(body).encode()
    connection = socket.create_connection((parts.hostname, parts.port))
    head = f"POST {path} HTTP/1.1\r\nHost: {parts.netloc}\r\nContent-Type: application/json\r\n"
    connection.sendall(f"{head}Content-Length: {len(data)}\r\n\r\n".encode() + data)
    return connection


def read_until(connection: socket.socket, marker: bytes, timeout: float = 30.0) -> bytes:
    connection.settimeout(timeout)
    received = b""
    while marker not in received:
        chunk = connection.recv(65536)
        assert chunk, f"connection closed before {marker!r}: {received[-300:]!r}"
        received += chunk
    return received


# ---------------------------------------------------------------------------------------------- API


def test_health_and_models(client, folder):
    assert health(client)["status"] == "ok"
    models = client.get("/v1/models").json()
    assert models["object"] == "list" and [m["id"] for m in models["data"]] == [folder.name]
    assert models["data"][0]["family"] == "ours" and models["data"][0]["default_size"] == "128x128"
    defaults = models["data"][0]["generation_defaults"]
    assert defaults["chat/completions"]["image_temperature"] == 1.0  # chat's own names (temperature: text's)
    assert defaults["chat/completions with images"]["image_temperature"] == 0.5
    assert (
        defaults["images/edits"]["temperature"] == 0.5 and defaults["images/generations"]["temperature"] == 1
    )
    openapi = client.get("/openapi.json").json()
    assert {GENERATIONS, CHAT, "/v1/models", "/health"} <= set(openapi["paths"])


def test_generations_are_the_pipelines_images(client, pipe, folder):
    body = {
        "prompt": "a red star",
        "n": 2,
        "size": "64x32",
        "seed": 3,
        "cfg_scale": 2.0,
        "top_k": 5,
        "model": folder.name,
        "response_format": "b64_json",
        "speculative": "off",
    }
    reply = client.post(GENERATIONS, json=body)
    assert reply.status_code == 200, reply.text
    result = reply.json()
    expected = pipe("a red star", 64, 32, 2, cfg_scale=2.0, top_k=5, seed=3, progress=False)
    assert [item["seed"] for item in result["data"]] == [3, 4]
    for item, image in zip(result["data"], expected.images, strict=True):
        assert np.array_equal(png(item["b64_json"]), np.asarray(image))
    assert result["size"] == "64x32" and result["output_format"] == "png"
    assert (
        result["usage"]["output_tokens"]
        == sum(len(t) for t in expected.tokens)
        == 2 * block_length(64, 32, pipe.layout)
    )
    assert result["metrics"]["batch_requests"] == 1 and result["metrics"]["batch_images"] == 2


def _error(reply: httpx.Response, status: int, param: str | None, words: str) -> None:
    assert reply.status_code == status, reply.text
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "param", "code"} and error["param"] == param
    assert words in error["message"] and "\n" not in error["message"] and "Traceback" not in error["message"]


PNG_32 = data_url(np.full((32, 32, 3), 200, dtype=np.uint8))


def ask(content: str | list, **fields) -> dict:
    """A chat body of one user message."""
    return {"messages": [{"role": "user", "content": content}], **fields}


def picture(url: str) -> dict:
    return {"type": "image_url", "image_url": {"url": url}}


PROMPT = {"prompt": "x"}
BAD_REQUESTS = [  # path, body, status, param, words of the message
    (GENERATIONS, PROMPT | {"response_format": "url"}, 400, "response_format", "'url' is not supported"),
    (GENERATIONS, PROMPT | {"n": MAX_IMAGES + 1}, 400, "n", f"at most {MAX_IMAGES} images"),
    (GENERATIONS, PROMPT | {"n": 0}, 400, "n", "greater than or equal to 1"),
    (GENERATIONS, PROMPT | {"n": "2"}, 400, "n", "valid integer"),
    (GENERATIONS, PROMPT | {"size": "65x32"}, 400, "size", "valid sizes nearby: 64x32"),
    (GENERATIONS, PROMPT | {"size": "512x512"}, 400, "size", "limited to 256 px"),
    (GENERATIONS, PROMPT | {"size": "2048x2048"}, 400, "size", "over this server's limit"),
    (GENERATIONS, PROMPT | {"size": "big"}, 400, "size", "is not 'WxH'"),
    (GENERATIONS, PROMPT | {"size": "١٢٨x١٢٨"}, 400, "size", "with ASCII digits"),
    (GENERATIONS, PROMPT | {"size": "128x128\n"}, 400, "size", "with ASCII digits"),
    (GENERATIONS, {"prompt": "x" * 2001}, 400, "prompt", "at most 2000"),
    (GENERATIONS, {"prompt": ""}, 400, "prompt", "at least 1 character"),
    (GENERATIONS, {"prompt": "a <|image|>"}, 400, "prompt", "cannot hold <|image|>"),
    (GENERATIONS, {"n": 1}, 400, "prompt", "Field required"),
    (GENERATIONS, PROMPT | {"cfg": 3}, 400, "cfg", "Extra inputs are not permitted"),
    (GENERATIONS, PROMPT | {"top_p": 0}, 400, "top_p", "top_p must be > 0 and <= 1, got 0.0"),
    (GENERATIONS, PROMPT | {"top_k": 2**70}, 400, "top_k", "top_k must be >= 0 and <= 2147483647"),
    (GENERATIONS, PROMPT | {"temperature": -1}, 400, "temperature", "temperature must be 0 or >= 0.001"),
    (GENERATIONS, PROMPT | {"speculative": "fastest"}, 400, "speculative", "one of off, exact, reference"),
    (GENERATIONS, PROMPT | {"model": "dall-e-3"}, 404, "model", "not served here"),
    (GENERATIONS, ["a list"], 400, None, "must be a JSON object"),
    (CHAT, {"messages": []}, 400, "messages", "at least 1 item"),
    (
        CHAT,
        {"messages": [{"role": "system", "content": "x"}]},
        400,
        "messages.0.role",
        "'user' or 'assistant'",
    ),
    (CHAT, {"messages": [{"role": "assistant", "content": "x"}]}, 400, None, "ending with the user's turn"),
    (CHAT, {"messages": [{"role": "user", "content": "x"}] * 2}, 400, None, "turns alternate"),
    (
        CHAT,
        ask([picture("https://a/b.png")]),
        400,
        "messages.0.content.0.image_url.url",
        "URLs are not fetched",
    ),
    (
        CHAT,
        ask([picture("data:image/png;base64,AAAA")]),
        400,
        "messages.0.content.0.image_url.url",
        "readable",
    ),
    (
        CHAT,
        ask([picture("data:application/pdf;base64,AAAA")]),
        400,
        "messages.0.content.0.image_url.url",
        "a data URL of an image type is needed",
    ),
    (CHAT, ask([picture(PNG_32)] * 5), 400, "messages", "at most 4 images"),
    (CHAT, ask("x <|image|>"), 400, "messages.0.content", "image_url parts"),
    (CHAT, ask("x", n=2), 400, "n", "less than or equal to 1"),
    (CHAT, ask("x", size="33x32"), 400, "size", "multiple of 32"),
    (CHAT, ask("x", max_tokens=10**6), 400, "max_tokens", "at most"),
]


def test_speculative_generations_are_the_pipelines_speculative_images(client, pipe):
    body = {"prompt": "a red star", "n": 1, "size": "64x32", "seed": 5, "speculative": "exact"}
    reply = client.post(GENERATIONS, json=body)
    assert reply.status_code == 200, reply.text
    expected = pipe("a red star", 64, 32, 1, seed=5, speculative="exact", progress=False)
    assert np.array_equal(png(reply.json()["data"][0]["b64_json"]), np.asarray(expected.images[0]))


@pytest.mark.parametrize(("path", "body", "status", "param", "words"), BAD_REQUESTS)
def test_bad_requests_get_one_line_openai_errors(client, path, body, status, param, words):
    _error(client.post(path, json=body), status, param, words)


def test_malformed_http_gets_openai_errors(client, url):
    _error(
        client.post(GENERATIONS, content=b'{"prompt": ', headers={"Content-Type": "application/json"}),
        400,
        None,
        "not valid JSON",
    )
    _error(
        client.post(GENERATIONS, content=b"prompt=x", headers={"Content-Type": "text/plain"}),
        400,
        None,
        "JSON object",
    )
    _error(client.get(GENERATIONS), 405, None, "Method Not Allowed")
    _error(client.get("/v1/nothing"), 404, None, "Not Found")
    # a huge declared body is refused before it is read
    connection = socket.create_connection((urlsplit(url).hostname, urlsplit(url).port))
    connection.sendall(
        f"POST {GENERATIONS} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        f"Content-Length: {10**9}\r\n\r\n".encode()
    )
    reply = read_until(connection, b"}}").decode()
    connection.close()
    assert reply.startswith("HTTP/1.1 413") and '"code":"body_too_large"' in reply
    chunked = client.post(
        GENERATIONS, content=iter([b'{"prompt": "x"}']), headers={"Content-Type": "application/json"}
    )
    _error(chunked, 411, None, "Content-Length")


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats() | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=3),
    max_leaves=6,
)
IMAGE_FIELDS = {
    "prompt": st.text(max_size=30) | JSON,
    "n": st.integers(-2, 5) | JSON,
    "response_format": st.sampled_from(["b64_json", "url", "png"]) | JSON,
    "seed": st.integers(-5, 2**63) | JSON,
    "cfg_scale": st.floats(-1, 20) | JSON,
    "temperature": st.floats(-1, 3) | JSON,
    "top_k": st.integers(-3, 50) | JSON,
    "top_p": st.floats(-0.5, 1.5) | JSON,
    "stream": st.booleans() | JSON,
    "speculative": st.sampled_from([None, False, "off", True, "on"]) | JSON,
    "model": JSON,
    "user": JSON,
}
SIZES = st.sampled_from(["32x32", "64x32", "33x32", "0x0", "x", "", "9999x9999"]) | JSON.filter(
    lambda v: v is not None
)
PART = st.fixed_dictionaries(
    {"type": st.sampled_from(["text", "image_url", "audio"]) | JSON},
    optional={
        "text": st.text(max_size=20) | JSON,
        "image_url": st.fixed_dictionaries({"url": st.sampled_from([PNG_32, "data:,", "x"]) | JSON}),
    },
)
MESSAGE = st.fixed_dictionaries(
    {
        "role": st.sampled_from(["user", "assistant", "system"]) | JSON,
        "content": st.text(max_size=20) | st.lists(PART, max_size=2) | JSON,
    }
)
CHAT_FIELDS = {
    "messages": st.lists(MESSAGE, max_size=3) | JSON,
    "size": SIZES,
    "seed": st.integers(-1, 9) | JSON,
    "stream": st.booleans() | JSON,
    "temperature": st.floats(-1, 2) | JSON,
    "top_k": st.integers(-1, 9) | JSON,
    "image_top_k": st.integers(-1, 9) | JSON,
    "n": st.integers(0, 2) | JSON,
}


def _post_json(client: httpx.Client, path: str, body: object) -> httpx.Response:
    """POST any JSON, NaN and Infinity included (Python's json writes them; httpx's `json=` refuses)."""
    return client.post(path, content=json.dumps(body), headers={"Content-Type": "application/json"})


def _check_reply(reply: httpx.Response) -> None:
    assert reply.status_code in (200, 400, 404), reply.text
    if reply.status_code != 200:
        error = reply.json()["error"]
        assert (
            isinstance(error["message"], str)
            and error["message"]
            and error["type"] == "invalid_request_error"
        )
    elif reply.headers["content-type"].startswith("text/event-stream"):
        assert reply.text.rstrip().endswith("data: [DONE]") and "event: error" not in reply.text
    else:
        assert "data" in reply.json() or "choices" in reply.json()


@settings(max_examples=30, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(
    fields=st.fixed_dictionaries({"size": SIZES}, optional=IMAGE_FIELDS),
    extra=st.dictionaries(st.sampled_from(["quality", "style", "partial_images"]), JSON, max_size=1),
)
def test_fuzzed_image_requests_get_a_result_or_a_4xx(client, fields, extra):
    _check_reply(_post_json(client, GENERATIONS, fields | extra))


@settings(max_examples=30, suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(fields=st.fixed_dictionaries({"max_tokens": st.integers(1, 30)}, optional=CHAT_FIELDS))
def test_fuzzed_chat_requests_get_a_result_or_a_4xx(client, fields):
    _check_reply(_post_json(client, CHAT, fields))


def test_streaming_sends_progress_row_previews_and_the_final_images(client):
    body = {"prompt": "two blue circles", "n": 2, "size": "32x64", "seed": 7}
    events = sse(client.post(GENERATIONS, json=body | {"stream": True}).text)
    assert events[-1] == (None, "[DONE]")
    names = [name for name, _ in events[:-1]]
    assert all(name == data["type"] for name, data in events[:-1])
    progress = [data["progress"] for name, data in events if name == "image_generation.progress"]
    assert progress == sorted(progress) and progress[-1] == 1.0
    partials = [data for name, data in events if name == "image_generation.partial_image"]
    total_rows = 64 // 8
    assert [(p["image_index"], p["rows"]) for p in partials] == [
        (k, r) for r in range(1, total_rows) for k in (0, 1)
    ]
    for partial in partials:  # finished rows above, flat grey below
        pixels = png(partial["b64_json"])
        assert pixels.shape == (64, 32, 3)
        assert np.ptp(pixels[partial["rows"] * 8 :]) == 0
    completed = [data for name, data in events if name == "image_generation.completed"]
    assert names.index("image_generation.completed") > names.index("image_generation.partial_image")
    plain = client.post(GENERATIONS, json=body).json()
    assert [c["image_index"] for c in completed] == [0, 1]
    for streamed, item in zip(completed, plain["data"], strict=True):
        assert (
            np.array_equal(png(streamed["b64_json"]), png(item["b64_json"]))
            and streamed["seed"] == item["seed"]
        )


def test_concurrent_requests_share_one_decode_and_a_leaving_stream_is_cancelled(client, url):
    before = health(client)
    runner = raw_request(url, GENERATIONS, {"prompt": "a long one", "stream": True} | BIG)
    read_until(runner, b"image_generation.partial_image")  # the worker is busy with it
    bodies = [
        {"prompt": "a red star", "n": 2, "size": "32x32", "seed": 11},
        {"prompt": "three green squares and a tiny circle", "size": "32x32", "seed": 40},
    ]
    with ThreadPoolExecutor(2) as pool:
        replies = [pool.submit(client.post, GENERATIONS, json=body) for body in bodies]
        wait_until(client, lambda h: h["queued"] == MAX_QUEUE)
        _error(client.post(GENERATIONS, json={"prompt": "one too many"}), 429, None, "busy")
        runner.close()  # the only request of the running decode leaves: the decode stops
        results = [reply.result().json() for reply in replies]
    after = health(client)
    assert after["aborted_decodes"] == before["aborted_decodes"] + 1
    assert after["cancelled"] == before["cancelled"] + 1
    assert after["decodes"] == before["decodes"] + 2  # the cancelled one, then both requests in one batch
    metrics = [result["metrics"] for result in results]
    assert metrics[0]["decode_id"] == metrics[1]["decode_id"] == after["decodes"]
    assert all(m["batch_requests"] == 2 and m["batch_images"] == 3 for m in metrics)
    # a batched request gets the very images it gets alone
    alone = client.post(GENERATIONS, json=bodies[1]).json()
    assert alone["metrics"]["batch_requests"] == 1
    assert alone["data"][0]["b64_json"] == results[1]["data"][0]["b64_json"]


def test_concurrent_chats_share_one_decode_and_get_their_lone_replies(client, url):
    """Chats of equal settings waiting together run as one `chat_many` batch, each on its own canvas and seed;
    each reply is the one its request gets alone."""
    runner = raw_request(url, GENERATIONS, {"prompt": "a long one", "stream": True} | BIG)
    read_until(runner, b"image_generation.partial_image")  # the worker is busy: the chats queue up
    picture_question = [{"type": "text", "text": "Describe the image. "}, picture(PNG_32)]
    bodies = [
        {"messages": [{"role": "user", "content": picture_question}], "size": "32x32", "seed": 5},
        {"messages": [{"role": "user", "content": "Draw a red star."}], "size": "64x32", "seed": 9},
    ]
    for body in bodies:  # the image temperature given: one config whether a chat holds an image or not
        body |= {"max_tokens": 60, "image_temperature": 0.8}
    with ThreadPoolExecutor(2) as pool:
        replies = [pool.submit(client.post, CHAT, json=body) for body in bodies]
        wait_until(client, lambda h: h["queued"] == 2)
        runner.close()
        results = [reply.result().json() for reply in replies]
    metrics = [result["metrics"] for result in results]
    assert metrics[0]["decode_id"] == metrics[1]["decode_id"]
    assert all(m["batch_requests"] == 2 for m in metrics)
    for body, result in zip(bodies, results, strict=True):
        alone = client.post(CHAT, json=body).json()
        assert alone["metrics"]["batch_requests"] == 1
        assert alone["choices"] == result["choices"] and alone["usage"] == result["usage"]


def test_a_disconnecting_client_cancels_its_queued_or_running_work(client, url):
    before = health(client)
    running = raw_request(url, GENERATIONS, {"prompt": "a long one"} | BIG)
    wait_until(client, lambda h: h["running"] == 1)
    queued = raw_request(url, GENERATIONS, {"prompt": "waiting", "size": "32x32"})
    wait_until(client, lambda h: h["queued"] == 1)
    queued.close()
    wait_until(client, lambda h: h["queued"] == 0 and h["cancelled"] == before["cancelled"] + 1)
    running.close()
    after = wait_until(
        client, lambda h: h["running"] == 0 and h["aborted_decodes"] == before["aborted_decodes"] + 1
    )
    assert after["cancelled"] == before["cancelled"] + 2
    assert after["decodes"] == before["decodes"] + 1  # the queued request never reached the model


def test_stopping_the_server_answers_running_and_queued_requests_with_503(folder):
    env = {"OMP_NUM_THREADS": "1"}
    with (
        server_process("--model", str(folder), "--no-ui", env=env) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        running = raw_request(url, GENERATIONS, {"prompt": "a long one"} | BIG)
        wait_until(client, lambda h: h["running"] == 1)
        queued = raw_request(url, GENERATIONS, {"prompt": "waiting", "size": "32x32"})
        wait_until(client, lambda h: h["queued"] == 1)
    for connection in (running, queued):  # leaving the block sent the server SIGTERM
        reply = read_until(connection, b"}}")
        assert reply.startswith(b"HTTP/1.1 503") and b'"code":"shutting_down"' in reply, reply
        connection.close()


def test_chat_replies_with_text_and_image_parts(client, pipe):
    length = block_length(32, 32, pipe.layout)
    question = {
        "role": "user",
        "content": [{"type": "text", "text": "Describe the image. "}, picture(PNG_32)],
    }
    reply = client.post(CHAT, json={"messages": [question], "size": "32x32", "max_tokens": length, "seed": 1})
    assert reply.status_code == 200, reply.text
    result = reply.json()
    choice = result["choices"][0]
    assert result["object"] == "chat.completion" and choice["finish_reason"] == "length"
    content, images = choice["message"]["content"], choice["message"]["images"]
    assert content == "" and [image["offset"] for image in images] == [0]
    drawn = images[0]["image_url"]["url"]
    assert drawn.startswith("data:image/png;base64,") and png(drawn.split(",", 1)[1]).shape == (32, 32, 3)
    assert result["usage"]["completion_tokens"] == length and result["seed"] == 1
    # the drawn image goes back as history; a reply cut before its image ends is text only (here: none)
    history = [question, choice["message"], {"role": "user", "content": "Again."}]
    again = client.post(CHAT, json={"messages": history, "size": "32x32", "max_tokens": 1})
    assert again.status_code == 200, again.text
    assert again.json()["choices"][0]["message"]["content"] == ""
    streamed = sse(
        client.post(
            CHAT,
            json={"messages": [question], "size": "32x32", "max_tokens": length, "seed": 1, "stream": True},
        ).text
    )
    assert streamed[-1] == (None, "[DONE]")
    chunks = [data for _, data in streamed[:-1]]
    assert all(chunk["object"] == "chat.completion.chunk" for chunk in chunks)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant"} and any("progress" in c for c in chunks)
    assert chunks[-2]["choices"][0]["delta"] == {
        "content": content,
        "images": images,
    }  # same seed, same image
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_serve_command_refuses_bad_arguments_in_one_line(tmp_path):
    command = typer.Typer()
    command.command()(serve)
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    cases = [
        (["--model", str(tmp_path / "missing"), "--no-ui", "--port", "0"], "missing"),
        (["--max-queue", "0", "--no-ui"], "--max-queue"),
        (["--max-images", "8", "--max-batch-images", "2", "--no-ui"], "must not exceed --max-batch-images"),
        (["--threads", "0", "--no-ui"], "and --threads must be >= 1"),
        (["--log-level", "loud", "--no-ui"], "--log-level must be one of"),
        (["--port", str(taken.getsockname()[1]), "--no-ui"], "cannot listen on 127.0.0.1"),
    ]
    for args, words in cases:
        result = CliRunner().invoke(command, args)
        assert result.exit_code == 2, result.output
        assert result.output.startswith("error: ") and words in result.output
        assert result.output.count("\n") == 1 and "Traceback" not in result.output
    taken.close()
    result = CliRunner().invoke(command, ["--port", "70000", "--no-ui"])
    assert result.exit_code == 2 and "65535" in result.output and "Traceback" not in result.output


# ----------------------------------------------------------------------------------------- web UI

CHROMIUM_FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


@contextlib.contextmanager
def real_browser(profile, height: int):
    """Debian's chromium (no browser download), headless, in a fresh profile, 1280 px wide; skips without it."""
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (run .ci/install-browser)")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as driver:
        browser = driver.chromium.launch_persistent_context(
            profile, executable_path=chromium, args=CHROMIUM_FLAGS, viewport={"width": 1280, "height": height}
        )
        try:
            yield browser
        finally:
            browser.close()


def test_web_ui_generates_and_chats_in_a_real_browser(client, url, tmp_path):
    with real_browser(tmp_path / "profile", 900) as browser:
        page = browser.new_page()
        page.goto(f"{url}/ui/")
        page.locator("#prompt textarea").fill("a red star", timeout=60_000)
        page.locator("#generate").click()
        page.locator("#status").get_by_text("Done:").wait_for(timeout=60_000)
        image = page.locator("#gallery img").first
        image.wait_for()
        source = image.get_attribute("src")
        page.screenshot(path=str(tmp_path / "ui.png"), full_page=True)
        # the chat tab: upload an image with a question; the (image-favouring) model answers with images
        Image.fromarray(np.full((32, 32, 3), (200, 40, 40), dtype=np.uint8)).save(tmp_path / "red.png")
        page.get_by_role("tab", name="Chat").click()
        page.locator("#chat-input input[type=file]").set_input_files(tmp_path / "red.png")
        page.locator("#chat-input textarea").fill("Describe the image.")
        page.locator("#chat-input textarea").press("Enter")
        page.locator("#chatbot img").nth(1).wait_for(timeout=60_000)  # the upload, then a drawn image
        page.screenshot(path=str(tmp_path / "chat.png"), full_page=True)
    shown = np.asarray(Image.open(io.BytesIO(httpx.get(httpx.URL(url).join(source)).content)).convert("RGB"))
    api = client.post(GENERATIONS, json={"prompt": "a red star", "seed": 0}).json()  # the UI's defaults
    assert np.array_equal(shown, png(api["data"][0]["b64_json"]))
    assert Image.open(tmp_path / "ui.png").size[0] == 1280


def test_line_wrapped_base64_images_are_read():
    from lumina_mgpt.serve.media import image_from_data_url

    data = PNG_32.split(",", 1)[1]
    wrapped = "data:image/png;base64," + "\r\n".join(data[i : i + 76] for i in range(0, len(data), 76))
    assert np.array_equal(
        np.asarray(image_from_data_url(wrapped, 4096)), np.asarray(image_from_data_url(PNG_32, 4096))
    )
