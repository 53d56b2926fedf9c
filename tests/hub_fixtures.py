"""A small Hugging Face Hub on 127.0.0.1: the parts of the hub's HTTP API that `huggingface_hub` downloads with
(repo info, file tree, HEAD/GET of `resolve/` with the commit, etag and size headers, byte ranges), gated and
missing repos answered as the hub answers them. Repos are folders of files; the cache it fills is the real one."""

import hashlib
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import unquote, urlparse


class FakeHub:
    """`repos[repo_id] = folder`; `gated` repo ids answer 403 GatedRepo to every request."""

    def __init__(self) -> None:
        self.repos: dict[str, Path] = {}
        self.gated: set[str] = set()
        self.requests: list[str] = []
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: object) -> None:
                pass

            def do_HEAD(self) -> None:
                hub._answer(self, body=False)

            def do_GET(self) -> None:
                hub._answer(self, body=True)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    def commit(self, repo: str) -> str:
        digest = hashlib.sha1(repo.encode())
        for file in sorted(self.repos[repo].rglob("*")):
            if file.is_file():
                digest.update(str(file.relative_to(self.repos[repo])).encode() + file.read_bytes())
        return digest.hexdigest()

    def _files(self, repo: str) -> list[Path]:
        return sorted(p for p in self.repos[repo].rglob("*") if p.is_file())

    def _answer(self, request: BaseHTTPRequestHandler, body: bool) -> None:
        path = unquote(urlparse(request.path).path)
        self.requests.append(f"{request.command} {path}")
        api = re.fullmatch(r"/api/models/([^/]+/[^/]+)/(revision|tree)/([^/]+)(/.*)?", path)
        resolve = re.fullmatch(r"/([^/]+/[^/]+)/resolve/([^/]+)/(.+)", path)
        repo = (api or resolve)[1] if (api or resolve) else None
        if repo is None or repo not in self.repos:
            return self._error(request, 401, "RepoNotFound", "Repository Not Found")
        if repo in self.gated:
            return self._error(request, 403, "GatedRepo", f"Access to model {repo} is restricted.")
        root, sha = self.repos[repo], self.commit(repo)
        if api and api[2] == "revision":
            siblings = [{"rfilename": p.relative_to(root).as_posix()} for p in self._files(repo)]
            return self._json(request, {"id": repo, "modelId": repo, "sha": sha, "siblings": siblings}, body)
        if api:
            tree = [
                {
                    "type": "file",
                    "path": p.relative_to(root).as_posix(),
                    "size": p.stat().st_size,
                    "oid": _oid(p),
                }
                for p in self._files(repo)
            ]
            return self._json(request, tree, body)
        file = root / resolve[3]
        if not file.is_file():
            return self._error(request, 404, "EntryNotFound", f"{resolve[3]} does not exist")
        data = file.read_bytes()
        start = 0
        ranged = re.fullmatch(r"bytes=(\d+)-", request.headers.get("Range", ""))
        if ranged and body:
            start = int(ranged[1])
        request.send_response(206 if start else 200)
        request.send_header("X-Repo-Commit", sha)
        request.send_header("ETag", f'"{_oid(file)}"')
        request.send_header("Content-Length", str(len(data) - start))
        request.send_header("Accept-Ranges", "bytes")
        request.end_headers()
        if body:
            request.wfile.write(data[start:])

    def _json(self, request: BaseHTTPRequestHandler, value: object, body: bool) -> None:
        data = json.dumps(value).encode()
        request.send_response(200)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        if body:
            request.wfile.write(data)

    def _error(self, request: BaseHTTPRequestHandler, status: int, code: str, message: str) -> None:
        data = json.dumps({"error": message}).encode()
        request.send_response(status)
        request.send_header("X-Error-Code", code)
        request.send_header("X-Error-Message", message)
        request.send_header("Content-Type", "application/json")
        request.send_header("Content-Length", str(len(data)))
        request.end_headers()
        if request.command != "HEAD":
            request.wfile.write(data)


def _oid(file: Path) -> str:
    return hashlib.sha256(file.read_bytes()).hexdigest()
