"""Run `lumina-mgpt serve` in a subprocess on a free loopback port (for tests, benchmarks and scripts).

with server_process("--model", folder, "--no-ui") as url:
    httpx.post(f"{url}/v1/images/generations", json={"prompt": "a red star"})
"""

import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from queue import Empty, Queue

from lumina_mgpt.errors import LuminaError

_URL = re.compile(r" at (http://\S+)/v1")


@contextmanager
def server_process(*args: str, env: dict[str, str] | None = None, timeout: float = 180.0) -> Iterator[str]:
    """Start `python -m lumina_mgpt.serve --host 127.0.0.1 --port 0 *args`, yield its base URL once /health
    answers, and stop it afterwards. Its output is kept and shown if it fails to start."""
    with tensor_parallel_server(*args, ranks=1, env=env, timeout=timeout) as (url, _):
        yield url


@contextmanager
def tensor_parallel_server(
    *args: str, ranks: int, env: dict[str, str] | None = None, timeout: float = 180.0
) -> Iterator[tuple[str, list[subprocess.Popen]]]:
    """As `server_process`, but `ranks` > 1 processes of one `--tensor-parallel ranks` job, started with the
    environment torchrun gives its workers (RANK, WORLD_SIZE, MASTER_ADDR, ...) and no torchrun agent, so a
    test sees what the server itself does when a rank dies. Yields the URL and the processes (rank order)."""
    command = [sys.executable, "-m", "lumina_mgpt.serve", "--host", "127.0.0.1", "--port", "0", *args]
    common = {**os.environ, **(env or {})}
    if ranks > 1:
        command += ["--tensor-parallel", str(ranks)]
        common |= dict(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE=str(ranks))
    processes, lines, output = [], Queue(), []
    for rank in range(ranks):
        extra = dict(RANK=str(rank), LOCAL_RANK=str(rank)) if ranks > 1 else {}
        process = subprocess.Popen(
            command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=common | extra
        )
        processes.append(process)
        threading.Thread(target=_drain, args=(process, lines, output), daemon=True).start()
    try:
        deadline = time.monotonic() + timeout
        url = None
        while url is None:
            try:
                line = lines.get(timeout=max(0.0, min(1.0, deadline - time.monotonic())))
            except Empty:
                line = ""
            if (match := _URL.search(line)) is not None:
                url = match[1]
            elif _any_exited(processes) or time.monotonic() > deadline:
                raise LuminaError(f"the server did not start: {''.join(output[-20:]).strip() or 'no output'}")
        while not _healthy(url):
            if _any_exited(processes) or time.monotonic() > deadline:
                raise LuminaError(
                    f"the server at {url} never became healthy: {''.join(output[-20:]).strip()}"
                )
            time.sleep(0.1)
        yield url, processes
    finally:
        processes[0].terminate()  # rank 0 tells the others to exit
        for process in processes:
            try:
                process.wait(15)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def _drain(process: subprocess.Popen, lines: Queue, output: list[str]) -> None:
    """Keep reading so the server never blocks on a full pipe."""
    for line in process.stdout:
        output.append(line)
        lines.put(line)


def _any_exited(processes: list[subprocess.Popen]) -> bool:
    return any(process.poll() is not None for process in processes)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            return json.load(response).get("status") == "ok"
    except OSError:
        return False
