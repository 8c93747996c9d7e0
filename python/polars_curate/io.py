"""DataComp's subset files, and the public names of the uid codec and the pool reader.

A **subset** (DataComp's own, DFN's, HYPE's) is a ``.npy`` array of dtype ``("u8", "u8")``: the
uid's first 16 hex digits and last 16 as two unsigned 64-bit integers, sorted lexicographically,
without duplicates (DataComp's resharder binary-searches it). Pools: :mod:`polars_curate.pool`;
the codec: :mod:`polars_curate.uids`.
"""

from __future__ import annotations

import hashlib
import io
from collections.abc import Iterable
from functools import cached_property
from typing import Any, BinaryIO

import numpy as np
import polars as pl

from polars_curate._types import PathLike
from polars_curate.atomic import write_atomic
from polars_curate.partitions import Partitions
from polars_curate.pool import read_datacomp
from polars_curate.storage import Loc, local_copy, location, open_read
from polars_curate.uids import keys_from_uids, uid_key_exprs, uids_from_keys

__all__ = [
    "SINK_ROW_GROUP",
    "UID_DTYPE",
    "KeyFile",
    "file_digest",
    "read_datacomp",
    "read_distinct_keys",
    "read_keys",
    "read_uids",
    "sorted_distinct_keys",
    "uid_key_exprs",
    "uids_from_keys",
    "write_key_parts",
    "write_key_runs",
    "write_keys",
    "write_uids",
]

#: Row group size of every Parquet file we stream out. Polars 2.1's ``sink_parquet`` without an
#: explicit ``row_group_size`` held about the whole output in memory when its input was read
#: faster than it could encode (128M score rows: 3.9 GiB peak RSS; with this: 235 MiB).
SINK_ROW_GROUP = 262_144

#: DataComp's subset dtype: two little-endian unsigned 64-bit fields.
UID_DTYPE = np.dtype("u8,u8")
KEYS_COLUMNS = ["uid_hi", "uid_lo"]


def read_uids(
    path: PathLike | Loc, *, repeats: bool = False, storage_options: dict[str, Any] | None = None
) -> pl.DataFrame:
    """Read a DataComp subset file into a frame with a ``uid`` column (32 lowercase hex digits),
    sorted, each uid once; ``repeats=True`` keeps a uid as often as the file lists it (a
    sampled subset, where DataComp's resharder writes it that many times). ``path`` may be in a
    bucket (``s3://``, reached with ``storage_options`` or the ``AWS_*`` environment).

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
    >>> write_uids(["ff" * 16, "00" * 15 + "0a", "ff" * 16], p, repeats=True)
    3
    >>> read_uids(p, repeats=True)["uid"].str.slice(30).to_list()
    ['0a', 'ff', 'ff']
    """
    path = location(path, storage_options)
    keys = read_keys(path) if repeats else read_distinct_keys(path)
    if repeats and not KeyFile(path).sorted:
        keys = keys.sort(KEYS_COLUMNS)
    return keys.select(uids_from_keys(keys["uid_hi"].to_numpy(), keys["uid_lo"].to_numpy()), *keys)


def read_keys(path: PathLike | Loc) -> pl.DataFrame:
    """The binary keys of a DataComp subset file: ``uid_hi``/``uid_lo`` (UInt64), without
    building the hex strings (16 bytes a row). Larger files: :class:`KeyFile`.

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
    keys = KeyFile(path)
    return _frame(np.asarray(keys.hi, np.uint64), np.asarray(keys.lo, np.uint64))


def _frame(hi: np.ndarray, lo: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame([pl.Series("uid_hi", hi), pl.Series("uid_lo", lo)])


class KeyFile:
    """A DataComp subset file (``("u8", "u8")``, or an ``(n, 2)`` uint64 array) read in bounded
    memory: memory-mapped, checked for order in chunks, and handed out one key partition at a
    time (:mod:`polars_curate.partitions`)."""

    #: Keys per chunk when the file is walked.
    CHUNK = 1 << 22

    def __init__(self, path: PathLike | Loc, storage_options: dict[str, Any] | None = None) -> None:
        self.path = path = location(path, storage_options)
        if not path.is_file():
            raise FileNotFoundError(f"uid file not found: {path}")
        # In a bucket: downloaded to a temporary file (kept while this object lives), mapped.
        local, self._download = local_copy(path)
        try:
            arr = np.load(local, mmap_mode="r", allow_pickle=False)
        except Exception as e:
            raise ValueError(f"{path}: not a readable .npy file ({e})") from None
        if not isinstance(arr, np.ndarray):
            raise ValueError(f"{path}: not a .npy uid array (an .npz archive?)")
        names = arr.dtype.names
        fields = [arr.dtype.fields[n][0] for n in names] if names else []
        if len(fields) == 2 and all(f.kind == "u" and f.itemsize == 8 for f in fields):
            if arr.ndim == 1:
                self.hi, self.lo = arr[names[0]], arr[names[1]]
                return
        elif names is None and arr.ndim == 2 and arr.shape[1] == 2 and arr.dtype == np.uint64:
            self.hi, self.lo = arr[:, 0], arr[:, 1]
            return
        raise ValueError(
            f"{path}: expected a DataComp uid array of dtype ('u8', 'u8'), got {arr.dtype} "
            f"with shape {arr.shape}"
        )

    def __len__(self) -> int:
        return len(self.hi)

    def _chunk(self, a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        return np.asarray(self.hi[a:b], np.uint64), np.asarray(self.lo[a:b], np.uint64)

    @cached_property
    def sorted(self) -> bool:
        """Whether the keys are in order (repeats allowed)."""
        n = len(self)
        for a in range(0, n, self.CHUNK):
            hi, lo = self._chunk(max(a - 1, 0), min(a + self.CHUNK, n))
            if len(hi) > 1:
                up = (hi[1:] > hi[:-1]) | ((hi[1:] == hi[:-1]) & (lo[1:] >= lo[:-1]))
                if not up.all():
                    return False
        return True

    @cached_property
    def increasing(self) -> bool:
        """Whether the keys are sorted and distinct (every DataComp subset file is)."""
        n = len(self)
        for a in range(0, n, self.CHUNK):
            hi, lo = self._chunk(max(a - 1, 0), min(a + self.CHUNK, n))
            if not _increasing(hi, lo):
                return False
        return True

    def part(self, parts: Partitions, p: int) -> pl.DataFrame:
        """The distinct keys of part ``p``, sorted."""
        lo_bound, hi_bound = parts.bounds(p)
        if self.increasing:
            a = int(np.searchsorted(self.hi, np.uint64(lo_bound))) if lo_bound else 0
            b = len(self)
            if hi_bound < 1 << 64:
                b = int(np.searchsorted(self.hi, np.uint64(hi_bound)))
            return _frame(*self._chunk(a, b))
        his, los = [], []
        for a in range(0, len(self), self.CHUNK):
            hi, lo = self._chunk(a, a + self.CHUNK)
            inside = (hi >= np.uint64(lo_bound)) if lo_bound else np.ones(len(hi), bool)
            if hi_bound < 1 << 64:
                inside &= hi < np.uint64(hi_bound)
            his.append(hi[inside])
            los.append(lo[inside])
        hi, lo = (np.concatenate(x) if x else np.zeros(0, np.uint64) for x in (his, los))
        return _frame(*sorted_distinct_keys(hi, lo))


def write_uids(
    uids: pl.DataFrame | pl.Series | Iterable[str],
    path: PathLike | Loc,
    *,
    repeats: bool = False,
    storage_options: dict[str, Any] | None = None,
) -> int:
    """Write uids as a DataComp subset file; returns the number of uids written.

    Exactly DataComp's format: dtype ``("u8", "u8")``, sorted lexicographically, each uid once;
    with ``repeats=True`` a uid given ``c`` times is written ``c`` times (what sampling with
    repetition writes; DataComp's resharder writes such a uid ``c`` times). The file is written
    to a temporary name in the same directory, flushed to disk and renamed, so no reader ever
    sees a partial file under ``path``. Invalid uids (wrong length, non-hex, null) raise
    ``ValueError`` naming the first one; nothing is written then.
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
    path = location(path, storage_options)
    if not repeats:
        return write_keys(hi, lo, path)
    keys = _frame(hi, lo).sort(KEYS_COLUMNS)
    return write_key_runs([(keys["uid_hi"].to_numpy(), keys["uid_lo"].to_numpy())], path)


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


def read_distinct_keys(path: PathLike | Loc) -> pl.DataFrame:
    """:func:`read_keys`, each key once (what joins with a subset need)."""
    return KeyFile(path).part(Partitions(), 0)


def write_keys(hi: np.ndarray, lo: np.ndarray, path: PathLike | Loc) -> int:
    """Write ``(hi, lo)`` uid keys as a DataComp subset file (sorted, no duplicates, atomic);
    returns the number written."""
    hi, lo = sorted_distinct_keys(hi, lo)
    arr = np.empty(len(hi), dtype=UID_DTYPE)
    arr["f0"], arr["f1"] = hi, lo
    del hi, lo
    write_atomic(location(path), lambda f: np.save(f, arr, allow_pickle=False))
    return len(arr)


def _header_of_rows(rows: int) -> bytes:
    """The header ``np.save`` writes before ``rows`` keys of :data:`UID_DTYPE`."""
    buf = io.BytesIO()
    header = {"descr": UID_DTYPE.descr, "fortran_order": False, "shape": (rows,)}
    np.lib.format.write_array_header_1_0(buf, header)
    return buf.getvalue()


def write_key_runs(runs: Iterable[tuple[np.ndarray, np.ndarray]], path: PathLike | Loc) -> int:
    """Write runs of ``(hi, lo)`` keys, each sorted and each after the previous one, as one
    DataComp subset file (the keys in that order; repeats kept), atomically; returns the
    number written. Memory: one run."""

    def write(f: BinaryIO) -> None:
        start = len(_header_of_rows(0))
        f.seek(start)
        total = 0
        for hi, lo in runs:
            arr = np.empty(len(hi), dtype=UID_DTYPE)
            arr["f0"], arr["f1"] = hi, lo
            f.write(arr.tobytes())
            total += len(arr)
        header = _header_of_rows(total)
        # Padded to 64 bytes, the header is 128 bytes for every count below 10**20.
        assert len(header) == start, "the .npy header's length depends on the count"
        f.seek(0)
        f.write(header)
        counted.append(total)

    counted: list[int] = []
    write_atomic(location(path), write)
    return counted[0]


def write_key_parts(keys: pl.LazyFrame, path: PathLike | Loc, parts: Partitions) -> int:
    """Write the ``uid_hi``/``uid_lo`` rows of ``keys`` as a DataComp subset file, part after
    part (one part's keys in memory, each sorted and deduplicated), atomically; returns the
    number written. The bytes are those of :func:`write_keys` on all the keys at once."""

    def runs() -> Iterable[tuple[np.ndarray, np.ndarray]]:
        for p in parts:
            got = keys.filter(parts.predicate(p)).collect(engine="streaming")
            yield sorted_distinct_keys(got["uid_hi"].to_numpy(), got["uid_lo"].to_numpy())

    return write_key_runs(runs(), path)


def file_digest(path: PathLike | Loc) -> str:
    """A content digest of a file (BLAKE2b, 128 bits, hex), read in 16 MiB pieces: what a
    select log records of its subset."""
    h = hashlib.blake2b(digest_size=16)
    with open_read(location(path)) as f:
        while block := f.read(16 << 20):
            h.update(block)
    return h.hexdigest()
