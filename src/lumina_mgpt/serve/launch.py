"""Run `lumina-mgpt serve` in a subprocess on a free loopback port (for tests, benchmarks and scripts).

with server_process("--model", folder, "--no-ui") as url:
    httpx.post(f"{url}/v1/images/generations", json={"prompt": "a red star"})
"""

import json
import os
import re
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
    command = [sys.executable, "-m", "lumina_mgpt.serve", "--host", "127.0.0.1", "--port", "0", *args]
    process = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env={**os.environ, **(env or {})},
    )
    lines: Queue[str] = Queue()
    output: list[str] = []

    def drain() -> None:  # keep reading so the server never blocks on a full pipe
        for line in process.stdout:
            output.append(line)
            lines.put(line)

    threading.Thread(target=drain, daemon=True).start()
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
            elif process.poll() is not None or time.monotonic() > deadline:
                raise LuminaError(f"the server did not start: {''.join(output[-20:]).strip() or 'no output'}")
        while not _healthy(url):
            if process.poll() is not None or time.monotonic() > deadline:
                raise LuminaError(
                    f"the server at {url} never became healthy: {''.join(output[-20:]).strip()}"
                )
            time.sleep(0.1)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(15)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=5) as response:
            return json.load(response).get("status") == "ok"
    except OSError:
        return False
