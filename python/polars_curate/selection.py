"""``select``: rules over a score directory, streamed, into an exact DataComp subset.

A rule list is applied in order to a start set (the pool's scored rows, or those in a
``--base`` subset); the rules are those of :mod:`polars_curate.rules`. Memory does not grow
with the pool: each fraction rule finds its exact cut with a few streaming passes
(:mod:`polars_curate.kth`), then one more pass writes the subset. Only the subset itself (16
bytes a row), the base's keys and an external score file's keys and scores are held.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from fractions import Fraction
from typing import Any

import polars as pl

from polars_curate._internal import __version__
from polars_curate._types import PathLike
from polars_curate._validate import check_output
from polars_curate.atomic import write_atomic
from polars_curate.clusters import target_clusters
from polars_curate.io import KeyFile, file_digest, write_key_parts
from polars_curate.kth import kth_row, top_cut
from polars_curate.mixes import Mix, mix_stats
from polars_curate.partitions import DEFAULT_BUDGET, Partitions
from polars_curate.rules import (
    KEYS,
    Rule,
    ScoreRef,
    SelectLog,
    Step,
    check_external,
    is_repeated_key_error,
    join_external,
    keep_count,
    parse_rule,
    refuse_repeated_keys,
    score_files,
    score_ref,
    threshold_predicate,
    valid,
)
from polars_curate.sample import Sample, sample_subset
from polars_curate.scoredir import check_complete, read_record
from polars_curate.scores import read_input, score_of
from polars_curate.staging import Staging, scan_units, staging
from polars_curate.storage import Loc, located, location, scan_parquet

__all__ = ["TIES", "select"]

#: How a fraction rule treats ties at its cut: exactly ``floor(F * start)`` rows (ties to the
#: smaller uid), or DataComp's ``get_threshold`` (every row at or above the cut).
TIES = ("exact", "datacomp")


def _count(lf: pl.LazyFrame) -> int:
    return lf.select(pl.len()).collect(engine="streaming").item()


def _datacomp_cut(
    cur: pl.LazyFrame, col: str, start: int, fraction: Fraction, now: int
) -> tuple[pl.Expr, int, float]:
    """DataComp's ``get_threshold``: the value at index ``int(start * fraction)`` of the
    scores of the rows still in, sorted descending with missing ones last; every row at or
    above it is kept (ties at the cut all kept). A cut among the missing scores keeps none."""
    n = int(start * float(fraction))  # DataComp's float product, not the exact floor
    if n >= now:
        raise ValueError(
            f"--ties datacomp: index {n} = int({start} * {float(fraction)}) is past the {now} "
            "rows still in (DataComp's get_threshold has no value there)"
        )
    available = _count(cur.filter(valid(col)))
    if n >= available:
        return pl.lit(False), n, math.nan
    (neg,) = kth_row(cur.filter(valid(col)), [-pl.col(col).cast(pl.Float64)], n + 1)
    return threshold_predicate(col, ">=", -neg), n, -neg


def _apply(
    lf: pl.LazyFrame, cond: pl.Expr, rule: Rule, start: int, now: int, ties: str
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
    step.fraction = str(rule.fraction)
    if ties == "datacomp":
        pred, step.k, step.value = _datacomp_cut(cur, col, start, rule.fraction, now)
        step.ties = ties
        return cond & pred, step
    step.k = keep_count(start, rule.fraction)
    pred, cut = top_cut(cur, col, step.k, _count(cur.filter(valid(col))))
    if cut is not None:
        step.value, step.cut_uid_hi, step.cut_uid_lo = cut
    return cond & pred, step


@dataclass
class _Plan:
    """A checked ``select``: what it reads and does; nothing written yet."""

    rules: list[Rule]
    mixes: list[Mix]
    sample: Sample | None
    ties: str
    internal: list[str]  # score columns of the directory read
    externals: list[ScoreRef]  # score file columns read (each once)
    files: list[Loc]
    sample_column: str | None = None  # the column the sample reads


def _listed(x: Any) -> list[Any]:
    return [] if x is None else [x] if isinstance(x, (str, Mix, Sample)) else list(x)


def _grouped(scores_dir: Loc, ref: ScoreRef) -> ScoreRef:
    """A grouped score of the directory (``semdedup``) read from its result files."""
    s = score_of(ref.score)
    if ref.source is None and s is not None and s.kind == "grouped":
        return ScoreRef(ref.score, scores_dir / f"_{ref.score}")
    return ref


def _resolve(scores_dir: Loc, rules: list[Rule], mixes: list[Mix]) -> tuple[list[Rule], list[Mix]]:
    rules = [replace(r, ref=_grouped(scores_dir, r.ref)) for r in rules]
    mixes = [
        replace(m, terms=tuple(replace(t, ref=_grouped(scores_dir, t.ref)) for t in m.terms))
        for m in mixes
    ]
    return rules, mixes


def _clusters_rule(scores_dir: Loc, keep_clusters: tuple[Any, Any]) -> Step:
    """DataComp's image-based filter as a step: the clusters the target picks (raw inner
    products against the centroids the directory's ``cluster`` score used)."""
    target, centroids = keep_clusters
    rec = read_record(scores_dir)["scores"].get("cluster")
    if rec is None:
        raise ValueError(
            f"--keep-clusters: {scores_dir} has no cluster score (score --scores cluster)"
        )
    f32, info = read_input(centroids, "centroids", normalize=False)
    if info["key"] != rec["params"]["centroids"]["key"]:
        raise ValueError(
            f"--keep-clusters: {centroids} are not the centroids {scores_dir}'s clusters were "
            "assigned with (their content differs)"
        )
    try:
        picked = target_clusters(target, f32)
    except ValueError as e:
        raise ValueError(f"--keep-clusters: {e}") from None
    name = getattr(target, "name", str(target))
    return Step(f"clusters hit by {name}", "cluster", 0, "clusters", clusters=picked.tolist())


def _plan(
    scores_dir: Loc,
    out: Loc,
    keep: Any,
    base: Loc | None,
    mixes: Any,
    ties: str,
    sample: Sample | None,
    options: dict[str, Any] | None,
    clusters: bool = False,
) -> _Plan:
    rules = [r if isinstance(r, Rule) else parse_rule(r, options) for r in _listed(keep)]
    mix_list = [m if isinstance(m, Mix) else Mix.parse(m, options) for m in _listed(mixes)]
    rules, mix_list = _resolve(scores_dir, rules, mix_list)
    names = [m.name for m in mix_list]
    if len(set(names)) < len(names):
        raise ValueError(f"--mix: two mixes are named {sorted(names)[0]!r}")
    if ties not in TIES:
        raise ValueError(f"--ties must be one of {', '.join(TIES)}, got {ties!r}")
    if not rules and sample is None and not clusters:
        raise ValueError("no --keep rules given (and no --sample)")
    refs = [r.ref for r in rules] + [t.ref for m in mix_list for t in m.terms]
    sample_column = None
    if sample is not None:
        sample_column = sample.by
        if sample.by not in names:
            refs.append(_grouped(scores_dir, score_ref(sample.by, "--sample-by", options)))
            sample_column = refs[-1].column
    refs = [r for r in refs if r.source is not None or r.score not in names]
    internal = list(dict.fromkeys(r.score for r in refs if r.source is None))
    internal += ["cluster"] if clusters and "cluster" not in internal else []
    externals = list(dict.fromkeys(r for r in refs if r.source is not None))
    own = [r.score for r in externals if r.source == scores_dir / f"_{r.score}"]
    files = check_complete(scores_dir, [*internal, *own])
    for target in (out, SelectLog.path_for(out)):
        check_output(target, [base, *(r.source for r in externals), *files])
    for r in externals:
        assert r.source is not None
        check_external(r.source, r.score)
    return _Plan(rules, mix_list, sample, ties, internal, externals, files, sample_column)


def _start_set(
    stage: Staging, plan: _Plan, base: KeyFile | None, budget: int
) -> tuple[pl.LazyFrame, int | None]:
    """The rows to select from, with every score the rules, mixes and sample read (joins run
    once, staged one key partition at a time), and the base's distinct uids."""
    lf = scan_units(plan.files, plan.internal)
    externals = plan.externals
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


def _rows(path: Loc) -> int:
    return scan_parquet(score_files(path)).select(pl.len()).collect().item()


def select(
    scores_dir: PathLike,
    out: PathLike,
    keep: str | Sequence[str] = (),
    *,
    base: PathLike | None = None,
    mixes: str | Sequence[str | Mix] = (),
    ties: str = "exact",
    sample: Sample | None = None,
    keep_clusters: tuple[PathLike | Loc, PathLike | Loc] | None = None,
    memory_budget: int = DEFAULT_BUDGET,
    storage_options: dict[str, Any] | None = None,
    log: Callable[[str], None] = print,
) -> SelectLog:
    """Apply ``--keep`` rules to a complete score directory and write a DataComp subset.

    Writes ``out`` (sorted ``("u8", "u8")`` uids, atomically) and, beside it,
    ``<out stem>.select.json`` (a :class:`~polars_curate.rules.SelectLog`, also returned): the
    start set, each rule with its cut and count (what ``report`` draws). See
    :mod:`polars_curate.rules` for the rules; a rule or the sample may read a mix
    (``mixes``, :mod:`polars_curate.mixes`). ``ties="datacomp"``: fraction rules keep every
    row at or above DataComp's ``get_threshold`` value (ties at the cut all kept) instead of
    exactly ``floor(F * start)`` rows. ``sample`` (:class:`~polars_curate.sample.Sample`): the
    last step draws Soft or Hard Cap samples from the rows the rules left, and the subset lists
    each uid as often as drawn. ``memory_budget`` (bytes) bounds the keys held at once (the
    base's, an external score file's, the subset's): larger sets are worked through in key
    partitions, with the same result. Every path may be in a bucket (``s3://``, reached with
    ``storage_options`` or the ``AWS_*`` environment). ``keep_clusters=(target, centroids)``:
    DataComp's image-based filter, applied first: keep the rows whose ``cluster`` (a score of
    the directory) is one the target's embeddings pick by raw inner product
    (:func:`polars_curate.clusters.target_clusters`); a rule ``semdedup<=0.95`` drops
    SemDeDup's near-duplicates.

    Examples
    --------
    >>> import tempfile
    >>> from polars_curate.selection import select
    >>> tmp = tempfile.mkdtemp()
    >>> paths = pc.datasets.synthetic_pool(tmp, n=1000, d=16, shards=2)
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
    out, scores_dir = location(out, storage_options), location(scores_dir, storage_options)
    base = None if base is None else location(base, storage_options)
    plan = _plan(
        scores_dir, out, keep, base, mixes, ties, sample, storage_options, bool(keep_clusters)
    )
    if keep_clusters is not None:
        keep_clusters = (
            located(keep_clusters[0], storage_options),
            located(keep_clusters[1], storage_options),
        )
    first = None if keep_clusters is None else _clusters_rule(scores_dir, keep_clusters)
    base_keys = None if base is None else KeyFile(base)
    with staging(out, "select") as stage:
        lf, distinct = _start_set(stage, plan, base_keys, memory_budget)
        record = SelectLog(
            scores_dir=str(scores_dir.resolve()),
            base=None if base is None else str(base.resolve()),
            start=_count(lf),
            created_by=__version__,
        )
        _log_start(record, distinct, base, log)
        lf = _with_mixes(lf, plan.mixes, record)
        cond, now = pl.lit(True), record.start
        if first is not None:
            cond, now = _apply_first(lf, first, record, log)
        for rule in plan.rules:
            cond, step = _apply(lf, cond, rule, record.start, now, plan.ties)
            now = step.kept = _count(lf.filter(cond))
            record.steps.append(step)
            log(f"{rule.text} keeps {now:,} of {step.before:,} rows")
        record.kept_rows = now
        _write_subset(lf.filter(cond), plan, out, record, memory_budget, log)
    # The log names its subset by content: a log left from another run is refused by report.
    record.subset_digest = file_digest(out)
    write_atomic(SelectLog.path_for(out), lambda f: f.write(record.to_json()))
    return record


def _apply_first(
    lf: pl.LazyFrame, first: Step, record: SelectLog, log: Callable[[str], None]
) -> tuple[pl.Expr, int]:
    """The image-based step, before the rules: its condition and the rows it keeps."""
    first.before = record.start
    cond = first.predicate()
    first.kept = _count(lf.filter(cond))
    record.steps.append(first)
    n = len(first.clusters or [])
    log(f"{first.rule} ({n:,} clusters) keeps {first.kept:,} of {first.before:,} rows")
    return cond, first.kept


def _with_mixes(lf: pl.LazyFrame, mixes: list[Mix], record: SelectLog) -> pl.LazyFrame:
    if not mixes:
        return lf
    stats = mix_stats(lf, mixes)
    record.mixes = {m.name: m.to_json(stats) for m in mixes}
    return lf.with_columns(m.expression(stats) for m in mixes)


def _write_subset(
    kept: pl.LazyFrame,
    plan: _Plan,
    out: Loc,
    record: SelectLog,
    budget: int,
    log: Callable[[str], None],
) -> None:
    """The subset: the kept rows' uids (each once), or the sample drawn from them."""
    parts = Partitions.for_keys(record.kept_rows, budget)
    if plan.sample is None:
        record.kept = write_key_parts(kept.select(KEYS), out, parts)
        now = record.kept_rows
        repeats = "" if now == record.kept else f" (from {now:,} rows: some uids are in several)"
        log(f"wrote {record.kept:,} uids to {out}{repeats}")
        return
    assert plan.sample_column is not None
    record.kept, record.sample = sample_subset(kept, plan.sample_column, plan.sample, out, parts)
    drawn = record.sample["rows_per_count"]
    distinct = sum(n for c, n in drawn.items() if int(c) > 0)
    log(
        f"{plan.sample.kind} sampling on {plan.sample.by}: {record.kept:,} draws of "
        f"{distinct:,} distinct uids among {record.kept_rows:,} rows; wrote {out}"
    )


def _log_start(
    record: SelectLog, distinct: int | None, base: PathLike | None, log: Callable[[str], None]
) -> None:
    if distinct is None or base is None:
        log(f"start: {record.start:,} rows (pool)")
        return
    record.base_without_scores = distinct - record.start
    log(
        f"start: {record.start:,} rows (pool rows in {location(base).name}); "
        f"{record.base_without_scores:,} of its {distinct:,} uids have no scores"
    )
