"""The uid codec: DataComp's 32-hex-digit uids and their binary keys ``(uid_hi, uid_lo)``, the
uid's first and last 16 hex digits as two unsigned 64-bit integers (the subset files' format)."""

from __future__ import annotations

import binascii

import numpy as np
import polars as pl

__all__ = ["keys_from_uids", "uid_key_exprs", "uids_from_keys"]

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
