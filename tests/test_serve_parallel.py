"""`serve --tensor-parallel 2` on gloo: rank 0 answers HTTP, rank 1 follows its decode batches. Served images
and chat replies equal a single-process server's byte for byte (also after a cancelled decode); a rank killed
(or hung) mid-request gives the client 503 and the server exits instead of hanging."""

import os
import signal
import subprocess
from concurrent.futures import ThreadPoolExecutor

import httpx
import pytest
import torch
from fastapi.testclient import TestClient
from test_generate_helpers import image_replies_folder
from test_serve_app import BIG, CHAT, GENERATIONS, health, raw_request, wait_until

from lumina_mgpt.pipeline import LuminaMGPTPipeline
from lumina_mgpt.serve.app import create_app
from lumina_mgpt.serve.launch import tensor_parallel_server

OPTIONS = ["--no-ui", "--threads", "1", "--log-level", "warning"]
ENV = {"OMP_NUM_THREADS": "1"}
IMAGE = {"prompt": "a red star", "n": 2, "seed": 11, "size": "32x32"}
CHAT_BODY = {
    "messages": [{"role": "user", "content": "a photo of a red star"}],
    "seed": 4,
    "size": "32x32",
    "max_tokens": 40,  # an image and a half: the reply stops at the limit
}


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return image_replies_folder(tmp_path_factory.mktemp("tp-served") / "tiny-shapes")


def replies(client) -> tuple[list[str], dict]:
    """The images of a generation and the message of a chat, as served (base64 PNG bytes)."""
    images = client.post(GENERATIONS, json=IMAGE).raise_for_status().json()
    chat = client.post(CHAT, json=CHAT_BODY).raise_for_status().json()
    return [d["b64_json"] for d in images["data"]], chat["choices"][0]["message"]


@pytest.fixture(scope="module")
def alone(folder):
    """What one process serves: the same app in this process (one thread, like the servers)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with TestClient(create_app(LuminaMGPTPipeline.from_pretrained(folder), ui=False)) as client:
            return replies(client)
    finally:
        torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def two_ranks(folder):
    with tensor_parallel_server("--model", str(folder), *OPTIONS, ranks=2, env=ENV) as server:
        yield server


def test_two_ranks_serve_one_process_images_and_chats(two_ranks, alone):
    url, _ = two_ranks
    with httpx.Client(base_url=url, timeout=120) as client:
        # a decode its client leaves stops on both ranks at the same step; the next ones are still in step
        leaving = raw_request(url, GENERATIONS, {"prompt": "a long one"} | BIG)
        wait_until(client, lambda h: h["running"] == 1)
        leaving.close()
        wait_until(client, lambda h: h["aborted_decodes"] == 1 and h["running"] == 0)
        assert replies(client) == alone
        assert health(client)["failed_decodes"] == 0


def lose_rank_one(url: str, ranks: list[subprocess.Popen], fault: signal.Signals) -> None:
    """Send `fault` to rank 1 mid-decode: the request gets 503 `rank_lost` and rank 0 exits with status 1."""
    with httpx.Client(base_url=url, timeout=60) as client, ThreadPoolExecutor(1) as pool:
        running = pool.submit(client.post, GENERATIONS, json={"prompt": "a long one"} | BIG)
        wait_until(client, lambda h: h["running"] == 1)
        os.kill(ranks[1].pid, fault)
        reply = running.result(timeout=30)
    assert reply.status_code == 503, reply.text
    error = reply.json()["error"]
    assert error["code"] == "rank_lost" and "tensor-parallel rank was lost" in error["message"]
    try:
        ranks[0].wait(30)
    except subprocess.TimeoutExpired:
        pytest.fail("rank 0 did not exit after losing rank 1")
    assert ranks[0].returncode == 1


def test_a_killed_rank_gives_503_and_the_server_exits(two_ranks):  # last: it ends the module's server
    lose_rank_one(*two_ranks, signal.SIGKILL)


def test_a_hung_rank_gives_503_after_the_rank_timeout(folder):
    options = [*OPTIONS, "--rank-timeout", "3"]
    with tensor_parallel_server("--model", str(folder), *options, ranks=2, env=ENV) as (url, ranks):
        try:
            lose_rank_one(url, ranks, signal.SIGSTOP)  # alive but silent: only the watchdog can tell
        finally:
            ranks[1].kill()
