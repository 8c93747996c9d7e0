"""Writing files so that no reader ever sees a partial one, and cleaning up after dead writers.

Every temporary file or directory this package makes is named ``.<name>.<host>.<pid>.<random>.tmp``
and lives beside its destination: concurrent writers never touch each other's files, and
:func:`remove_stale_temporaries` can tell a dead writer's leftovers from a live one's.
"""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import BinaryIO

from polars_curate.storage import Loc, S3Path

__all__ = [
    "HOST",
    "remove_stale_temporaries",
    "temporary_directory",
    "write_atomic",
    "write_once",
]

#: This host, as temporary names spell it.
HOST = socket.gethostname().replace(".", "-")


def _temporary_prefix(name: str) -> str:
    return f".{name}.{HOST}.{os.getpid()}."


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write_temporary(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """``write(file)`` into a fsynced temporary file beside ``path``; its path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=_temporary_prefix(path.name), suffix=".tmp", dir=path.parent)
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "w+b") as f:  # readable too: writers may move data
            write(f)
            f.flush()
            os.fsync(f.fileno())
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return Path(tmp)


def write_atomic(path: Loc, write: Callable[[BinaryIO], object]) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it to
    ``path`` (atomic on POSIX). On any error the temporary file is removed and ``path`` is left
    as it was. On a bucket the temporary file is local and goes up in one PUT (an object is
    whole or absent)."""
    if isinstance(path, S3Path):
        with tempfile.TemporaryDirectory(prefix=".polars-curate-") as d:
            tmp = _write_temporary(Path(d) / path.name, write)
            path.put(tmp)
        return
    tmp = _write_temporary(path, write)
    try:
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise


def write_once(path: Loc, data: bytes) -> bool:
    """Create ``path`` holding ``data`` unless it exists, atomically also against a concurrent
    writer (a hard link never replaces a file; on a bucket, a PUT with ``If-None-Match: *``).
    Returns whether this call created it."""
    if isinstance(path, S3Path):
        try:
            path.put(data, create=True)
            return True
        except FileExistsError:
            return False
    if path.exists():
        return False
    tmp = _write_temporary(path, lambda f: f.write(data))
    try:
        os.link(tmp, path)
        return True
    except FileExistsError:
        return False
    finally:
        tmp.unlink(missing_ok=True)


@contextmanager
def temporary_directory(beside: Loc, name: str) -> Iterator[Path]:
    """A directory for intermediate files next to ``beside`` (same file system, so staged files
    are cheap to write; the system's temporary directory for a bucket), removed on exit; a
    dead process's is removed by :func:`remove_stale_temporaries`."""
    local = isinstance(beside, Path) and beside.parent.is_dir()
    parent = beside.parent if local else Path(tempfile.gettempdir())
    tmp = Path(tempfile.mkdtemp(prefix=_temporary_prefix(name), suffix=".tmp", dir=parent))
    try:
        yield tmp
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _writer_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # alive, not ours to signal
    return True


def remove_stale_temporaries(directory: Loc) -> int:
    """Remove the temporary files and directories that a writer on this host left in
    ``directory`` when it died (its process no longer exists); those of live writers and of
    other hosts are left alone. Returns the count. (A bucket holds no temporaries.)"""
    removed = 0
    if isinstance(directory, S3Path) or not directory.is_dir():
        return 0
    for f in directory.glob(f".*.{HOST}.*.tmp"):
        parts = f.name.rsplit(".", 3)  # [".<name>.<host>", "<pid>", "<random>", "tmp"]
        try:
            pid = int(parts[1])
        except (IndexError, ValueError):
            continue
        if _writer_alive(pid):
            continue
        if f.is_dir() and not f.is_symlink():
            shutil.rmtree(f, ignore_errors=True)
        else:
            f.unlink(missing_ok=True)
        removed += 1
    return removed
