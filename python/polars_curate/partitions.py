"""Key partitions: the uid space cut by the top bits of ``uid_hi``, so that work over keys
(joins with a base, a subset or a score file; writing a subset) holds one part at a time.

DataComp's uids are random hex, so parts of the key space hold nearly equal shares of any set
of uids, and the parts in order are the keys in sorted order: a subset file is written part
after part, each part sorted in memory. The number of parts follows from a memory budget.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import polars as pl

__all__ = ["BYTES_PER_KEY", "DEFAULT_BUDGET", "Partitions"]

#: What a key held for a join or a sort costs at the peak (the keys, Polars' hash table or the
#: sort's copies), measured on ``select`` and ``report`` (50-65 bytes).
BYTES_PER_KEY = 64
#: Bytes of keys held at once by default (``--memory-budget``).
DEFAULT_BUDGET = 2 << 30
_TOP = 1 << 64


@dataclass(frozen=True)
class Partitions:
    """``2**bits`` parts of the key space; part ``p`` holds ``uid_hi`` in
    ``[p << (64 - bits), (p + 1) << (64 - bits))``."""

    bits: int = 0

    @classmethod
    def for_keys(cls, keys: int, budget: int = DEFAULT_BUDGET) -> Partitions:
        """The fewest parts that keep ``keys`` keys (evenly spread) within ``budget`` bytes."""
        bits = 0
        while bits < 16 and keys * BYTES_PER_KEY > budget << bits:
            bits += 1
        return cls(bits)

    @property
    def count(self) -> int:
        return 1 << self.bits

    def bounds(self, p: int) -> tuple[int, int]:
        """``[lo, hi)`` of ``uid_hi`` in part ``p`` (``hi`` may be ``2**64``)."""
        width = _TOP >> self.bits
        return p * width, (p + 1) * width

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.count))

    def predicate(self, p: int, column: str = "uid_hi") -> pl.Expr:
        """The rows of part ``p``."""
        if self.bits == 0:
            return pl.lit(True)
        lo, hi = self.bounds(p)
        col = pl.col(column)
        upper = col < pl.lit(hi, dtype=pl.UInt64) if hi < _TOP else pl.lit(True)
        return (col >= pl.lit(lo, dtype=pl.UInt64)) & upper
