"""Crash-safe files: whenever a process is killed, each file holds its old or its new content, whole.

* [`atomic_write_text`] / [`atomic_write_json`]: write a temporary file next to the target, flush and
  fsync it, then `os.replace` it over the target (an atomic rename on POSIX and Windows).
* [`partial_directory`] / [`publish_directory`]: build a folder (a checkpoint, an exported model)
  under `NAME.partial`, then rename it to `NAME`; a folder without `.partial` is always complete.
* [`append_jsonl`]: append one JSON record with a single `write` call. A kill lands before or after
  a system call, never inside one, so only a power cut can leave a torn last line, which
  [`read_jsonl`] skips.

The training loops (`hf_hjprune.train`, and any other loop reusing its checkpoint helpers) write
every result through these functions.
"""

from __future__ import annotations

import json
import logging
import os
import secrets
import shutil
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

PARTIAL_SUFFIX = ".partial"
"""Suffix of a folder still being written: readers ignore it, the next writer replaces it."""


def _fsync_directory(path: Path) -> None:
    """Make a rename inside `path` durable (a no-op where directories cannot be opened, e.g. Windows)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Replace the file at `path` with `data`: readers see the old or the new content, never a mix."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.with_name(f".{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        with open(temporary, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
    _fsync_directory(path.parent)


def atomic_write_text(path: str | os.PathLike, text: str, encoding: str = "utf-8") -> None:
    """[`atomic_write_bytes`] for text."""
    atomic_write_bytes(path, text.encode(encoding))


def atomic_write_json(path: str | os.PathLike, value: Any, indent: int | None = 2) -> None:
    """Write `value` as JSON (with a final newline) atomically."""
    atomic_write_text(path, json.dumps(value, indent=indent) + "\n")


def partial_directory(final: str | os.PathLike) -> Path:
    """An empty `FINAL.partial` folder to build `final` in (a stale one from a killed writer is removed)."""
    partial = Path(final).with_name(Path(final).name + PARTIAL_SUFFIX)
    shutil.rmtree(partial, ignore_errors=True)
    partial.mkdir(parents=True)
    return partial


def publish_directory(partial: str | os.PathLike, final: str | os.PathLike) -> None:
    """Make the complete folder `partial` the folder `final`, replacing an older `final`.

    The files are fsynced first, so that `final` is complete even after a power cut. An older
    `final` is moved aside before the rename and deleted after it: at any moment one complete
    version exists (as `final`, or as `final.old` and `partial`).
    """
    partial, final = Path(partial), Path(final)
    for root, _, files in os.walk(partial):
        for name in files:
            fd = os.open(os.path.join(root, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    old = final.with_name(final.name + ".old")
    if final.exists():
        shutil.rmtree(old, ignore_errors=True)
        final.rename(old)
    partial.rename(final)
    _fsync_directory(final.parent)
    shutil.rmtree(old, ignore_errors=True)


def append_jsonl(path: str | os.PathLike, record: dict[str, Any]) -> None:
    """Append `record` as one line to a JSON-lines file, in a single `write` call."""
    data = (json.dumps(record) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        written = os.write(fd, data)
        while written < len(data):  # only a full disk or an odd file system writes less
            written += os.write(fd, data[written:])
    finally:
        os.close(fd)


def read_jsonl_lines(path: str | os.PathLike) -> list[tuple[str, dict[str, Any]]]:
    """`(line, record)` pairs of a JSON-lines file; a torn last line (a cut write) is skipped with a warning.

    Raises:
        ValueError: A line other than the last one is not JSON (the file is damaged, not torn).
    """
    lines = [
        line for line in Path(path).read_text(encoding="utf-8", errors="replace").splitlines() if line.strip()
    ]
    pairs = []
    for number, line in enumerate(lines, start=1):
        try:
            pairs.append((line, json.loads(line)))
        except ValueError as err:
            if number < len(lines):
                raise ValueError(f"{path}: line {number} is not JSON ({err}); the file is damaged") from err
            logger.warning(
                "%s: skipping a torn last line (%d characters) left by an interrupted write", path, len(line)
            )
    return pairs


def read_jsonl(path: str | os.PathLike) -> list[dict[str, Any]]:
    """The records of a JSON-lines file, tolerating a torn last line (see [`read_jsonl_lines`])."""
    return [record for _, record in read_jsonl_lines(path)]
