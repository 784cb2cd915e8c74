"""What a dataset run reads and where each result goes: inputs found, named, and checked for collisions.

Every input gets a *name*, its path relative to the input it was found under ('/'-separated): a folder's
files keep their place inside it, a glob's matches their place under the pattern's fixed part, a list
file's entries their place beside it, a single file its file name. Outputs mirror the names, so two
inputs whose names differ only by extension (or two folders holding the same name) would write the
same files: that is refused before any work.
"""

from __future__ import annotations

import glob
import os
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from ..errors import LotusError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".webp", ".bmp", ".tif", ".tiff", ".gif", ".jfif", ".ppm",
                            ".pgm", ".heic"})
VIDEO_SUFFIXES = frozenset({".mp4", ".mov", ".mkv", ".webm", ".avi", ".m4v"})
LIST_SUFFIXES = frozenset({".txt", ".lst"})  # a list file: one input path per line, '#' starts a comment
GLOB_CHARACTERS = frozenset("*?[")


@dataclass(frozen=True, order=True)
class Source:
    """One input file and its name in the run (its relative path, which its outputs mirror)."""

    name: str
    path: Path

    @property
    def is_video(self) -> bool:
        return self.path.suffix.lower() in VIDEO_SUFFIXES

    @property
    def stem(self) -> PurePosixPath:
        """The outputs' common prefix, relative to the output folder: the name without its extension."""
        name = PurePosixPath(self.name)
        return name.with_name(name.stem)


def find_sources(inputs: list[str | Path], output: Path | None = None) -> list[Source]:
    """The run's inputs (files, folders searched recursively, globs, list files), sorted by name,
    without anything under ``output`` (an output folder inside an input folder is not read back).

    Raises LotusError for an input that does not exist and for names that would share outputs.
    """
    skip = output.resolve() if output is not None else None
    found: dict[tuple[str, Path], Source] = {}
    for given in inputs:
        for source in _expand(str(given)):
            resolved = source.path.resolve()
            if skip is not None and resolved.is_relative_to(skip):
                continue
            found[(source.name, resolved)] = source
    sources = sorted(found.values())
    check_collisions(sources)
    return sources


def check_collisions(sources: list[Source]) -> None:
    """Refuse inputs whose outputs would be the same files (e.g. ``x.png`` and ``x.jpg`` in one folder)."""
    by_stem: dict[str, list[Source]] = defaultdict(list)
    for source in sources:  # casefolded: on macOS and Windows X.png and x.jpg write the same files
        by_stem[str(source.stem).casefold()].append(source)
    clashes = [group for group in by_stem.values() if len(group) > 1]
    videos = [source for source in sources if source.is_video]  # a video writes into a folder of its stem
    clashes += [[video, source] for video in videos for source in sources
                if source is not video and source.stem.is_relative_to(video.stem)]
    if not clashes:
        return
    shown = "; ".join(" and ".join(str(source.path) for source in group) + f" -> {group[0].stem}_*"
                      for group in clashes[:5])
    more = f" (and {len(clashes) - 5} more)" if len(clashes) > 5 else ""
    raise LotusError(f"{sum(map(len, clashes))} inputs would write the same output files: {shown}{more}. Nothing"
                     " was written. Rename them, pass their common parent folder (names then keep their"
                     " subfolders), or run them into different output folders")


def _expand(given: str) -> list[Source]:
    path = Path(given).expanduser()
    if path.is_dir():
        return [Source(file.relative_to(path).as_posix(), file) for file in _media_files(path.rglob("*"))]
    if path.is_file():
        if path.suffix.lower() in LIST_SUFFIXES:
            return _listed(path)
        return [Source(path.name, path)]
    if GLOB_CHARACTERS & set(given):
        root = _fixed_part(path)
        matches = [Path(match) for match in glob.glob(str(path), recursive=True)]
        files = _media_files(match for match in matches if match.is_file())
        if not files:
            raise LotusError(f"input pattern {given!r} matches no image or video file")
        return [Source(file.relative_to(root).as_posix(), file) for file in files]
    raise LotusError(f"input {given!r} does not exist (a file, folder, glob pattern or list file)")


def _listed(list_file: Path) -> list[Source]:
    """A list file's entries: paths relative to the list file's folder (or absolute), one per line."""
    sources = []
    for number, line in enumerate(list_file.read_text().splitlines(), start=1):
        entry = line.split("#", 1)[0].strip()
        if not entry:
            continue
        path = (list_file.parent / entry).expanduser()
        if not path.is_file():
            raise LotusError(f"{list_file}, line {number}: {entry!r} is not a file")
        inside = path.resolve().is_relative_to(list_file.parent.resolve()) and not Path(entry).is_absolute()
        sources.append(Source(os.path.normpath(entry).replace(os.sep, "/") if inside else path.name, path))
    return sources


def _media_files(paths) -> list[Path]:
    """Image and video files among ``paths``, without hidden ones (e.g. partly written outputs)."""
    suffixes = IMAGE_SUFFIXES | VIDEO_SUFFIXES
    return sorted(path for path in paths if path.suffix.lower() in suffixes and not path.name.startswith(".")
                  and path.is_file())


def _fixed_part(pattern: Path) -> Path:
    """The folder a glob pattern's matches are named relative to: its parts before the first wildcard."""
    fixed = []
    for part in pattern.parts:
        if GLOB_CHARACTERS & set(part):
            break
        fixed.append(part)
    return Path(*fixed) if fixed else Path(".")
