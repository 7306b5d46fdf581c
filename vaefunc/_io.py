"""Atomic file writes: a crash never leaves a half-written file behind.

The bytes go to a temporary file in the destination's folder (same file system,
so the rename is atomic), which is flushed and fsync'ed, then renamed over the
destination with ``os.replace``; the folder is fsync'ed too where the OS allows.
"""

from __future__ import annotations

import json
import os
import stat
import tempfile
from pathlib import Path
from typing import Any

MAX_TEXT_BYTES = 2**20
"""The largest settings file (a --config file, a run's config.json) read: 1 MiB."""


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically; returns the path.

    Readers see either the old file or the complete new one, never a part.
    """
    path = Path(path)
    folder = path.parent if str(path.parent) else Path(".")
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=folder)
    except OSError as e:
        raise _named(e, path) from e
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the file the usual permissions
        with os.fdopen(fd, "wb") as f:
            _write(f, data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        try:
            os.unlink(tmp)
        except FileNotFoundError:
            pass
        if isinstance(e, OSError):  # a full disk, say: the old file is whole, and the error names the new one
            raise _named(e, path) from e
        raise
    _fsync_dir(folder)
    return path


def _write(f: Any, data: bytes) -> None:
    """The write itself (a test replaces it to simulate a full disk)."""
    f.write(data)


def _named(error: OSError, path: Path) -> OSError:
    """``error`` naming ``path`` when it names no file (a failed write or fsync names none)."""
    if error.filename is not None or error.errno is None:
        return error
    return type(error)(error.errno, error.strerror or os.strerror(error.errno), str(path))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically; returns the path."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _fsync_dir(folder: Path) -> None:
    """Make the rename itself durable (POSIX); a no-op where folders cannot be opened."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def read_small_text(path: str | os.PathLike, limit: int = MAX_TEXT_BYTES) -> str:
    """A settings file's UTF-8 text: a regular file (never a FIFO or a device, which may block or never
    end) of at most ``limit`` bytes. Raises ValueError saying which, or OSError/UnicodeDecodeError."""
    path = Path(path)
    info = os.stat(path)
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file (a FIFO, device or socket)"
        raise ValueError(f"must be a regular file; got {kind}")
    with open(path, "rb") as f:
        data = f.read(limit + 1)  # the size may have changed since the stat
    if len(data) > limit:
        raise ValueError(f"must be at most {limit} bytes; got {max(info.st_size, len(data))}")
    return data.decode("utf-8")


def parse_json(text: str | bytes) -> Any:
    """``json.loads``, with nesting too deep for the parser reported as a ValueError."""
    try:
        return json.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply to parse") from None


def parse_toml(text: str) -> Any:
    """``tomllib.loads`` (or tomli's), with nesting too deep for the parser reported as a ValueError."""
    try:
        import tomllib
    except ModuleNotFoundError:  # Python 3.10
        import tomli as tomllib  # type: ignore[no-redef]  # the same loads(), Python 3.10's
    try:
        return tomllib.loads(text)
    except RecursionError:
        raise ValueError("nested too deeply to parse") from None
