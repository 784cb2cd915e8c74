"""A small Hugging Face Hub-compatible file server on loopback, for download tests.

The real Hub cannot be reached from CI (and must not be: tests may not depend on the network or
download gigabytes), so this server stands in for it. It answers exactly what the real
``huggingface_hub`` client asks for when ``hf_hub_download`` / ``get_hf_file_metadata`` fetch files
of a public model repo (read from huggingface_hub's file_download.py and utils/_http.py):

- ``HEAD`` and ``GET /{org}/{repo}/resolve/{revision}/{path}`` with ``X-Repo-Commit`` (the client
  refuses a response without it), ``ETag`` (the sha256 for LFS-like ``*.safetensors`` files, the git
  blob sha1 for small files, as the Hub does), ``Content-Length`` and ``Accept-Ranges``;
- ``Range: bytes=N-`` answered with 206 and ``Content-Range`` (the client resumes with it);
- errors with the Hub's ``X-Error-Code`` header (RepoNotFound, RevisionNotFound, EntryNotFound).

No ``X-Xet-*`` header is ever sent, so the client never switches to Xet storage; any other path is
answered 404 and logged, so a test can assert that nothing else was asked.

Fault injection, per (repo, path): ``drop_once`` (send the headers of the whole file, that many
bytes, then close the connection: once), ``delay`` (seconds between 64 KiB chunks), ``corrupt``
(flip one byte of the body, keep the ETag of the real file).
"""

from __future__ import annotations

import asyncio
import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path

from aiohttp import web

CHUNK = 64 * 1024


@dataclass
class Repo:
    files: dict[str, bytes]
    commit: str


@dataclass
class Request:
    method: str
    path: str
    headers: dict[str, str]


def git_blob_sha1(data: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


def is_lfs(path: str) -> bool:
    return path.endswith(".safetensors")


@dataclass
class FakeHub:
    repos: dict[str, Repo] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    drop_once: dict[tuple[str, str], int] = field(default_factory=dict)
    delay: dict[tuple[str, str], float] = field(default_factory=dict)
    corrupt: set[tuple[str, str]] = field(default_factory=set)
    port: int | None = None

    # ------------------------------------------------------------------------------ content

    def add_repo(self, repo_id: str, files: dict[str, bytes]) -> str:
        commit = hashlib.sha1(repr(sorted((p, hashlib.sha256(d).hexdigest()) for p, d in files.items()))
                              .encode()).hexdigest()
        self.repos[repo_id] = Repo(dict(files), commit)
        return commit

    def add_folder(self, repo_id: str, folder: Path, extra: dict[str, bytes] | None = None) -> str:
        files = {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}
        return self.add_repo(repo_id, {**files, **(extra or {})})

    def etag(self, repo_id: str, path: str) -> str:
        data = self.repos[repo_id].files[path]
        return hashlib.sha256(data).hexdigest() if is_lfs(path) else git_blob_sha1(data)

    # ------------------------------------------------------------------------------ log

    def gets(self, path_part: str = "") -> list[Request]:
        """The file transfers (GET /…/resolve/…) whose path contains ``path_part``."""
        return [r for r in self.requests if r.method == "GET" and "/resolve/" in r.path and path_part in r.path]

    def unexpected(self) -> list[Request]:
        return [r for r in self.requests if "/resolve/" not in r.path]

    # ------------------------------------------------------------------------------ server

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self) -> FakeHub:
        started = threading.Event()
        self._loop = asyncio.new_event_loop()

        async def serve() -> None:
            app = web.Application()
            app.router.add_route("*", "/{org}/{name}/resolve/{revision}/{path:.+}", self._resolve)
            app.router.add_route("*", "/{tail:.*}", self._other)
            self._runner = web.AppRunner(app, access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, "127.0.0.1", 0)
            await site.start()
            self.port = site._server.sockets[0].getsockname()[1]
            started.set()

        def run() -> None:
            asyncio.set_event_loop(self._loop)
            self._loop.run_until_complete(serve())
            self._loop.run_forever()

        self._thread = threading.Thread(target=run, name="fake-hub", daemon=True)
        self._thread.start()
        if not started.wait(10):
            raise RuntimeError("fake hub did not start")
        return self

    def stop(self) -> None:
        if self.port is None:
            return
        asyncio.run_coroutine_threadsafe(self._runner.cleanup(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self.port = None

    def __enter__(self) -> FakeHub:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ------------------------------------------------------------------------------ handlers

    def _log(self, request: web.Request) -> None:
        self.requests.append(Request(request.method, request.path, dict(request.headers)))

    async def _other(self, request: web.Request) -> web.StreamResponse:
        self._log(request)
        return web.Response(status=404, headers={"X-Error-Code": "RepoNotFound"})

    async def _resolve(self, request: web.Request) -> web.StreamResponse:
        self._log(request)
        info = request.match_info
        repo_id, revision, path = f"{info['org']}/{info['name']}", info["revision"], info["path"]
        repo = self.repos.get(repo_id)
        if repo is None:
            return web.Response(status=404, headers={"X-Error-Code": "RepoNotFound",
                                                     "X-Error-Message": "Repository not found"})
        if revision not in ("main", repo.commit):
            return web.Response(status=404, headers={"X-Error-Code": "RevisionNotFound"})
        if path not in repo.files:
            return web.Response(status=404, headers={"X-Error-Code": "EntryNotFound", "X-Repo-Commit": repo.commit})
        data = repo.files[path]
        key = (repo_id, path)
        headers = {"X-Repo-Commit": repo.commit, "ETag": f'"{self.etag(repo_id, path)}"',
                   "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if request.method == "HEAD":
            return web.Response(status=200, headers={**headers, "Content-Length": str(len(data))})
        if key in self.corrupt:
            data = bytes([data[0] ^ 0xFF]) + data[1:]
        start, status = 0, 200
        requested = request.headers.get("Range", "")
        if requested.startswith("bytes="):
            first, _, last = requested[6:].partition("-")
            start, end = int(first), int(last) + 1 if last else len(data)
            headers["Content-Range"] = f"bytes {start}-{end - 1}/{len(data)}"
            data, status = data[start:end], 206
        response = web.StreamResponse(status=status, headers=headers)
        response.content_length = len(data)
        await response.prepare(request)
        cut = self.drop_once.pop(key, None)
        for offset in range(0, len(data), CHUNK):
            if cut is not None and offset + CHUNK > cut:
                await response.write(data[offset:cut])
                request.transport.close()  # the connection drops mid-file
                return response
            await response.write(data[offset:offset + CHUNK])
            if key in self.delay:
                await asyncio.sleep(self.delay[key])
        await response.write_eof()
        return response
