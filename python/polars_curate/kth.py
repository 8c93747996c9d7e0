"""The exact k-th row of a lazy frame in bounded memory: what a fraction rule's cut is.

Each pass counts rows per value bucket with Polars' streaming ``group_by`` and keeps only the
bucket holding the k-th row; a candidate region of at most :data:`SORT_CAP` rows is sorted in
memory. The result equals a full sort (tested against one), while memory holds one histogram,
never the column.
"""

from __future__ import annotations

from typing import Any

import polars as pl

from polars_curate.rules import cut_predicate, valid

__all__ = ["BUCKETS", "SORT_CAP", "kth_row", "top_cut"]

#: A candidate region this small is sorted in memory (rows of three 8-byte keys).
SORT_CAP = 2_000_000
#: Buckets per refinement pass.
BUCKETS = 4096


def _bucket_of_kth(
    region: pl.LazyFrame, col: pl.Expr, lo: Any, hi: Any, k: int, before: int
) -> tuple[Any, Any, int, int]:
    """One refinement pass over the rows of ``region`` with ``col`` in ``[lo, hi]``: the
    ``[min, max]`` and count of the bucket holding the ``k``-th row, and the rows before it."""
    span = float(hi) - float(lo)
    bucket = ((col.cast(pl.Float64) - float(lo)) / span * BUCKETS).floor().clip(0, BUCKETS - 1)
    hist = (
        region.filter(col.is_between(lo, hi))
        .group_by(bucket.alias("b"))
        .agg(pl.len().alias("n"), col.min().alias("lo"), col.max().alias("hi"))
        .sort("b")
        .collect(engine="streaming")
    )
    # The bucket function is monotone, so bucket b holds exactly the rows whose key lies in
    # [min, max] of its rows: the next candidate range.
    cum = before
    for bn, blo, bhi in zip(hist["n"], hist["lo"], hist["hi"]):
        if cum + bn >= k:
            return blo, bhi, bn, cum
        cum += bn
    raise AssertionError("the k-th row lies in no bucket")  # k <= rows, checked by callers


def kth_row(lf: pl.LazyFrame, keys: list[pl.Expr], k: int) -> list[Any]:
    """The ``k``-th (1-based) smallest row of ``lf`` in the lexicographic order of ``keys``
    (``Float64``/``UInt64`` expressions), by histogram refinement on each key in turn."""
    names = [f"__k{i}" for i in range(len(keys))]
    lf = lf.select([e.alias(n) for e, n in zip(keys, names)])
    fixed: list[pl.Expr] = []
    values: list[Any] = []
    before = 0
    for name in names:
        col = pl.col(name)
        region = lf.filter(*fixed) if fixed else lf
        stats = region.select(col.min().alias("lo"), col.max().alias("hi"), pl.len().alias("n"))
        lo, hi, n = stats.collect(engine="streaming").row(0)
        while n > SORT_CAP and lo != hi:
            lo, hi, n, before = _bucket_of_kth(region, col, lo, hi, k, before)
        if n <= SORT_CAP:
            rows = region.filter(col.is_between(lo, hi)).collect(engine="streaming")
            return list(rows.sort(names).row(k - before - 1))
        fixed.append(col == lo)  # every candidate ties on this key: refine on the next one
        values.append(lo)
    # More than SORT_CAP rows equal on every key (duplicate uids): any of them is the k-th.
    return values


def top_cut(lf: pl.LazyFrame, col: str, k: int, available: int) -> tuple[pl.Expr, Any]:
    """The ``k`` best rows among the valid scores of ``lf`` (score descending, ties to the
    smaller uid) as a predicate, and the cut ``(score, uid_hi, uid_lo)`` (``None`` when the
    rule keeps nothing or every valid score)."""
    if k <= 0:
        return pl.lit(False), None
    if k >= available:
        return valid(col), None
    neg = -pl.col(col).cast(pl.Float64)
    t0, t1, t2 = kth_row(lf.filter(valid(col)), [neg, pl.col("uid_hi"), pl.col("uid_lo")], k)
    v = -t0
    return cut_predicate(col, v, t1, t2), (v, t1, t2)
