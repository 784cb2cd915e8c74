"""Known Lotus releases by name: downloaded through ``huggingface_hub``, verified, found again offline.

    folder = fetch("lotus-depth-g-v2-1-disparity")                      # into the Hugging Face cache
    folder = fetch("lotus-depth-g-v2-1-disparity", local_dir="models/lotus/lotus-depth-g-v2-1-disparity")

A release is fetched as a self-contained diffusers folder: ``model_index.json``, ``unet/`` and
``vae/`` (config + weights each); the text encoder is never needed. The rules:

- What is already complete on disk is used as is, without any network call (so a machine that has
  the files works offline whatever ``HF_HUB_OFFLINE`` says). Only missing files are fetched.
- Everything goes through ``huggingface_hub`` (``hf_hub_download``), which honours ``HF_ENDPOINT``,
  ``HF_TOKEN``, ``HF_HOME``/``HF_HUB_CACHE`` and ``HF_HUB_OFFLINE``; they are read from
  ``huggingface_hub.constants`` when a download runs, never copied at import.
- A file is written to a temporary name and renamed when complete: a dropped connection is resumed
  (HTTP Range) by the library, a failed transfer is deleted, so a partial file is never loaded.
- The free disk space is checked against the files' sizes before any transfer.
- Each downloaded file is checked against a sha256: the table's where it has one (full or published
  prefix), else the one the Hub publishes for LFS files (its ETag). A mismatch deletes the file and
  raises a ``LotusError`` with both hashes.
- Every failure says what to do, including the URLs and the folder to place the files by hand.
"""

from __future__ import annotations

import errno
import inspect
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..errors import LotusError
from ..progress import ProgressCallback
from .variants import KNOWN_CHECKPOINTS, HubFile, KnownCheckpoint, known_checkpoint, sha256_of

"""Called with (bytes done, bytes to download) during a download; it may raise to cancel it."""

SHA256_HEX = re.compile(r"[0-9a-f]{64}")
DEFAULT_ENDPOINT = "https://huggingface.co"


def fetch(checkpoint: str | KnownCheckpoint, *, local_dir: str | Path | None = None,
          cache_dir: str | Path | None = None, progress: ProgressCallback | None = None) -> Path:
    """The local diffusers folder of a known release, downloaded first if anything is missing.

    Args:
        checkpoint: a name from ``KNOWN_CHECKPOINTS`` (e.g. "lotus-depth-g-v1-0") or its entry.
        local_dir: put the files in this folder (e.g. ComfyUI's ``models/lotus/<name>``); default:
            the Hugging Face cache (``HF_HUB_CACHE``, or ``cache_dir``), shared with other tools.
        progress: called with (bytes done, bytes total) while downloading; may raise to cancel
            (the file being transferred is deleted). Default: huggingface_hub's own bars.

    Raises:
        LotusError: offline or unreachable without the files, not enough disk space, a wrong hash.
    """
    known = _known(checkpoint)
    local = Path(local_dir).expanduser().absolute() if local_dir is not None else None
    folder = find_local(known, local_dir=local, cache_dir=cache_dir)
    if folder is not None:
        return folder
    if is_offline():
        raise LotusError(
            f"{known.name} is not on this machine yet, and downloads are turned off (HF_HUB_OFFLINE is set)."
            f" Unset HF_HUB_OFFLINE (or set it to 0) and run again, or install it by hand. {by_hand(known, local)}"
        )

    bar = _Progress(progress)
    try:
        missing = [f for f in known.download if not _present(known, f, local, cache_dir)]
        plan = [_plan(known, f) for f in missing]
        _check_disk_space(known, sum(p.size for p in plan), local or _cache_root(cache_dir), local is not None)
        bar.total = sum(p.size for p in plan)
        for planned in plan:
            path = _download(known, planned, local, cache_dir, bar)
            _verify(known, planned, path, in_cache=local is None)
        bar.finish()
    except LotusError:
        raise
    except Exception as error:
        if error is bar.raised or not _is_transfer_error(error):
            raise  # e.g. the caller's cancel, raised from its progress callback
        raise _transfer_failed(known, error, local) from error

    folder = find_local(known, local_dir=local, cache_dir=cache_dir)
    if folder is None:  # the repository moved to a new commit between two of its files
        raise LotusError(f"{known.repo} changed on the Hub during the download; run again to complete it")
    return folder


def find_local(known: KnownCheckpoint, *, local_dir: str | Path | None = None,
               cache_dir: str | Path | None = None) -> Path | None:
    """The complete local folder of ``known`` (in ``local_dir``, else the HF cache), or None. No network."""
    if local_dir is not None:
        folder = Path(local_dir)
        return folder if all(_present_in(folder, f) for f in known.download) else None
    from huggingface_hub import try_to_load_from_cache

    found = [try_to_load_from_cache(known.repo, f.path, cache_dir=cache_dir, revision=known.revision)
             for f in known.download]
    if not all(isinstance(p, str) for p in found):
        return None
    folder = Path(found[-1]).parent  # model_index.json sits at the root
    return folder if all(Path(p) == folder / f.path for p, f in zip(found, known.download)) else None


def missing_files(known: KnownCheckpoint, folder: str | Path) -> list[str]:
    """The files of ``known``'s download that ``folder`` lacks (fp16 weight variants count as present)."""
    return [f.path for f in known.download if not _present_in(Path(folder), f)]


def is_offline() -> bool:
    """Whether huggingface_hub is in offline mode (HF_HUB_OFFLINE, as the library read it)."""
    from huggingface_hub import constants

    is_offline_mode = getattr(constants, "is_offline_mode", None)
    return bool(is_offline_mode()) if callable(is_offline_mode) else bool(constants.HF_HUB_OFFLINE)


def file_url(known: KnownCheckpoint, path: str) -> str:
    """Where a file of ``known`` is downloaded from (follows HF_ENDPOINT)."""
    from huggingface_hub import hf_hub_url

    return hf_hub_url(known.repo, path, revision=known.revision)


def by_hand(known: KnownCheckpoint, local_dir: Path | None) -> str:
    """How to install ``known`` without this program's download: the URLs and where the files go."""
    destination = local_dir if local_dir is not None else Path.cwd() / known.name
    urls = "\n".join(f"  {file_url(known, f.path)}" for f in known.download)
    folders = sorted({str(Path(f.path).parent) + "/" for f in known.download} - {"./"})
    keeping = f" keeping their sub-folders ({', '.join(folders)})" if folders else ""
    text = f"Download these {len(known.download)} files:\n{urls}\ninto {destination}{os.sep}{keeping}"
    text += "." if local_dir is not None else ", then pass that folder instead of the name."
    revision = f" --revision {known.revision}" if known.revision else ""
    files = " ".join(f.path for f in known.download)
    return f"{text}\nWith the hf command: hf download {known.repo} {files}{revision} --local-dir \"{destination}\""


# ---------------------------------------------------------------------------------------------------


@dataclass
class _Planned:
    file: HubFile
    size: int  # the Hub's size, else the table's
    expected: str | None  # sha256 (or prefix) to check, lower case
    source: str  # where `expected` comes from


class _Progress:
    """Sums the bytes of huggingface_hub's per-file progress bars into one callback."""

    def __init__(self, callback: ProgressCallback | None) -> None:
        self.callback = callback
        self.total = 0
        self.done = 0
        self.raised: BaseException | None = None

    def add(self, n: float | None) -> None:
        self.done += int(n or 0)
        self._report(min(max(self.done, 0), self.total))

    def finish(self) -> None:
        if self.callback is not None and self.total:
            self._report(self.total)  # files copied from the cache advance no bar

    def _report(self, done: int) -> None:
        if self.callback is None:
            return
        try:
            self.callback(done, self.total)
        except BaseException as error:
            self.raised = error
            raise

    def tqdm_class(self) -> type | None:
        """A tqdm stand-in for ``hf_hub_download(tqdm_class=…)``, or None for the library's bars."""
        if self.callback is None:
            return None
        progress = self

        class _Bar:
            def __init__(self, *args, initial: float = 0, total: float | None = None, **kwargs) -> None:
                self.n, self.total = initial, total
                if initial:
                    progress.add(initial)

            def __enter__(self):
                return self

            def __exit__(self, *exc) -> bool:
                return False

            def update(self, n: float | None = 1) -> None:
                self.n += n or 0
                progress.add(n)

            def update_transfer(self, n: float | None = 1) -> None:
                """Bytes on the wire (Xet downloads report them besides ``update``): not counted twice.
                Defined on the class so that huggingface_hub uses one bar, not two, for a Xet file."""

            def close(self) -> None:
                pass

            def __getattr__(self, name: str):  # refresh, set_postfix_str, update_transfer, …
                if name.startswith("__"):
                    raise AttributeError(name)
                return lambda *args, **kwargs: None

        return _Bar


def _known(checkpoint: str | KnownCheckpoint) -> KnownCheckpoint:
    if isinstance(checkpoint, KnownCheckpoint):
        known = checkpoint
    else:
        known = known_checkpoint(checkpoint)
        if known is None:
            names = ", ".join(k.name for k in KNOWN_CHECKPOINTS)
            raise LotusError(f"{checkpoint!r} is not a known Lotus release; known: {names}")
    if not known.download:
        raise LotusError(f"{known.name} has no downloadable files in lotus_core's table")
    return known


def _present_in(folder: Path, file: HubFile) -> bool:
    path = folder / file.path
    return path.is_file() or (path.suffix == ".safetensors" and path.with_suffix(".fp16.safetensors").is_file())


def _present(known: KnownCheckpoint, file: HubFile, local_dir: Path | None, cache_dir) -> bool:
    if local_dir is not None:
        return _present_in(local_dir, file)
    from huggingface_hub import try_to_load_from_cache

    return isinstance(try_to_load_from_cache(known.repo, file.path, cache_dir=cache_dir,
                                             revision=known.revision), str)


def _plan(known: KnownCheckpoint, file: HubFile) -> _Planned:
    """Ask the Hub for a file's size and sha256 (one HEAD request)."""
    from huggingface_hub import get_hf_file_metadata

    metadata = get_hf_file_metadata(file_url(known, file.path))
    etag = (metadata.etag or "").lower()
    if file.sha256:
        expected, source = file.sha256.lower(), "lotus_core's table of releases"
    elif SHA256_HEX.fullmatch(etag):  # the Hub's ETag of an LFS file is its sha256
        expected, source = etag, f"the sha256 the Hub publishes for {file.path}"
    else:
        expected, source = None, ""
    return _Planned(file, metadata.size or file.size, expected, source)


def _cache_root(cache_dir) -> Path:
    from huggingface_hub import constants

    return Path(cache_dir if cache_dir is not None else constants.HF_HUB_CACHE).expanduser()


def _check_disk_space(known: KnownCheckpoint, needed: int, target: Path, in_local_dir: bool) -> None:
    probe = target.absolute()
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    free = shutil.disk_usage(probe).free
    if free >= needed:
        return
    elsewhere = ("choose a destination on a larger disk (ComfyUI: a `lotus:` folder in extra_model_paths.yaml)"
                 if in_local_dir else "set HF_HUB_CACHE (or HF_HOME) to a folder on a larger disk")
    raise LotusError(
        f"not enough disk space to download {known.name}: it needs {needed / 1e9:.2f} GB in {target}, which has"
        f" {free / 1e9:.2f} GB free. Free {max(needed - free, 0) / 1e9:.2f} GB or {elsewhere}. Nothing was downloaded."
    )


def _download(known: KnownCheckpoint, planned: _Planned, local_dir: Path | None, cache_dir, bar: _Progress) -> Path:
    from huggingface_hub import hf_hub_download

    # hf_hub_download takes tqdm_class only since huggingface_hub 1.x; before, progress (and a cancel
    # raised from the callback) advances per file.
    per_byte = "tqdm_class" in inspect.signature(hf_hub_download).parameters
    extra = {"tqdm_class": bar.tqdm_class()} if per_byte and bar.callback is not None else {}
    path = Path(hf_hub_download(known.repo, planned.file.path, revision=known.revision, local_dir=local_dir,
                                cache_dir=cache_dir, **extra))
    if not per_byte:
        bar.add(planned.size)
    return path


def _verify(known: KnownCheckpoint, planned: _Planned, path: Path, in_cache: bool) -> None:
    if planned.expected is None:
        return
    actual = sha256_of(path)
    if actual.startswith(planned.expected):
        return
    removed = [path]
    if in_cache:  # the snapshot entry links to a blob: remove both
        removed.append(Path(os.path.realpath(path)))
    for item in removed:
        item.unlink(missing_ok=True)
    shown = planned.expected + ("…" if len(planned.expected) < 64 else "")
    raise LotusError(
        f"{known.repo}/{planned.file.path} has the wrong sha256: expected {shown} ({planned.source}), got {actual}."
        f" The file was deleted and not used. Run again to download it anew; if this repeats, the server"
        f" ({_endpoint()}) or a proxy on the way serves a different file."
    )


def _endpoint() -> str:
    from huggingface_hub import constants

    return constants.ENDPOINT


def _hf_error(name: str) -> type | tuple:
    """A huggingface_hub exception class by name (``()`` if this version lacks it: matches nothing)."""
    try:
        from huggingface_hub import errors
    except ImportError:  # huggingface_hub < 0.24
        from huggingface_hub import utils as errors
    if name == "RemoteEntryNotFoundError" and not hasattr(errors, name):
        name = "EntryNotFoundError"  # huggingface_hub < 1.0
    return getattr(errors, name, ())


def _is_transfer_error(error: BaseException) -> bool:
    module = type(error).__module__.split(".")[0]
    return (isinstance(error, (OSError, _hf_error("HfHubHTTPError")))
            or module in ("httpx", "httpx2", "requests", "urllib3"))


def _transfer_failed(known: KnownCheckpoint, error: BaseException, local_dir: Path | None) -> LotusError:
    endpoint = _endpoint()
    status = getattr(getattr(error, "response", None), "status_code", None)
    mirror = " (set by HF_ENDPOINT)" if endpoint.rstrip("/") != DEFAULT_ENDPOINT else ""
    kept, partial = "", " Files already complete were kept; no partial file was."
    if isinstance(error, _hf_error("GatedRepoError")):
        what = f"{endpoint} refused access to {known.repo} (HTTP {status}); set HF_TOKEN to a token that can read it"
    elif isinstance(error, _hf_error("RevisionNotFoundError")):
        what = f"{known.repo} has no revision {known.revision or 'main'} at {endpoint}{mirror}"
    elif isinstance(error, _hf_error("RemoteEntryNotFoundError")):
        what = f"a file is missing from {known.repo} at {endpoint}{mirror}: {error}"
    elif isinstance(error, _hf_error("RepositoryNotFoundError")):  # the Hub says 401 for a missing repo too
        what = f"{known.repo} was not found at {endpoint}{mirror}; if it needs a login, set HF_TOKEN"
    elif status in (401, 403):
        what = f"{endpoint} refused access to {known.repo} (HTTP {status}); set HF_TOKEN to a token that can read it"
    elif status is not None:
        what = f"{endpoint} answered HTTP {status} for {known.repo}"
    elif isinstance(error, OSError) and error.errno == errno.ENOSPC:
        what, kept = "the disk filled up during the download", partial
    else:
        what, kept = f"could not download from {endpoint}{mirror}: {type(error).__name__}: {error}", partial
    return LotusError(
        f"cannot download {known.name}: {what}.{kept} Run again when the problem is solved, or install it by hand."
        f" {by_hand(known, local_dir)}"
    )
