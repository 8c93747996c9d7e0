"""DataComp's ``.npz`` embedding files: member headers, row ranges, and checksums.

A unit of a large npz reads only its rows of each member (a seek into a stored member), which
skips the zip's CRC-32 check: corrupt bytes in the middle of a member would be scored without a
word. So before any row of a member is used, the whole member is read once (in 16 MiB pieces)
and its CRC-32 checked against the zip's directory; a process remembers the members it has
verified (by path, size and modification time), so the units of one file are checked once.
"""

from __future__ import annotations

import threading
import zipfile

import numpy as np

from polars_curate._errors import PoolError
from polars_curate.storage import Loc, open_read

__all__ = ["member_headers", "member_rows", "unusable_reason"]

_EMBEDDING_DTYPES = ("<f2", "<f4", "<f8")
_VERIFIED: set[tuple[str, str, str]] = set()
_LOCK = threading.Lock()


def _npy_header(f) -> tuple[tuple[int, ...], bool, np.dtype]:
    """``(shape, fortran_order, dtype)`` of the .npy stream ``f``, leaving it at the data."""
    major, _minor = np.lib.format.read_magic(f)
    read = (
        np.lib.format.read_array_header_1_0 if major == 1 else np.lib.format.read_array_header_2_0
    )
    return read(f)


def member_headers(npz: Loc) -> dict[str, tuple[np.dtype, tuple[int, ...]]]:
    """``{key: (dtype, shape)}`` from the npy headers inside an npz (no data read)."""
    out = {}
    try:
        with open_read(npz) as fh, zipfile.ZipFile(fh) as z:
            for info in z.infolist():
                if not info.filename.endswith(".npy"):
                    continue
                with z.open(info) as f:
                    shape, fortran, dtype = _npy_header(f)
                if fortran:
                    raise PoolError(f"{npz}: array {info.filename[:-4]!r} is in Fortran order")
                out[info.filename[:-4]] = (dtype, shape)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as e:
        if isinstance(e, PoolError):
            raise
        raise PoolError(f"{npz}: not a readable npz file ({e})") from None
    return out


def unusable_reason(dtype: np.dtype, shape: tuple[int, ...]) -> str | None:
    """Why an npz member cannot be an embedding matrix (``None`` when it can)."""
    if dtype.hasobject:
        return f"an object array of shape {shape}"
    if len(shape) != 2:
        return f"{len(shape)}-D ({dtype}, shape {shape})"
    if dtype.str not in _EMBEDDING_DTYPES:
        return f"of dtype {dtype} (shape {shape})"
    return None


def _verify(npz: Loc, version: str, z: zipfile.ZipFile, name: str) -> None:
    """Read member ``name`` to its end once per process and ``version`` of the file (its
    fingerprint): zipfile checks its CRC-32 there."""
    key = (str(npz), version, name)
    with _LOCK:
        if key in _VERIFIED:
            return
    try:
        with z.open(name) as f:
            while f.read(16 << 20):
                pass
    except zipfile.BadZipFile as e:  # "Bad CRC-32 for file ..."
        raise PoolError(f"{npz}: member {name!r} is corrupt ({e}); none of it is scored") from None
    with _LOCK:
        _VERIFIED.add(key)


def member_rows(npz: Loc, version: str, key: str, start: int, rows: int) -> np.ndarray:
    """Rows ``start .. start + rows`` of array ``key``, after the member's checksum is verified
    (reading only those rows when the member is stored uncompressed, as ``np.savez`` writes;
    ``version``: the file's fingerprint, so a changed file is verified again)."""
    with open_read(npz) as fh, zipfile.ZipFile(fh) as z:
        _verify(npz, version, z, f"{key}.npy")
        with z.open(f"{key}.npy") as f:
            shape, _fortran, dtype = _npy_header(f)
            width = shape[1]
            row_bytes = width * dtype.itemsize
            if start:
                f.seek(f.tell() + start * row_bytes)
            buf = f.read(rows * row_bytes)
    if len(buf) != rows * row_bytes:
        raise PoolError(f"{npz}: array {key!r} is truncated")
    return np.frombuffer(buf, dtype=dtype).reshape(rows, width)
