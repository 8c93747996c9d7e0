"""``select``: rules over a score directory, streamed, into an exact DataComp subset.

A rule list is applied in order to a start set (the pool's scored rows, or those in a
``--base`` subset); the rules are those of :mod:`polars_curate.rules`. Memory does not grow
with the pool: each fraction rule finds its exact cut with a few streaming passes
(:mod:`polars_curate.kth`), then one more pass writes the subset. Only the subset itself (16
bytes a row), the base's keys and an external score file's keys and scores are held.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path

import polars as pl

from polars_curate._internal import __version__
from polars_curate._types import PathLike
from polars_curate._validate import check_output
from polars_curate.atomic import write_atomic
from polars_curate.io import KeyFile, file_digest, write_key_parts
from polars_curate.kth import top_cut
from polars_curate.partitions import DEFAULT_BUDGET, Partitions
from polars_curate.rules import (
    KEYS,
    Rule,
    SelectLog,
    Step,
    check_external,
    is_repeated_key_error,
    join_external,
    keep_count,
    parse_rule,
    refuse_repeated_keys,
    threshold_predicate,
    valid,
)
from polars_curate.scoredir import check_complete
from polars_curate.staging import Staging, scan_units, staging

__all__ = ["select"]


def _count(lf: pl.LazyFrame) -> int:
    return lf.select(pl.len()).collect(engine="streaming").item()


def _apply(
    lf: pl.LazyFrame, cond: pl.Expr, rule: Rule, start: int, now: int
) -> tuple[pl.Expr, Step]:
    """Rule ``rule`` after the rows ``cond`` keeps: the new condition and its step."""
    col = rule.column
    step = Step(rule.text, rule.score, now, "threshold" if rule.fraction is None else "fraction")
    if rule.source is not None:
        step.file = str(rule.source.resolve())
    if rule.fraction is None:
        assert rule.op is not None and rule.value is not None
        step.op, step.value = rule.op, rule.value
        return cond & threshold_predicate(col, rule.op, rule.value), step
    cur = lf.filter(cond)
    step.fraction, step.k = str(rule.fraction), keep_count(start, rule.fraction)
    pred, cut = top_cut(cur, col, step.k, _count(cur.filter(valid(col))))
    if cut is not None:
        step.value, step.cut_uid_hi, step.cut_uid_lo = cut
    return cond & pred, step


def _start_set(
    stage: Staging,
    files: list[Path],
    rules: Sequence[Rule],
    internal: list[str],
    base: KeyFile | None,
    budget: int,
) -> tuple[pl.LazyFrame, int | None]:
    """The rows to select from, with every score the rules read (joins run once, staged one
    key partition at a time), and the base's distinct uids."""
    lf = scan_units(files, internal)
    externals = [r for r in rules if r.source is not None]
    if base is None and not externals:
        return lf, None
    held = (len(base) if base else 0) + sum(_rows(r.source) for r in externals if r.source)
    parts = Partitions.for_keys(held, budget)
    distinct = 0

    def part(p: int) -> pl.LazyFrame:
        nonlocal distinct
        rows = lf.filter(parts.predicate(p))
        if base is not None:
            keys = base.part(parts, p)
            distinct += keys.height
            rows = rows.join(keys.lazy(), on=KEYS, how="semi")
        for r in externals:
            assert r.source is not None
            rows = join_external(rows, r.source, r.score, r.column, parts.predicate(p))
        return rows

    try:
        staged = stage.stage_parts(part, parts, "start")
    except Exception as e:
        if is_repeated_key_error(e):
            refuse_repeated_keys([(r.source, r.score) for r in externals if r.source], parts)
        raise
    return staged, distinct if base is not None else None


def _rows(path: Path) -> int:
    return pl.scan_parquet(path).select(pl.len()).collect().item()


def select(
    scores_dir: PathLike,
    out: PathLike,
    keep: str | Sequence[str],
    *,
    base: PathLike | None = None,
    memory_budget: int = DEFAULT_BUDGET,
    log: Callable[[str], None] = print,
) -> SelectLog:
    """Apply ``--keep`` rules to a complete score directory and write a DataComp subset.

    Writes ``out`` (sorted ``("u8", "u8")`` uids, atomically) and, beside it,
    ``<out stem>.select.json`` (a :class:`~polars_curate.rules.SelectLog`, also returned): the
    start set, each rule with its cut and count (what ``report`` draws). See
    :mod:`polars_curate.rules` for the rules. ``memory_budget`` (bytes) bounds the keys held
    at once (the base's, an external score file's, the subset's): larger sets are worked
    through in key partitions, with the same result.

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
    rules = [parse_rule(r) for r in ([keep] if isinstance(keep, str) else keep)]
    if not rules:
        raise ValueError("no --keep rules given")
    internal = list(dict.fromkeys(r.score for r in rules if r.source is None))
    files = check_complete(scores_dir, internal)
    externals = [r.source for r in rules if r.source is not None]
    for target in (out, SelectLog.path_for(out)):
        check_output(target, [base, *externals, *files])
    for r in rules:
        if r.source is not None:
            check_external(r.source, r.score)
    base_keys = None if base is None else KeyFile(base)
    with staging(out, "select") as stage:
        lf, distinct = _start_set(stage, files, rules, internal, base_keys, memory_budget)
        record = SelectLog(
            scores_dir=str(Path(scores_dir).resolve()),
            base=None if base is None else str(Path(base).resolve()),
            start=_count(lf),
            created_by=__version__,
        )
        _log_start(record, distinct, base, log)
        cond, now = pl.lit(True), record.start
        for rule in rules:
            cond, step = _apply(lf, cond, rule, record.start, now)
            now = step.kept = _count(lf.filter(cond))
            record.steps.append(step)
            log(f"{rule.text} keeps {now:,} of {step.before:,} rows")
        parts = Partitions.for_keys(now, memory_budget)
        record.kept = write_key_parts(lf.filter(cond).select(KEYS), out, parts)
    record.kept_rows = now
    repeats = "" if now == record.kept else f" (from {now:,} rows: some uids are in several)"
    log(f"wrote {record.kept:,} uids to {out}{repeats}")
    # The log names its subset by content: a log left from another run is refused by report.
    record.subset_digest = file_digest(out)
    write_atomic(SelectLog.path_for(out), lambda f: f.write(record.to_json()))
    return record


def _log_start(
    record: SelectLog, distinct: int | None, base: PathLike | None, log: Callable[[str], None]
) -> None:
    if distinct is None or base is None:
        log(f"start: {record.start:,} rows (pool)")
        return
    record.base_without_scores = distinct - record.start
    log(
        f"start: {record.start:,} rows (pool rows in {Path(base).name}); "
        f"{record.base_without_scores:,} of its {distinct:,} uids have no scores"
    )
