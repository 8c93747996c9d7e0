"""DataComp on-disk formats: uid subset files and pool shards.

* A **subset** (DataComp's own, DFN's, HYPE's) is a ``.npy`` array of dtype ``("u8", "u8")``: the
  uid's first 16 hex digits and last 16 as two unsigned 64-bit integers, sorted
  lexicographically, without duplicates (DataComp's resharder binary-searches it).
* A **pool** is shards ``<name>.parquet`` + ``<name>.npz`` whose rows line up; the npz holds float16
  embeddings under keys such as ``l14_img``, ``l14_txt``, ``b32_img``, ``b32_txt``.
"""

from __future__ import annotations

import binascii
import os
import socket
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Union

import numpy as np
import polars as pl

__all__ = [
    "SINK_ROW_GROUP",
    "UID_DTYPE",
    "read_datacomp",
    "read_distinct_keys",
    "read_keys",
    "read_uids",
    "sorted_distinct_keys",
    "uid_key_exprs",
    "write_keys",
    "write_uids",
]

PathLike = Union[str, "os.PathLike[str]"]

#: Row group size of every Parquet file we stream out. Polars 2.1's ``sink_parquet`` without an
#: explicit ``row_group_size`` held about the whole output in memory when its input was read
#: faster than it could encode (128M score rows: 3.9 GiB peak RSS; with this: 235 MiB).
SINK_ROW_GROUP = 262_144

#: DataComp's subset dtype: two little-endian unsigned 64-bit fields.
UID_DTYPE = np.dtype("u8,u8")

_UID_RE = r"^[0-9a-fA-F]{32}$"


def uid_key_exprs(uid: pl.Expr | str = "uid") -> tuple[pl.Expr, pl.Expr]:
    """``(uid_hi, uid_lo)``: the binary key of a 32-hex-digit uid column as two ``UInt64``
    expressions (Polars' own string-to-integer conversion; null for an invalid uid)."""
    u = pl.col(uid) if isinstance(uid, str) else uid
    return (
        u.str.slice(0, 16).str.to_integer(base=16, dtype=pl.UInt64, strict=False).alias("uid_hi"),
        u.str.slice(16, 16).str.to_integer(base=16, dtype=pl.UInt64, strict=False).alias("uid_lo"),
    )


def uids_from_keys(hi: np.ndarray, lo: np.ndarray) -> pl.Series:
    """The 32-hex-digit uids of ``(hi, lo)`` key pairs, as a String Series named ``uid``."""
    pairs = np.empty((len(hi), 2), dtype=">u8")  # big-endian: hex digits most significant first
    pairs[:, 0], pairs[:, 1] = hi, lo
    digits = np.frombuffer(binascii.hexlify(pairs.tobytes()), dtype="S32")
    return pl.Series("uid", digits).cast(pl.String)


def keys_from_uids(uids: pl.Series) -> tuple[np.ndarray, np.ndarray]:
    """``(hi, lo)`` uint64 keys of 32-hex-digit uids; ``ValueError`` naming the first bad uid."""
    if uids.dtype != pl.String:
        raise ValueError(f"uids must be strings of 32 hex digits, got dtype {uids.dtype}")
    bad = uids.is_null() | ~uids.str.contains(_UID_RE)
    if bad.any():
        first = int(bad.arg_max())
        raise ValueError(f"invalid uid at row {first}: {uids[first]!r} (expected 32 hex digits)")
    keys = uids.to_frame("uid").select(*uid_key_exprs("uid"))
    return keys["uid_hi"].to_numpy(), keys["uid_lo"].to_numpy()


def read_uids(path: PathLike) -> pl.DataFrame:
    """Read a DataComp subset file into a frame with a ``uid`` column (32 lowercase hex digits).

    Also accepts an ``(n, 2)`` uint64 array. The columns ``uid_hi``/``uid_lo`` (UInt64) are the
    binary key, cheaper to join on than strings.

    To keep the rows of a frame whose uid is in the subset, give ``is_in`` the ``uid`` column as
    one list value, ``.implode()`` (Polars 2.1 deprecates a bare Series there and rejects the
    frame), or semi-join on the binary key (see ``uid_key_exprs``).

    Examples
    --------
    >>> import tempfile, pathlib, polars as pl
    >>> from polars_curate.io import read_uids, write_uids
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "subset.npy"
    >>> write_uids(pl.Series("uid", ["ff" * 16, "00" * 15 + "0a", "ff" * 16]), p)
    2
    >>> read_uids(p)["uid"].to_list()
    ['0000000000000000000000000000000a', 'ffffffffffffffffffffffffffffffff']
    >>> pool = pl.DataFrame({"uid": ["00" * 15 + "0a", "00" * 15 + "0b"], "score": [0.3, 0.2]})
    >>> subset = read_uids(p)["uid"]
    >>> pool.filter(pl.col("uid").is_in(subset.implode()))["score"].to_list()
    [0.3]
    """
    keys = read_keys(path)
    return keys.select(uids_from_keys(keys["uid_hi"].to_numpy(), keys["uid_lo"].to_numpy()), *keys)


def read_keys(path: PathLike) -> pl.DataFrame:
    """The binary keys of a DataComp subset file: ``uid_hi``/``uid_lo`` (UInt64), without
    building the hex strings (16 bytes a row; what ``select`` and ``report`` join on).

    Examples
    --------
    >>> import tempfile, pathlib, polars as pl
    >>> from polars_curate.io import read_keys, write_uids
    >>> p = pathlib.Path(tempfile.mkdtemp()) / "subset.npy"
    >>> write_uids(pl.Series("uid", ["00" * 15 + "0a"]), p)
    1
    >>> read_keys(p).rows()
    [(0, 10)]
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"uid file not found: {path}")
    try:
        arr = np.load(path, allow_pickle=False)
    except Exception as e:
        raise ValueError(f"{path}: not a readable .npy file ({e})") from None
    names = arr.dtype.names
    fields = [arr.dtype.fields[n][0] for n in names] if names else []
    if (
        len(fields) == 2
        and all(f.kind == "u" and f.itemsize == 8 for f in fields)
        and arr.ndim == 1
    ):
        hi, lo = (arr[name].astype(np.uint64) for name in names)
    elif names is None and arr.ndim == 2 and arr.shape[1] == 2 and arr.dtype == np.uint64:
        hi, lo = arr[:, 0].astype(np.uint64), arr[:, 1].astype(np.uint64)
    else:
        raise ValueError(
            f"{path}: expected a DataComp uid array of dtype ('u8', 'u8'), got {arr.dtype} "
            f"with shape {arr.shape}"
        )
    return pl.DataFrame([pl.Series("uid_hi", hi), pl.Series("uid_lo", lo)])


def write_uids(uids: pl.DataFrame | pl.Series | Iterable[str], path: PathLike) -> int:
    """Write uids as a DataComp subset file; returns the number of (distinct) uids written.

    Exactly DataComp's format: dtype ``("u8", "u8")``, sorted lexicographically, no duplicates.
    The file is written to a temporary name in the same directory, flushed to disk and renamed,
    so no reader ever sees a partial file under ``path``. Invalid uids (wrong length, non-hex,
    null) raise ``ValueError`` naming the first one; nothing is written then.
    """
    if isinstance(uids, pl.DataFrame):
        if "uid" not in uids.columns:
            raise ValueError(f"frame has no 'uid' column (columns: {uids.columns})")
        s = uids["uid"]
    elif isinstance(uids, pl.Series):
        s = uids
    else:
        s = pl.Series("uid", list(uids), dtype=pl.String)
    hi, lo = keys_from_uids(s)
    return write_keys(hi, lo, path)


def _increasing(hi: np.ndarray, lo: np.ndarray) -> bool:
    """Whether the keys are strictly increasing (sorted, no duplicates): one pass, no table."""
    if len(hi) < 2:
        return True
    up = hi[1:] > hi[:-1]
    up |= (hi[1:] == hi[:-1]) & (lo[1:] > lo[:-1])
    return bool(up.all())


def sorted_distinct_keys(hi: np.ndarray, lo: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(hi, lo)`` sorted, each key once. Keys already so (every DataComp subset file) are
    returned as they are after one check; otherwise they are sorted by Polars (all cores) and
    neighbours compared, never hashed (a hash table of 10^8 keys costs gigabytes)."""
    hi, lo = np.asarray(hi, np.uint64), np.asarray(lo, np.uint64)
    if _increasing(hi, lo):
        return hi, lo
    keys = pl.DataFrame({"f0": hi, "f1": lo}).sort("f0", "f1")
    hi, lo = keys["f0"].to_numpy(), keys["f1"].to_numpy()
    del keys
    new = np.ones(len(hi), dtype=bool)
    new[1:] = (hi[1:] != hi[:-1]) | (lo[1:] != lo[:-1])
    return (hi, lo) if new.all() else (hi[new], lo[new])


def read_distinct_keys(path: PathLike) -> pl.DataFrame:
    """:func:`read_keys`, each key once (what joins with a subset need), in bounded memory."""
    keys = read_keys(path)
    hi, lo = sorted_distinct_keys(keys["uid_hi"].to_numpy(), keys["uid_lo"].to_numpy())
    if len(hi) == keys.height:
        return keys
    return pl.DataFrame([pl.Series("uid_hi", hi), pl.Series("uid_lo", lo)])


def write_keys(hi: np.ndarray, lo: np.ndarray, path: PathLike) -> int:
    """Write ``(hi, lo)`` uid keys as a DataComp subset file (sorted, no duplicates, atomic);
    returns the number written."""
    hi, lo = sorted_distinct_keys(hi, lo)
    arr = np.empty(len(hi), dtype=UID_DTYPE)
    arr["f0"], arr["f1"] = hi, lo
    del hi, lo
    atomic_write(Path(path), lambda f: np.save(f, arr, allow_pickle=False))
    return len(arr)


_HOST = socket.gethostname().replace(".", "-")


def atomic_write(path: Path, write) -> None:
    """Call ``write(file)`` on a temporary file beside ``path``, fsync it, then rename it to
    ``path`` (atomic on POSIX). On any error the temporary file is removed and ``path`` is left
    as it was. The temporary name holds this host and process id (``.<name>.<host>.<pid>.*.tmp``),
    so concurrent writers never touch each other's files and :func:`remove_stale_temporaries`
    can tell a dead writer's leftovers from a live one's."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(
        prefix=f".{path.name}.{_HOST}.{os.getpid()}.", suffix=".tmp", dir=path.parent
    )
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; give the usual permissions
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def remove_stale_temporaries(directory: Path) -> int:
    """Remove temporary files that a writer on this host left when it died (its process no
    longer exists); files of live writers and of other hosts are left alone. Returns the count."""
    removed = 0
    for f in directory.glob(f".*.{_HOST}.*.tmp"):
        parts = f.name.rsplit(".", 3)  # [".<name>.<host>", "<pid>", "<random>", "tmp"]
        try:
            pid = int(parts[1])
        except (IndexError, ValueError):
            continue
        try:
            os.kill(pid, 0)
            continue  # alive (or not ours to signal): leave it
        except ProcessLookupError:
            pass
        except PermissionError:
            continue
        f.unlink(missing_ok=True)
        removed += 1
    return removed


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_datacomp(
    path: PathLike, *, keys: Sequence[str] | None = None, shard_column: str | None = "shard"
) -> pl.DataFrame:
    """Read a whole pool (either layout: DataComp's ``<name>.parquet`` + ``<name>.npz`` pairs,
    or Parquet files with embedding columns) into one frame; for pools that fit in memory.
    Larger ones: :func:`polars_curate.scan_pool` (lazy) and :func:`polars_curate.score_pool`.

    Parameters
    ----------
    path
        One shard (either file of a pair), a directory of shards, or a glob.
    keys
        The npz arrays to attach as ``Array(Float16, d)`` columns (default: all of them), e.g.
        ``["l14_img", "l14_txt"]``.
    shard_column
        Name of a String column holding each row's shard name (for ``.over("shard")``), or
        ``None`` for none.

    Rows keep the shard's order; shards are read in name order. A missing twin file,
    mismatched row counts or an unknown key raises an error naming the file.
    """
    from polars_curate.pool import scan_pool

    lf = scan_pool(path, embeddings=keys, shard_column=shard_column or "__shard__")
    if shard_column is None:
        lf = lf.drop("__shard__")
    return lf.collect()
