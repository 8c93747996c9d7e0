"""The uid codec: DataComp's uids and their binary keys, one rule used by every reader and
writer.

A uid is 32 hexadecimal digits (either case: the key is the number they spell, so ``"AB..."``
and ``"ab..."`` are one uid); its binary key ``(uid_hi, uid_lo)`` is its first and last 16
digits as two unsigned 64-bit integers (the subset files' format). Anything else (a sign, a
``0x``, spaces, another length, null) is not a uid and is refused where it is read, naming the
file and the row. Keys written back as text are lowercase.
"""

from __future__ import annotations

import binascii

import numpy as np
import polars as pl

__all__ = [
    "UID_PATTERN",
    "check_uids",
    "keys_from_uids",
    "uid_key_exprs",
    "uids_from_keys",
    "valid_uid",
]

#: The one rule: 32 hexadecimal digits.
UID_PATTERN = r"^[0-9a-fA-F]{32}$"


def valid_uid(uid: pl.Expr | str = "uid") -> pl.Expr:
    """Whether each value is a uid (false for null)."""
    u = pl.col(uid) if isinstance(uid, str) else uid
    return u.str.contains(UID_PATTERN).fill_null(False)


def uid_key_exprs(uid: pl.Expr | str = "uid") -> tuple[pl.Expr, pl.Expr]:
    """``(uid_hi, uid_lo)``: the binary key of a uid column as two ``UInt64`` expressions
    (Polars' own string-to-integer conversion; null where the value is not a uid)."""
    u = pl.col(uid) if isinstance(uid, str) else uid
    ok = valid_uid(u)

    def half(start: int) -> pl.Expr:
        digits = u.str.slice(start, 16)
        return pl.when(ok).then(digits.str.to_integer(base=16, dtype=pl.UInt64, strict=False))

    return half(0).alias("uid_hi"), half(16).alias("uid_lo")


def check_uids(uids: pl.Series, where: str, offset: int = 0) -> None:
    """``ValueError`` naming ``where`` and the first value of ``uids`` that is not a uid (its
    row counted from ``offset``)."""
    if uids.dtype != pl.String:
        raise ValueError(f"{where}: column 'uid' must be String (32 hex digits), got {uids.dtype}")
    bad = ~uids.to_frame("uid").select(valid_uid("uid")).to_series()
    if bad.any():
        row = int(bad.arg_max())
        raise ValueError(
            f"{where}: invalid uid at row {offset + row}: {uids[row]!r} (expected 32 hex digits)"
        )


def uids_from_keys(hi: np.ndarray, lo: np.ndarray) -> pl.Series:
    """The uids (lowercase) of ``(hi, lo)`` key pairs, as a String Series named ``uid``."""
    pairs = np.empty((len(hi), 2), dtype=">u8")  # big-endian: hex digits most significant first
    pairs[:, 0], pairs[:, 1] = hi, lo
    digits = np.frombuffer(binascii.hexlify(pairs.tobytes()), dtype="S32")
    return pl.Series("uid", digits).cast(pl.String)


def keys_from_uids(uids: pl.Series, where: str = "uids") -> tuple[np.ndarray, np.ndarray]:
    """``(hi, lo)`` uint64 keys of uids; ``ValueError`` naming the first value that is not one."""
    check_uids(uids, where)
    keys = uids.to_frame("uid").select(*uid_key_exprs("uid"))
    return keys["uid_hi"].to_numpy(), keys["uid_lo"].to_numpy()
