"""What the report shows, as plain data: its inputs read and checked, the score files joined
with the base, the subset and each rule (staged once), and every aggregation the sections draw,
each a streaming Polars pass returning NumPy arrays or small frames (no Plotly here)."""

from __future__ import annotations

import html
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from polars_curate._errors import PoolError, first_line
from polars_curate._types import PathLike
from polars_curate.io import KeyFile, file_digest
from polars_curate.mixes import Mix
from polars_curate.partitions import DEFAULT_BUDGET, Partitions
from polars_curate.pool import list_pool, scan_pool
from polars_curate.rules import (
    KEYS,
    SelectLog,
    Step,
    check_external,
    is_repeated_key_error,
    join_external,
    refuse_repeated_keys,
    score_files,
)
from polars_curate.scoredir import check_complete, grouped_scores, read_record
from polars_curate.scores import SCORES, score_of
from polars_curate.staging import Staging, scan_units
from polars_curate.storage import Loc, location, scan_parquet
from polars_curate.uids import uid_key_exprs, uids_from_keys

__all__ = [
    "BINS",
    "GRID",
    "MAX_COMBINATIONS",
    "CaptionGroup",
    "ReportData",
    "caption_rows",
    "density",
    "finite",
    "histogram",
    "join_sets",
    "overlap",
    "percentiles",
    "read_inputs",
    "steps_for",
]

#: Histogram bins per score, and 2-D bins per axis of the density.
BINS = 80
GRID = 60
#: Set combinations drawn in the overlap chart (the largest ones).
MAX_COMBINATIONS = 24


@dataclass
class ReportData:
    """The report's inputs and the joined rows every section aggregates."""

    scores_dir: Loc
    record: dict[str, Any]
    files: list[Loc]
    scores: list[str]
    subset: Loc | None
    base: Loc | None
    log: SelectLog | None
    pool: PathLike | None
    examples: int
    notes: list[str] = field(default_factory=list)  # what it could not show, said on the page
    sizes: dict[str, int] = field(default_factory=dict)  # uids in the base and subset files
    members: list[str] = field(default_factory=list)  # the sets of the overlap (escaped)
    lf: pl.LazyFrame | None = None
    stats: dict[str, dict[str, Any]] = field(default_factory=dict)
    hists: dict[str, dict[str, Any]] = field(default_factory=dict)
    #: How paths in a bucket are reached (the user's ``storage_options``).
    options: dict[str, Any] | None = None
    #: The select log's mixes, with the means and deviations it used.
    mixes: list[tuple[Mix, dict[str, tuple[float, float]]]] = field(default_factory=list)

    @property
    def columns(self) -> list[str]:
        """What the report draws: the directory's scores (not the cluster label), then the
        log's mixes."""
        scores = [c for c in self.scores if getattr(score_of(c), "kind", "score") != "label"]
        return [*scores, *(m.name for m, _ in self.mixes)]

    @property
    def unit_columns(self) -> list[str]:
        """The scores the unit files hold (a grouped score is joined from its results)."""
        return [c for c in self.scores if getattr(score_of(c), "kind", "score") != "grouped"]

    @property
    def steps(self) -> list[Step]:
        return self.log.steps if self.log else []

    @property
    def split(self) -> bool:
        return self.subset is not None

    @property
    def total(self) -> int:
        if not self.columns:  # only the cluster label: no score statistics to read it from
            return self.rows.select(pl.len()).collect(engine="streaming").item()
        st = self.stats[self.columns[0]]
        return st["n"] + st["missing"]

    @property
    def rows(self) -> pl.LazyFrame:
        assert self.lf is not None
        return self.lf


def read_inputs(
    scores_dir: Loc,
    base: Loc | None,
    subset: Loc | None,
    pool: Loc | None,
    examples: int,
    options: dict[str, Any] | None = None,
) -> ReportData:
    """The directory (complete), the subset's select log, and the base it names (the log's
    paths in a bucket reached with ``options``)."""
    record = read_record(scores_dir)
    files = check_complete(scores_dir)
    scores = [s.column for s in SCORES.values() if s.column in record["scores"]]
    scores += [c for c in record["scores"] if c not in scores]
    log = None if subset is None else SelectLog.read(subset)
    d = ReportData(
        scores_dir=scores_dir,
        record=record,
        files=files,
        scores=scores,
        subset=subset,
        base=base,
        log=log,
        pool=pool,
        examples=examples,
        options=options,
    )
    if log is not None and subset is not None:
        _check_log_describes(log, subset, d.notes)
    if (
        log
        and log.scores_dir
        and str(location(log.scores_dir).resolve()) != str(scores_dir.resolve())
    ):
        d.notes.append(f"the select log was written for {log.scores_dir}, not this directory")
    for name, spec in (log.mixes or {}).items() if log else ():
        mix, stats = Mix.from_json(name, spec, options)
        gone = [t.ref.source for t in mix.terms if t.ref.source and not t.ref.source.is_file()]
        if gone:
            d.notes.append(f"mix {name!r}: its score file {gone[0]} is not there")
        else:
            d.mixes.append((mix, stats))
    if base is None and log and log.base:
        logged = location(log.base, options)
        if logged.is_file():
            d.base = logged
        else:
            d.notes.append(f"the select log's base {log.base} is not there: no base shown")
    return d


def _check_log_describes(log: SelectLog, subset: Loc, notes: list[str]) -> None:
    """``ValueError`` when the select log beside ``subset`` was written for other contents
    (a subset rewritten after its log, or a log copied beside another subset)."""
    where = SelectLog.path_for(subset)
    if log.subset_digest is None:
        notes.append(f"{where.name} records no digest of its subset (an older version wrote it)")
    elif log.subset_digest != file_digest(subset):
        raise ValueError(
            f"{where} describes another subset than {subset} (their contents differ: the "
            "subset was rewritten after the log, or the log belongs elsewhere); run "
            "`polars-curate select` again to write both"
        )


def join_sets(d: ReportData, stage: Staging, budget: int = DEFAULT_BUDGET) -> None:
    """``d.lf``: every scored row with its scores, ``in_base``/``in_subset`` flags, each
    shown rule's external score, and one ``__set{j}`` flag per set of the overlap (joins run
    once, staged one key partition at a time within ``budget``); then the statistics and
    histograms every section uses."""
    keyfiles = {n: KeyFile(p) for n, p in (("base", d.base), ("subset", d.subset)) if p}
    rule_files, shown = _rule_sets(d)
    joins = [(location(s.file, d.options), s.score, f"__rule{i}") for i, s in rule_files if s.file]
    refs = dict.fromkeys(t.ref for m, _ in d.mixes for t in m.terms if t.ref.source)
    joins += [(r.source, r.score, r.column) for r in refs if r.source]
    grouped = grouped_scores(d.record, d.scores)
    joins += [(d.scores_dir / f"_{s.column}", s.column, s.column) for s, _ in grouped]
    held = sum(len(k) for k in keyfiles.values()) + sum(_rows(f) for f, _, _ in joins)
    parts = Partitions.for_keys(held, budget)
    d.sizes = dict.fromkeys(keyfiles, 0)
    scored = scan_units(d.files, d.unit_columns)

    def part(p: int) -> pl.LazyFrame:
        rows = scored.filter(parts.predicate(p))
        for name, kf in keyfiles.items():
            keys = kf.part(parts, p)
            d.sizes[name] += keys.height
            flag = pl.lit(True).alias(f"in_{name}")
            rows = rows.join(keys.lazy().with_columns(flag), on=KEYS, how="left")
            rows = rows.with_columns(pl.col(f"in_{name}").fill_null(False))
        for source, score, alias in joins:
            rows = join_external(rows, source, score, alias, parts.predicate(p))
        return rows

    lf = scored
    if keyfiles or joins:
        try:
            lf = stage.stage_parts(part, parts, "rows")
        except Exception as e:
            if is_repeated_key_error(e):
                refuse_repeated_keys([(f, s) for f, s, _ in joins], parts)
            raise
    lf = lf.with_columns(m.expression(stats) for m, stats in d.mixes)
    member = [(n, pl.col(f"in_{n}")) for n in keyfiles] + shown
    d.members = [m[0] for m in member]
    d.lf = lf.with_columns(*[e.alias(f"__set{j}") for j, (_, e) in enumerate(member)])
    d.stats = _stats(d.rows, d.columns)
    d.hists = {c: histogram(d.rows, c, d.stats[c], d.split) for c in d.columns if d.stats[c]["n"]}


def _rows(path: Loc) -> int:
    return scan_parquet(score_files(path)).select(pl.len()).collect().item()


def _rule_sets(d: ReportData) -> tuple[list[tuple[int, Step]], list[tuple[str, pl.Expr]]]:
    """The logged rules whose external score files are still there (to join), and each rule
    that can be shown applied on its own; a note for each that cannot."""
    externals: list[tuple[int, Step]] = []
    shown: list[tuple[str, pl.Expr]] = []
    for i, s in enumerate(d.steps):
        column = s.score
        if s.file:
            column = f"__rule{i}"
            try:
                check_external(location(s.file, d.options), s.score)
            except Exception as e:  # the external file moved or changed since `select`
                d.notes.append(f"rule {s.rule!r}: {e}; its rows are not shown")
                continue
            externals.append((i, s))
        elif s.score not in d.columns and s.score not in d.scores:  # (the cluster label too)
            d.notes.append(f"rule {s.rule!r}: this directory has no score {s.score!r}")
            continue
        name = f"rule {i + 1}: {html.escape(s.rule)}"
        shown.append((name, s.predicate(column).fill_null(False)))
    return externals, shown


def finite(col: str) -> pl.Expr:
    return pl.col(col).cast(pl.Float64).is_finite().fill_null(False)


def _stats(lf: pl.LazyFrame, scores: list[str]) -> dict[str, dict[str, Any]]:
    if not scores:
        return {}
    exprs = []
    for c in scores:
        fin = finite(c)
        f = pl.when(fin).then(pl.col(c).cast(pl.Float64))
        exprs += [
            fin.sum().alias(f"{c}|n"),
            (~fin).sum().alias(f"{c}|missing"),
            f.min().alias(f"{c}|min"),
            f.max().alias(f"{c}|max"),
            f.mean().alias(f"{c}|mean"),
        ]
    row = lf.select(exprs).collect(engine="streaming").row(0, named=True)
    out: dict[str, dict[str, Any]] = {c: {} for c in scores}
    for k, v in row.items():
        c, _, stat = k.rpartition("|")
        out[c][stat] = v
    return out


def _bin(col: str, lo: float, hi: float, bins: int) -> pl.Expr:
    width = (hi - lo) / bins if hi > lo else 1.0
    return (
        ((pl.col(col).cast(pl.Float64) - lo) / width)
        .floor()
        .clip(0, bins - 1)
        .cast(pl.Int32)
        .alias(f"{col}|bin")
    )


def histogram(lf: pl.LazyFrame, col: str, st: dict[str, Any], split: bool) -> dict[str, Any]:
    """``BINS`` equal-width bins over ``[min, max]`` of the finite scores: edges, and the rows
    per bin in the subset (``kept``) and not (``dropped``; all rows are ``kept`` unsplit)."""
    lo, hi = float(st["min"]), float(st["max"])
    counts = (
        lf.filter(finite(col))
        .group_by(_bin(col, lo, hi, BINS), *(["in_subset"] if split else []))
        .agg(pl.len().alias("rows"))
        .collect(engine="streaming")
    )
    edges = np.linspace(lo, hi, BINS + 1) if hi > lo else np.array([lo - 0.5, lo + 0.5])
    nb = len(edges) - 1
    kept = np.zeros(nb, dtype=np.int64)
    dropped = np.zeros(nb, dtype=np.int64)
    for r in counts.iter_rows(named=True):
        b = min(int(r[f"{col}|bin"]), nb - 1)
        if split and not r["in_subset"]:
            dropped[b] += r["rows"]
        else:
            kept[b] += r["rows"]
    return {"edges": edges, "kept": kept, "dropped": dropped, "lo": lo, "hi": hi}


def percentiles(h: dict[str, Any], qs: tuple[float, ...]) -> list[float]:
    """Percentiles read off the histogram (linear within a bin): exact to a bin width."""
    counts = h["kept"] + h["dropped"]
    total = counts.sum()
    cum = np.concatenate([[0], np.cumsum(counts)])
    out = []
    for q in qs:
        target = q * total
        i = int(np.clip(np.searchsorted(cum, target, side="left") - 1, 0, len(counts) - 1))
        inside = (target - cum[i]) / counts[i] if counts[i] else 0.0
        v = float(h["edges"][i] + inside * (h["edges"][i + 1] - h["edges"][i]))
        out.append(min(max(v, h["lo"]), h["hi"]))
    return out


def steps_for(steps: list[Step], col: str) -> list[Step]:
    """The logged fraction or threshold cuts on score column ``col`` (finite ones)."""
    return [
        s
        for s in steps
        if s.file is None and s.score == col and s.value is not None and math.isfinite(s.value)
    ]


def overlap(lf: pl.LazyFrame, sets: int) -> tuple[pl.DataFrame, tuple[int, ...]]:
    """Rows per combination of the ``sets`` flags (rows in no set left out, largest first),
    and each set's size."""
    names = [f"__set{j}" for j in range(sets)]
    combos = (
        lf.group_by(names)
        .agg(pl.len().alias("rows"))
        .collect(engine="streaming")
        .filter(pl.any_horizontal(names))
        .sort("rows", descending=True)
    )
    sizes = lf.select([pl.col(s).sum() for s in names]).collect(engine="streaming").row(0)
    return combos, sizes


def density(
    d: ReportData, x: str, y: str
) -> tuple[np.ndarray, np.ndarray, list[tuple[str, bool | None, np.ndarray]]]:
    """``GRID x GRID`` counts of ``(x, y)`` over every row with both finite: bin centres of
    ``x`` and ``y`` and one ``(name, in_subset, counts[y_bin, x_bin])`` panel per side."""
    sx, sy = d.stats[x], d.stats[y]
    grid = (
        d.rows.filter(finite(x) & finite(y))
        .group_by(
            _bin(x, sx["min"], sx["max"], GRID),
            _bin(y, sy["min"], sy["max"], GRID),
            *(["in_subset"] if d.split else []),
        )
        .agg(pl.len().alias("rows"))
        .collect(engine="streaming")
    )
    ex = np.linspace(sx["min"], sx["max"], GRID + 1)
    ey = np.linspace(sy["min"], sy["max"], GRID + 1)
    sides: list[tuple[str, bool | None]] = (
        [("kept", True), ("dropped", False)] if d.split else [("all rows", None)]
    )
    panels = []
    for name, flag in sides:
        z = np.zeros((GRID, GRID))
        part = grid if flag is None else grid.filter(pl.col("in_subset") == flag)
        for r in part.iter_rows(named=True):
            z[r[f"{y}|bin"], r[f"{x}|bin"]] += r["rows"]
        panels.append((name, flag, z))
    return (ex[:-1] + ex[1:]) / 2, (ey[:-1] + ey[1:]) / 2, panels


@dataclass(frozen=True)
class CaptionGroup:
    """Rows shown together: around a rule's cut (``kind="cut"``), the median (``"median"``),
    or the highest and lowest (``"ends"``) of score ``score``."""

    score: str
    gid: str
    kind: str
    value: float | None = None
    rule: str | None = None


def _cuts(d: ReportData, c: str) -> list[CaptionGroup]:
    """Where to show captions for score ``c``: each rule's cut, else the median."""
    cuts = [
        CaptionGroup(c, f"{c}|{j}", "cut", s.value, s.rule)
        for j, s in enumerate(steps_for(d.steps, c))
    ]
    median = percentiles(d.hists[c], (0.5,))[0]
    return cuts or [CaptionGroup(c, f"{c}|0", "median", median)]


def caption_rows(d: ReportData) -> tuple[pl.DataFrame, list[CaptionGroup]]:
    """The ``examples`` rows on each side of every cut (or of the median) and at both ends,
    with the pool's ``text`` and ``url``: one frame (``group``, ``side``, the keys, scores,
    ``in_subset``, ``uid``, text columns) and its groups, in order."""
    k = d.examples
    picks: list[pl.DataFrame] = []
    groups: list[CaptionGroup] = []
    cols = [*KEYS, *d.columns, *(["in_subset"] if d.split else [])]
    order = [pl.col("uid_hi"), pl.col("uid_lo")]
    for c in (c for c in d.columns if c in d.hists):
        x = pl.col(c).cast(pl.Float64)
        fin = d.rows.filter(finite(c))
        for g in _cuts(d, c):
            above = fin.filter(x >= g.value).bottom_k(k, by=[x, *order]).select(cols)
            below = fin.filter(x < g.value).top_k(k, by=[x, *order]).select(cols)
            got = pl.collect_all([above, below], engine="streaming")
            picks += _tagged(got, g.gid, ["above", "below"])
            groups.append(g)
        high = fin.top_k(k, by=[x, *order]).select(cols)
        low = fin.bottom_k(k, by=[x, *order]).select(cols)
        got = pl.collect_all([high, low], engine="streaming")
        picks += _tagged(got, f"{c}|ends", ["highest", "lowest"])
        groups.append(CaptionGroup(c, f"{c}|ends", "ends"))
    if not picks:
        return pl.DataFrame(), []
    chosen = pl.concat(picks, how="diagonal_relaxed")
    chosen = chosen.with_columns(
        uids_from_keys(chosen["uid_hi"].to_numpy(), chosen["uid_lo"].to_numpy())
    )
    texts = _texts(d.pool, chosen.select(KEYS).unique())
    return chosen.join(texts, on=KEYS, how="left"), groups


def _tagged(frames: list[pl.DataFrame], group: str, sides: list[str]) -> list[pl.DataFrame]:
    return [f.with_columns(group=pl.lit(group), side=pl.lit(s)) for f, s in zip(frames, sides)]


def _texts(pool: PathLike | None, wanted: pl.DataFrame) -> pl.DataFrame:
    """The keys with the pool's ``text`` and ``url`` (those it has) for the ``wanted`` keys:
    joined on the key, so a uid's case does not matter (one rule: :mod:`polars_curate.uids`)."""
    assert pool is not None
    src = scan_pool(pool, embeddings=[])
    names = src.collect_schema().names()
    text_cols = [c for c in ("text", "url") if c in names]
    if "uid" not in names:
        raise ValueError(f"pool {pool}: no 'uid' column to match captions on")
    try:
        return (
            src.select(*uid_key_exprs("uid"), *text_cols)
            .join(wanted.lazy(), on=KEYS, how="semi")
            .collect(engine="streaming")
            .unique(KEYS, keep="first", maintain_order=True)
        )
    except Exception as e:  # e.g. invalid UTF-8 in a caption: name the file that holds it
        for shard in list_pool(pool):
            try:
                scan_parquet([shard.parquet]).select("uid", *text_cols).collect()
            except Exception as bad:
                msg = f"{shard.parquet}: cannot read its captions ({first_line(bad)})"
                raise PoolError(msg) from None
        raise PoolError(f"pool {pool}: cannot read its captions ({first_line(e)})") from None


def cluster_sizes(d: ReportData) -> np.ndarray:
    """The size of every cluster that has rows (one streaming pass)."""
    sizes = d.rows.group_by("cluster").agg(pl.len().alias("n")).collect(engine="streaming")
    return np.sort(sizes.filter(pl.col("cluster").is_not_null())["n"].to_numpy())


#: The ``eps`` of the removal curve: every :data:`EPS_STEP` up to 0.3.
EPS_STEP = 0.0025
EPS = np.arange(121) * EPS_STEP


def removal_curve(d: ReportData, column: str = "semdedup") -> tuple[np.ndarray, np.ndarray]:
    """``eps`` and the fraction of the scored rows SemDeDup removes at it (score above
    ``1 - eps``), from one streaming pass counting rows per ``floor((1 - score) / step)``."""
    s = pl.col(column).cast(pl.Float64)
    step = ((1.0 - s) / EPS_STEP).floor().clip(0, len(EPS)).cast(pl.Int32)
    counts = (
        d.rows.filter(s.is_not_null() & s.is_not_nan())
        .group_by(step.alias("b"))
        .agg(pl.len().alias("n"))
        .collect(engine="streaming")
    )
    total = d.rows.select(pl.len()).collect(engine="streaming").item()
    per = np.zeros(len(EPS) + 1)
    for b, n in counts.iter_rows():
        per[b] += n
    # Removed at eps_j: 1 - score < j * step, the rows of the steps below j.
    removed = np.concatenate([[0.0], np.cumsum(per)[: len(EPS) - 1]])
    return EPS, removed / max(total, 1)
