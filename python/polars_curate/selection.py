"""Selection rules over a score directory, streamed: exact subsets in bounded memory.

A rule list is applied in order to a start set (the pool's scored rows, or those in a
``--base`` subset). Rules:

* ``SCORE:F`` keeps, of the rows still in, the ``floor(F * start)`` with the highest score
  (ties: the smaller uid; rows without a score, or NaN, are never kept). ``F`` is read as the
  nearest fraction with denominator at most 10**9, so ``0.3`` is exactly 3/10.
* ``SCORE>=V`` (``>``, ``<=``, ``<``) keeps the rows whose score passes the threshold
  (LAION/DataComp style).

``SCORE`` is a score of the directory (``ncl``, ``clip``, ``normsim-inf``, ``normsim-2`` or a
column name) or an external score file ``PATH.parquet`` (``uid`` or ``uid_hi``/``uid_lo``
plus one numeric column, or ``PATH.parquet#COLUMN``), e.g. DFN or HYPE scores; pool rows it
does not score are never kept by that rule.

Memory does not grow with the pool: each fraction rule finds its exact threshold (the k-th
score, and the uid at which ties are cut) with a few streaming passes that count rows per
value bucket and refine the one bucket holding the k-th row until it is small enough to sort
in memory; then one more pass writes the subset. Only the subset itself (16 bytes a row), the
base's keys and an external score file's keys and scores are held.
"""

from __future__ import annotations

import json
import operator
import re
import shutil
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Any

import polars as pl

import polars_curate as pc
from polars_curate._expr import _fraction
from polars_curate.io import (
    SINK_ROW_GROUP,
    PathLike,
    atomic_write,
    read_distinct_keys,
    uid_key_exprs,
    write_keys,
)
from polars_curate.pipeline import SCORES, check_complete

__all__ = ["Rule", "SelectResult", "keep_count", "parse_rule", "select", "step_predicate"]

KEYS = ["uid_hi", "uid_lo"]
#: A candidate region this small is sorted in memory (rows of three 8-byte keys).
SORT_CAP = 2_000_000
#: Buckets per refinement pass.
BUCKETS = 4096

_THRESHOLD = re.compile(
    r"^(?P<score>.+?)\s*(?P<op>>=|<=|>|<)\s*(?P<value>[-+]?(?:inf|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?))$"
)


def keep_count(n: int, fraction: Fraction) -> int:
    """``floor(fraction * n)``, exactly: the count a fraction rule keeps out of ``n``."""
    return n * fraction.numerator // fraction.denominator


@dataclass(frozen=True)
class Rule:
    """One ``--keep`` rule."""

    text: str
    score: str
    source: Path | None = None
    fraction: Fraction | None = None
    op: str | None = None
    value: float | None = None

    @property
    def column(self) -> str:
        """The column the rule reads in the working frame."""
        return self.score if self.source is None else f"__ext_{self.score}"


def parse_rule(text: str) -> Rule:
    """``SCORE:F`` or ``SCORE>=V`` (``>``, ``<=``, ``<``); ``ValueError`` naming the rule."""
    m = _THRESHOLD.match(text.strip())
    if m:
        name, op, value = m["score"].strip(), m["op"], float(m["value"])
        return _with_score(Rule(text, name, op=op, value=value), name)
    name, sep, frac = text.rpartition(":")
    if not sep or not name.strip():
        raise ValueError(
            f"--keep {text!r}: expected SCORE:FRACTION (e.g. ncl:0.3) or SCORE>=VALUE "
            "(e.g. clip>=0.28)"
        )
    try:
        f = float(frac)
    except ValueError:
        raise ValueError(f"--keep {text!r}: {frac!r} is not a number") from None
    if not 0 <= f <= 1:
        raise ValueError(f"--keep {text!r}: the fraction must be in [0, 1]")
    return _with_score(Rule(text, name.strip(), fraction=_fraction(f, "fraction")), name.strip())


def _with_score(rule: Rule, name: str) -> Rule:
    path, _, col = name.partition("#")
    if path.endswith(".parquet"):
        source = Path(path)
        if not source.is_file():
            raise ValueError(f"--keep {rule.text!r}: score file {source} not found")
        col = col or _only_score_column(source)
        return Rule(rule.text, col, source, rule.fraction, rule.op, rule.value)
    return Rule(rule.text, SCORES.get(name, name), None, rule.fraction, rule.op, rule.value)


def _only_score_column(path: Path) -> str:
    try:
        schema = pl.read_parquet_schema(path)
    except Exception as e:
        raise ValueError(f"{path}: not a readable Parquet file ({e})") from None
    cols = [c for c, t in schema.items() if c not in ("uid", *KEYS) and t.is_numeric()]
    if len(cols) != 1:
        raise ValueError(
            f"{path}: expected one numeric score column beside the uid, found {cols or 'none'}; "
            "name it: PATH.parquet#COLUMN"
        )
    return cols[0]


def _external(rule: Rule) -> pl.LazyFrame:
    assert rule.source is not None
    schema = pl.read_parquet_schema(rule.source)
    if rule.score not in schema:
        raise ValueError(f"{rule.source}: no column {rule.score!r}")
    lf = pl.scan_parquet(rule.source)
    if not set(KEYS) <= set(schema):
        if "uid" not in schema:
            raise ValueError(f"{rule.source}: needs a 'uid' column (or 'uid_hi' and 'uid_lo')")
        lf = lf.with_columns(*uid_key_exprs("uid"))
    return lf.select(*KEYS, pl.col(rule.score).cast(pl.Float64).alias(rule.column))


@dataclass
class SelectResult:
    """What :func:`select` did: the start set and each rule's cut and count."""

    start: int
    kept: int
    steps: list[dict[str, Any]] = field(default_factory=list)
    base_without_scores: int | None = None


def _count(lf: pl.LazyFrame) -> int:
    return lf.select(pl.len()).collect(engine="streaming").item()


def _valid(col: str) -> pl.Expr:
    return pl.col(col).is_not_null() & pl.col(col).cast(pl.Float64).is_not_nan()


def _kth(lf: pl.LazyFrame, keys: list[pl.Expr], k: int) -> list[Any]:
    """The ``k``-th (1-based) smallest row of ``lf`` in the lexicographic order of ``keys``
    (``Float64``/``UInt64`` expressions), found by histogram refinement: each pass counts the
    rows per bucket of the current key's candidate range and keeps only the bucket holding the
    ``k``-th row; a region of at most ``SORT_CAP`` rows is sorted in memory."""
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
        while True:
            if n <= SORT_CAP:
                rows = region.filter(col.is_between(lo, hi)).collect(engine="streaming")
                rows = rows.sort(names)
                return list(rows.row(k - before - 1))
            if lo == hi:
                break  # every candidate ties on this key: refine on the next one
            span = float(hi) - float(lo)
            bucket = (
                ((col.cast(pl.Float64) - float(lo)) / span * BUCKETS).floor().clip(0, BUCKETS - 1)
            )
            hist = (
                region.filter(col.is_between(lo, hi))
                .group_by(bucket.alias("b"))
                .agg(pl.len().alias("n"), col.min().alias("lo"), col.max().alias("hi"))
                .sort("b")
                .collect(engine="streaming")
            )
            # The bucket function is monotone, so bucket b holds exactly the rows whose key
            # lies in [min, max] of its rows: the next candidate range.
            cum = before
            for bn, blo, bhi in zip(hist["n"], hist["lo"], hist["hi"]):
                if cum + bn >= k:
                    lo, hi, n = blo, bhi, bn
                    break
                cum += bn
            before = cum
        fixed.append(col == lo)
        values.append(lo)
    # More than SORT_CAP rows equal on every key (duplicate uids): any of them is the k-th.
    return values


def _top_predicate(lf: pl.LazyFrame, col: str, k: int, available: int) -> tuple[pl.Expr, Any]:
    """The rows among the valid scores of ``lf`` that are the ``k`` best (score descending,
    ties to the smaller uid), as a predicate, and the cut ``(score, uid_hi, uid_lo)``."""
    valid = _valid(col)
    if k <= 0:
        return pl.lit(False), None
    if k >= available:
        return valid, None
    neg = -pl.col(col).cast(pl.Float64)
    t0, t1, t2 = _kth(lf.filter(valid), [neg, pl.col("uid_hi"), pl.col("uid_lo")], k)
    v = -t0
    return _cut_predicate(col, v, t1, t2), (v, t1, t2)


def _cut_predicate(col: str, value: float, uid_hi: int, uid_lo: int) -> pl.Expr:
    """The rows a fraction rule keeps, given its cut: a valid score above ``value``, or equal
    to it with the key ``(uid_hi, uid_lo)`` at most the cut's (ties go to the smaller uid)."""
    s = pl.col(col).cast(pl.Float64)
    hi, lo = pl.col("uid_hi"), pl.col("uid_lo")
    return _valid(col) & (
        (s > value) | ((s == value) & ((hi < uid_hi) | ((hi == uid_hi) & (lo <= uid_lo))))
    )


_OPS: dict[str, Callable[[pl.Expr, float], pl.Expr]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
}


def _threshold_predicate(col: str, op: str, value: float) -> pl.Expr:
    return _valid(col) & _OPS[op](pl.col(col).cast(pl.Float64), value)


def step_predicate(step: dict[str, Any], column: str | None = None) -> pl.Expr:
    """The rows one logged step passes on its own, as a predicate on its score column
    (``column``, default ``step["score"]``) and ``uid_hi``/``uid_lo``.

    ``step`` is an entry of ``steps`` in the ``.select.json`` that :func:`select` writes. Rule
    ``i`` of a log keeps the rows of the start set that pass steps ``1..i``.

    Examples
    --------
    >>> import polars as pl
    >>> from polars_curate.selection import step_predicate
    >>> df = pl.DataFrame({"uid_hi": [0, 0, 1], "uid_lo": [5, 9, 0], "ncl": [0.2, 0.2, 0.9]},
    ...                   schema_overrides={"uid_hi": pl.UInt64, "uid_lo": pl.UInt64})
    >>> step = {"kind": "fraction", "score": "ncl", "k": 2, "value": 0.2,
    ...         "cut_uid_hi": 0, "cut_uid_lo": 5}
    >>> df.filter(step_predicate(step))["uid_lo"].to_list()
    [5, 0]
    >>> df.filter(step_predicate({"kind": "threshold", "score": "ncl", "op": ">=",
    ...                           "value": 0.5}))["uid_lo"].to_list()
    [0]
    """
    col = step["score"] if column is None else column
    if step.get("kind") == "threshold":
        return _threshold_predicate(col, step["op"], float(step["value"]))
    if step.get("kind") != "fraction":
        raise ValueError(f"step {step.get('rule')!r}: unknown kind {step.get('kind')!r}")
    if "value" in step:
        return _cut_predicate(
            col, float(step["value"]), int(step["cut_uid_hi"]), int(step["cut_uid_lo"])
        )
    # No cut logged: the rule kept nothing (k = 0) or every valid score.
    return pl.lit(False) if int(step["k"]) <= 0 else _valid(col)


def select(
    scores_dir: PathLike,
    out: PathLike,
    keep: Sequence[str],
    *,
    base: PathLike | None = None,
    log: Callable[[str], None] = print,
) -> SelectResult:
    """Apply ``--keep`` rules to a complete score directory and write a DataComp subset.

    Writes ``out`` (sorted ``("u8", "u8")`` uids, atomically) and, beside it,
    ``<out stem>.select.json``: the start set, each rule with its cut and count (what
    ``report`` draws). See the module documentation for the rules.

    Examples
    --------
    >>> import tempfile, polars_curate as pc
    >>> from polars_curate.datasets import synthetic_pool
    >>> from polars_curate.selection import select
    >>> tmp = tempfile.mkdtemp()
    >>> paths = synthetic_pool(tmp, n=1000, d=16, shards=2)
    >>> _ = pc.score_pool(paths["pool"], f"{tmp}/s", scores=["ncl", "clip"], batch_size=256,
    ...                   progress=False)
    >>> r = select(f"{tmp}/s", f"{tmp}/subset.npy", ["ncl:0.3", "clip>=0.4"])  # doctest: +ELLIPSIS
    start: 1,000 rows (pool)
    ncl:0.3 keeps 300 of 1,000 rows
    clip>=0.4 keeps 269 of 300 rows
    wrote 269 uids to .../subset.npy
    >>> len(pc.read_uids(f"{tmp}/subset.npy"))
    269
    """
    out = Path(out)
    rules = [parse_rule(r) for r in keep]
    if not rules:
        raise ValueError("no --keep rules given")
    internal = list(dict.fromkeys(r.score for r in rules if r.source is None))
    files = check_complete(scores_dir, internal)
    base_keys = None
    if base is not None:
        base_keys = read_distinct_keys(base)
    externals = [_external(r) for r in rules if r.source is not None]
    result_steps: list[dict[str, Any]] = []
    tmp = None
    try:
        lf = pl.scan_parquet(files, missing_columns="insert").select(*KEYS, *internal)
        if base_keys is not None or externals:
            # Joins run once: the start set with every score the rules read is written to a
            # temporary Parquet file, and every later pass reads that.
            if base_keys is not None:
                lf = lf.join(base_keys.lazy(), on=KEYS, how="semi")
            for ext in externals:
                lf = lf.join(ext, on=KEYS, how="left", validate="m:1")
            tmp = Path(
                tempfile.mkdtemp(prefix=".select-", dir=out.parent if out.parent.exists() else None)
            )
            lf.sink_parquet(tmp / "start.parquet", row_group_size=SINK_ROW_GROUP)
            lf = pl.scan_parquet(tmp / "start.parquet")
        start = _count(lf)
        res = SelectResult(start=start, kept=start)
        if base_keys is not None:
            res.base_without_scores = base_keys.height - start
            log(
                f"start: {start:,} rows (pool rows in {Path(base).name}); "
                f"{res.base_without_scores:,} of its {base_keys.height:,} uids have no scores"
            )
        else:
            log(f"start: {start:,} rows (pool)")
        cond = pl.lit(True)
        now = start
        for rule in rules:
            cur = lf.filter(cond)
            col = rule.column
            step: dict[str, Any] = {"rule": rule.text, "score": rule.score, "before": now}
            if rule.source is not None:
                step["file"] = str(rule.source.resolve())
            if rule.fraction is None:
                assert rule.op is not None and rule.value is not None
                cond = cond & _threshold_predicate(col, rule.op, rule.value)
                step.update(kind="threshold", op=rule.op, value=rule.value)
            else:
                k = keep_count(start, rule.fraction)
                available = _count(cur.filter(_valid(col)))
                pred, cut = _top_predicate(cur, col, k, available)
                cond = cond & pred
                step.update(kind="fraction", fraction=str(rule.fraction), k=k)
                if cut is not None:
                    step.update(value=cut[0], cut_uid_hi=cut[1], cut_uid_lo=cut[2])
            now = _count(lf.filter(cond))
            step["kept"] = now
            result_steps.append(step)
            log(f"{rule.text} keeps {now:,} of {step['before']:,} rows")
        kept = lf.filter(cond).select(KEYS).collect(engine="streaming")
        n = write_keys(kept["uid_hi"].to_numpy(), kept["uid_lo"].to_numpy(), out)
        del kept
        res.kept = n
        res.steps = result_steps
        log(f"wrote {n:,} uids to {out}")
        record = {
            "scores_dir": str(Path(scores_dir).resolve()),
            "base": None if base is None else str(Path(base).resolve()),
            "start": start,
            "base_without_scores": res.base_without_scores,
            "steps": result_steps,
            "kept": n,
            "created_by": pc.__version__,
        }
        log_path = out.with_name(out.stem + ".select.json")
        atomic_write(log_path, lambda f: f.write(json.dumps(record, indent=1).encode()))
        return res
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
