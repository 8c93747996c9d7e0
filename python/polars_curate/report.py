"""A one-file HTML report of a score directory to choose cuts from.

Drawn with Plotly and rendered offline: ``plotly.js`` is inlined once, so the file opens in any
browser without a network. Sections:

* **Summary**: rows, scores, the subset and its ``select`` log, the tool version.
* **Distributions**: per score, a histogram (axes, ticks, titles) of every scored row, split
  into kept and dropped when a subset is given, with each ``select`` rule's cut drawn and
  labelled with its value; a table of counts, range, mean and percentiles.
* **Rules**: the rows left after each rule (from the ``.select.json`` that ``select`` writes
  beside the subset).
* **Overlap**: UpSet-style bars of the base, the subset and each rule applied on its own.
* **CLIPScore vs negCLIPLoss**: 2-D densities of every row, kept and dropped side by side.
* **Captions around the cuts**: with ``pool``, the rows just above and just below each cut
  (and the lowest and highest), with their text and url.
* **Parameters**: each score's recorded parameters and runs.

Everything is aggregated by Polars in streaming passes (histogram bins, 2-D bins, set
combinations, top-k around a cut), so the report of a 128M-row directory is as small as that of
a 1,000-row one and memory holds the subset's and base's keys, not the scores.
"""

from __future__ import annotations

import html
import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

import polars_curate as pc
from polars_curate.io import SINK_ROW_GROUP, atomic_write, read_distinct_keys, uids_from_keys
from polars_curate.pipeline import SCORES, check_complete, read_record
from polars_curate.selection import KEYS, Rule, _external, step_predicate

__all__ = ["write_report"]

#: Histogram bins per score, and 2-D bins per axis of the density.
BINS = 80
GRID = 60
#: Set combinations drawn in the overlap chart (the largest ones).
MAX_COMBINATIONS = 24

LONG_NAMES = {
    "ncl": "negCLIPLoss",
    "clip": "CLIPScore",
    "normsim_inf": "NormSim∞",
    "normsim_2": "NormSim₂",
}
KEPT, DROPPED = "#2a9d8f", "#b0b7bf"


def _num(v: float | None, digits: int = 4) -> str:
    """A score for people: ``digits`` significant digits, never ``-0``."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{float(v) + 0.0:.{digits}g}"  # + 0.0 turns -0.0 into 0.0


def _label(col: str) -> str:
    long = LONG_NAMES.get(col)
    return f"{col} ({long})" if long else col


def _steps_for(steps: list[dict[str, Any]], col: str) -> list[dict[str, Any]]:
    return [
        s
        for s in steps
        if s.get("file") is None
        and s.get("score") == col
        and "value" in s
        and math.isfinite(float(s["value"]))
    ]


def _finite(col: str) -> pl.Expr:
    return pl.col(col).cast(pl.Float64).is_finite().fill_null(False)


def _stats(lf: pl.LazyFrame, scores: list[str]) -> dict[str, dict[str, Any]]:
    exprs = []
    for c in scores:
        fin = _finite(c)
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


def _histogram(lf: pl.LazyFrame, col: str, st: dict[str, Any], split: bool) -> dict[str, Any]:
    lo, hi = float(st["min"]), float(st["max"])
    counts = (
        lf.filter(_finite(col))
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


def _percentiles(h: dict[str, Any], qs: tuple[float, ...]) -> list[float]:
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


def _table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


class _Page:
    """Sections of HTML and Plotly figures, assembled into one file."""

    def __init__(self) -> None:
        self.parts: list[str] = []

    def add(self, text: str) -> None:
        self.parts.append(text)

    def figure(self, fig: Any, name: str) -> None:
        fig.update_layout(
            template="plotly_white",
            margin={"l": 60, "r": 20, "t": 50, "b": 50},
            font={"size": 12},
        )
        self.parts.append(
            fig.to_html(
                full_html=False,
                include_plotlyjs=False,
                div_id=f"fig-{name}",
                config={"displaylogo": False, "responsive": True},
            )
        )

    def html(self, title: str) -> str:
        from plotly.offline import get_plotlyjs

        style = (
            "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
            "color:#222}h2{margin-top:2em;border-bottom:1px solid #ddd}table{border-collapse:"
            "collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 8px;font-size:13px;"
            "vertical-align:top;text-align:left}.caption td{max-width:560px}"
            ".note{color:#555;font-size:13px}.kept{color:" + KEPT + ";font-weight:600}"
        )
        # Errors in the page (a figure that fails to draw, a rejected promise) and how many
        # figures Plotly drew (divs holding its SVG) are recorded where a test can see them.
        guard = (
            "<script>(function(){var seen=[],root=document.documentElement;"
            "function fail(m){seen.push(String(m));"
            "root.setAttribute('data-errors',seen.join(' | '));}"
            "window.addEventListener('error',function(e){fail(e.message);});"
            "window.addEventListener('unhandledrejection',function(e){fail(e.reason);});"
            "window.addEventListener('load',function(){var n=0;document.querySelectorAll("
            "'.plotly-graph-div').forEach(function(d){if(d.querySelector('.main-svg'))n++;});"
            "root.setAttribute('data-figures-drawn',String(n));});})();</script>"
        )
        return (
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{style}</style>{guard}"
            f"<script>{get_plotlyjs()}</script></head><body>"
            f"{''.join(self.parts)}</body></html>"
        )


def write_report(
    scores_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    base: str | os.PathLike[str] | None = None,
    subset: str | os.PathLike[str] | None = None,
    pool: str | os.PathLike[str] | None = None,
    examples: int = 5,
) -> Path:
    """Write the report of a complete score directory to ``out`` (atomically).

    ``subset`` (a ``select`` output) splits every chart into kept and dropped rows and, through
    the ``<subset stem>.select.json`` written beside it, draws each rule's cut and count;
    ``base`` adds the base to the overlap (default: the base the select log names); ``pool``
    adds the captions and urls of ``examples`` rows on each side of every cut.

    Examples
    --------
    >>> import tempfile, polars_curate as pc
    >>> from polars_curate.datasets import synthetic_pool
    >>> from polars_curate.report import write_report
    >>> tmp = tempfile.mkdtemp()
    >>> paths = synthetic_pool(tmp, n=600, d=16, shards=2)
    >>> _ = pc.score_pool(paths["pool"], f"{tmp}/s", scores=["ncl", "clip"], batch_size=128,
    ...                   progress=False)
    >>> _ = pc.select(f"{tmp}/s", f"{tmp}/sub.npy", ["ncl:0.5", "clip:0.3"], log=lambda _: None)
    >>> page = write_report(f"{tmp}/s", f"{tmp}/r.html", subset=f"{tmp}/sub.npy",
    ...                     pool=paths["pool"]).read_text()
    >>> "ncl:0.5" in page and "Captions around the cuts" in page
    True
    """
    import plotly.graph_objects as go
    from plotly.subplots import make_subplots

    scores_dir, out = Path(scores_dir), Path(out)
    record = read_record(scores_dir)
    files = check_complete(scores_dir)
    scores = [c for c in SCORES.values() if c in record["scores"]]
    scores += [c for c in record["scores"] if c not in scores]

    log: dict[str, Any] | None = None
    log_path: Path | None = None
    if subset is not None:
        subset = Path(subset)
        log_path = subset.with_name(subset.stem + ".select.json")
        if log_path.is_file():
            try:
                log = json.loads(log_path.read_text())
            except ValueError as e:
                raise ValueError(f"{log_path}: not a select log ({e})") from None
    steps: list[dict[str, Any]] = list(log["steps"]) if log else []
    notes: list[str] = []  # what the report could not show, said on the page
    if log and log.get("scores_dir"):
        if Path(log["scores_dir"]).resolve() != scores_dir.resolve():
            notes.append(f"the select log was written for {log['scores_dir']}, not this directory")
    if base is None and log and log.get("base"):
        if Path(log["base"]).is_file():
            base = log["base"]
        else:
            notes.append(f"the select log's base {log['base']} is not there: no base shown")

    page = _Page()
    tmp = Path(tempfile.mkdtemp(prefix=".report-", dir=out.parent if out.parent.is_dir() else None))
    try:
        lf = pl.scan_parquet(files, missing_columns="insert").select(*KEYS, *scores)

        def staged(lf: pl.LazyFrame, name: str) -> pl.LazyFrame:
            # One join at a time, written out: only one hash table is ever held.
            lf.sink_parquet(tmp / name, row_group_size=SINK_ROW_GROUP)
            return pl.scan_parquet(tmp / name)

        sizes: dict[str, int] = {}  # uids in the base and the subset files
        for name, path in (("base", base), ("subset", subset)):
            if path is None:
                continue
            keys = read_distinct_keys(path)
            sizes[name] = keys.height
            flag = f"in_{name}"
            lf = lf.join(keys.lazy().with_columns(pl.lit(True).alias(flag)), on=KEYS, how="left")
            lf = staged(lf.with_columns(pl.col(flag).fill_null(False)), f"{name}.parquet")
            del keys
        ext_cols: dict[int, str] = {}
        shown: list[int] = []  # the steps drawn as sets
        for i, s in enumerate(steps):
            if s.get("file"):
                col = f"__rule{i}"
                rule = Rule(s["rule"], s["score"], Path(s["file"]))
                try:
                    lf = lf.join(
                        _external(rule).rename({rule.column: col}),
                        on=KEYS,
                        how="left",
                        validate="m:1",
                    )
                except Exception as e:  # the external file moved or changed since `select`
                    notes.append(f"rule {s['rule']!r}: {e}; its rows are not shown")
                    continue
                ext_cols[i] = col
            elif s.get("score") not in scores:
                notes.append(f"rule {s['rule']!r}: this directory has no score {s['score']!r}")
                continue
            shown.append(i)
        member: list[tuple[str, pl.Expr]] = [(n, pl.col(f"in_{n}")) for n in sizes]
        for i in shown:
            s = steps[i]
            pred = step_predicate(s, ext_cols.get(i, s.get("score")))
            member.append((f"rule {i + 1}: {html.escape(s['rule'])}", pred.fill_null(False)))
        lf = lf.with_columns(*[e.alias(f"__set{j}") for j, (_, e) in enumerate(member)])
        if ext_cols:
            lf = staged(lf, "rows.parquet")  # the later passes read the external scores joined
        split = subset is not None

        stats = _stats(lf, scores)
        total = stats[scores[0]]["n"] + stats[scores[0]]["missing"]
        hists = {c: _histogram(lf, c, stats[c], split) for c in scores if stats[c]["n"]}

        # ---- summary
        page.add(f"<h1>polars-curate report: {html.escape(scores_dir.name)}</h1>")
        items = [
            f"<li><b>{total:,}</b> scored rows in {len(files):,} unit files of "
            f"<code>{html.escape(str(scores_dir))}</code>; scores: "
            f"{html.escape(', '.join(_label(c) for c in scores))}</li>"
        ]
        if subset is not None:
            kept_rows = int(lf.select(pl.col("in_subset").sum()).collect(engine="streaming").item())
            items.append(
                f"<li>subset <code>{html.escape(str(subset))}</code>: {sizes['subset']:,} uids, "
                f"<span class='kept'>{kept_rows:,} of them scored here</span>"
                + (
                    f"; select log <code>{html.escape(log_path.name)}</code>"
                    if log
                    else "; no select log beside it, so no cuts are drawn"
                )
                + "</li>"
            )
        if base is not None:
            items.append(
                f"<li>base <code>{html.escape(str(base))}</code>: {sizes['base']:,} uids"
                + (
                    f", {log['base_without_scores']:,} of them without scores"
                    if log and log.get("base_without_scores") is not None
                    else ""
                )
                + "</li>"
            )
        items.append(
            f"<li>made by polars-curate {html.escape(pc.__version__)}; histograms and "
            f"densities count all {total:,} rows ({BINS} and {GRID} x {GRID} bins)"
            + (f"; captions: {examples} rows on each side of every cut" if pool else "")
            + "</li>"
        )
        items += [f"<li class='note'>Not shown: {html.escape(n)}</li>" for n in notes]
        page.add(f"<ul>{''.join(items)}</ul>")

        # ---- distributions
        page.add("<h2 id='distributions'>Distributions</h2>")
        rows = []
        for c in scores:
            st = stats[c]
            pct = _percentiles(hists[c], (0.01, 0.1, 0.5, 0.9, 0.99)) if c in hists else [None] * 5
            rows.append(
                [
                    html.escape(_label(c)),
                    f"{st['n']:,}",
                    f"{st['missing']:,}",
                    _num(st["min"]),
                    *[_num(v) for v in pct[:3]],
                    _num(st["mean"]),
                    *[_num(v) for v in pct[3:]],
                    _num(st["max"]),
                ]
            )
        page.add(
            _table(
                [
                    "score",
                    "rows",
                    "null/NaN/inf",
                    "min",
                    "p1",
                    "p10",
                    "median",
                    "mean",
                    "p90",
                    "p99",
                    "max",
                ],
                rows,
            )
            + "<p class='note'>Percentiles are read off the histogram (to within one bin).</p>"
        )
        for c in scores:
            if c not in hists:
                page.add(f"<p>{html.escape(_label(c))}: no finite values.</p>")
                continue
            h = hists[c]
            mids = (h["edges"][:-1] + h["edges"][1:]) / 2
            width = float(h["edges"][1] - h["edges"][0])
            fig = go.Figure()
            if split:
                fig.add_bar(x=mids, y=h["kept"], width=width, name="kept", marker_color=KEPT)
                fig.add_bar(
                    x=mids, y=h["dropped"], width=width, name="dropped", marker_color=DROPPED
                )
            else:
                fig.add_bar(x=mids, y=h["kept"], width=width, name="rows", marker_color=KEPT)
            for j, s in enumerate(_steps_for(steps, c)):
                fig.add_vline(
                    x=float(s["value"]),
                    line={"color": "#d62828", "dash": "dash"},
                    annotation={
                        "text": f"{html.escape(s['rule'])}: {_num(s['value'])}",
                        "yshift": -16 * j,
                        "font": {"color": "#d62828"},
                    },
                )
            fig.update_layout(
                barmode="stack",
                bargap=0,
                title=f"{_label(c)}: {stats[c]['n']:,} rows",
                xaxis_title=_label(c),
                yaxis_title="rows",
                height=340,
            )
            page.figure(fig, f"hist-{c}")

        # ---- rules
        if steps:
            page.add("<h2 id='rules'>Rules</h2>")
            start_label = "start: pool" if not log or not log.get("base") else "start: base"
            fig = go.Figure(
                go.Funnel(
                    y=[
                        start_label,
                        *[f"{i + 1}. {html.escape(s['rule'])}" for i, s in enumerate(steps)],
                    ],
                    x=[log["start"], *[s["kept"] for s in steps]] if log else [],
                    textinfo="value+percent initial",
                    marker={"color": KEPT},
                )
            )
            fig.update_layout(
                title="Rows left after each rule",
                height=120 + 60 * len(steps),
                yaxis_title="rule",
            )
            page.figure(fig, "rules")
            rows = []
            for i, s in enumerate(steps):
                cut = repr(float(s["value"]) + 0.0) if "value" in s else "-"
                what = (
                    f"top {s['k']:,} of the start set ({s['fraction']})"
                    if s["kind"] == "fraction"
                    else f"{s['score']} {s['op']} {_num(s['value'])}"
                )
                rows.append(
                    [
                        str(i + 1),
                        html.escape(s["rule"]),
                        html.escape(what),
                        cut,
                        f"{s['before']:,}",
                        f"{s['kept']:,}",
                    ]
                )
            page.add(_table(["#", "rule", "keeps", "cut", "rows before", "rows after"], rows))

        # ---- overlap
        if len(member) >= 2:
            page.add("<h2 id='overlap'>Overlap</h2>")
            sets = [f"__set{j}" for j in range(len(member))]
            combos = (
                lf.group_by(sets)
                .agg(pl.len().alias("rows"))
                .collect(engine="streaming")
                .filter(pl.any_horizontal(sets))
                .sort("rows", descending=True)
            )
            shown = combos.head(MAX_COMBINATIONS)
            names = [m[0] for m in member]
            sizes = lf.select([pl.col(s).sum() for s in sets]).collect(engine="streaming").row(0)
            fig = make_subplots(
                rows=2,
                cols=1,
                shared_xaxes=True,
                row_heights=[0.62, 0.38],
                vertical_spacing=0.03,
            )
            xs = list(range(shown.height))
            fig.add_bar(
                x=xs,
                y=shown["rows"].to_list(),
                marker_color=KEPT,
                name="rows",
                text=[f"{v:,}" for v in shown["rows"]],
                textposition="outside",
                row=1,
                col=1,
            )
            for j, s in enumerate(sets):
                on = shown[s].to_list()
                fig.add_scatter(
                    x=xs,
                    y=[j] * len(xs),
                    mode="markers",
                    showlegend=False,
                    marker={"size": 11, "color": ["#222" if v else "#e3e3e3" for v in on]},
                    hoverinfo="skip",
                    row=2,
                    col=1,
                )
            fig.update_yaxes(title_text="rows", row=1, col=1)
            fig.update_yaxes(
                tickvals=list(range(len(sets))),
                ticktext=[f"{n} ({sz:,})" for n, sz in zip(names, sizes)],  # escaped above
                autorange="reversed",
                row=2,
                col=1,
            )
            fig.update_xaxes(showticklabels=False, row=2, col=1)
            fig.update_layout(
                title="Rows in exactly these sets (UpSet): filled dots mark the sets",
                showlegend=False,
                height=260 + 28 * len(sets),
            )
            page.figure(fig, "overlap")
            page.add(
                "<p class='note'>Each rule is applied on its own to every scored row (its "
                "logged cut), so the bars show how the rules agree; the subset is their "
                f"sequence. {combos.height - shown.height:,} smaller combinations not drawn."
                "</p>"
            )

        # ---- density
        if {"clip", "ncl"} <= set(hists):
            page.add("<h2 id='density'>CLIPScore vs negCLIPLoss</h2>")
            bx = _bin("clip", stats["clip"]["min"], stats["clip"]["max"], GRID)
            by = _bin("ncl", stats["ncl"]["min"], stats["ncl"]["max"], GRID)
            grid = (
                lf.filter(_finite("clip") & _finite("ncl"))
                .group_by(bx, by, *(["in_subset"] if split else []))
                .agg(pl.len().alias("rows"))
                .collect(engine="streaming")
            )
            ex = np.linspace(stats["clip"]["min"], stats["clip"]["max"], GRID + 1)
            ey = np.linspace(stats["ncl"]["min"], stats["ncl"]["max"], GRID + 1)
            panels = [("kept", True), ("dropped", False)] if split else [("all rows", None)]
            fig = make_subplots(
                rows=1,
                cols=len(panels),
                shared_yaxes=True,
                subplot_titles=[p[0] for p in panels],
                horizontal_spacing=0.04,
            )
            for k, (name, flag) in enumerate(panels):
                z = np.zeros((GRID, GRID))
                part = grid if flag is None else grid.filter(pl.col("in_subset") == flag)
                for r in part.iter_rows(named=True):
                    z[r["ncl|bin"], r["clip|bin"]] += r["rows"]
                zl = np.where(z > 0, np.log10(np.maximum(z, 1)), np.nan)
                fig.add_heatmap(
                    x=(ex[:-1] + ex[1:]) / 2,
                    y=(ey[:-1] + ey[1:]) / 2,
                    z=zl,
                    colorscale="Greens" if flag is not False else "Greys",
                    colorbar={"title": f"log10 rows<br>{name}", "x": 1.02 + 0.1 * k},
                    customdata=z,
                    hovertemplate="clip %{x:.3g}<br>ncl %{y:.3g}<br>"
                    "%{customdata:,} rows<extra>" + name + "</extra>",
                    row=1,
                    col=k + 1,
                )
                for score, draw in (("clip", fig.add_vline), ("ncl", fig.add_hline)):
                    for s in _steps_for(steps, score):
                        at = {"x" if score == "clip" else "y": float(s["value"])}
                        draw(**at, line={"color": "#d62828", "dash": "dash"}, row=1, col=k + 1)
                fig.update_xaxes(title_text=_label("clip"), row=1, col=k + 1)
            fig.update_yaxes(title_text=_label("ncl"), row=1, col=1)
            fig.update_layout(
                title="Density of every scored row (dashed: the rules' cuts)", height=440
            )
            page.figure(fig, "density")

        # ---- captions
        if pool is not None:
            page.add("<h2 id='captions'>Captions around the cuts</h2>")
            page.add(_captions(lf, pool, scores, steps, hists, split, examples))

        # ---- parameters
        page.add("<h2 id='parameters'>Parameters</h2>")
        rows = [
            [
                html.escape(_label(c)),
                f"<code>{html.escape(json.dumps(r.get('params', {}), sort_keys=True))}</code>",
                html.escape(str(r.get("created_by", ""))),
            ]
            for c, r in record["scores"].items()
        ]
        page.add(_table(["score", "parameters", "made by"], rows))
        runs = record["runs"]
        page.add(
            f"<p>{len(runs)} run(s) recorded, unit size {record.get('unit_rows') or 'one shard'}"
            f" rows; {sum(len(r['units']) for r in runs):,} unit entries.</p>"
        )
        if log:
            page.add(
                "<p>select: start "
                f"{log['start']:,} rows, kept {log['kept']:,}; made by "
                f"{html.escape(str(log.get('created_by')))}.</p>"
            )
        text = page.html(f"polars-curate report: {scores_dir.name}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    atomic_write(out, lambda f: f.write(text.encode()))
    return out


def _captions(
    lf: pl.LazyFrame,
    pool: str | os.PathLike[str],
    scores: list[str],
    steps: list[dict[str, Any]],
    hists: dict[str, dict[str, Any]],
    split: bool,
    k: int,
) -> str:
    """Tables of rows on each side of every cut (or of the median, for a score without a rule),
    and the extremes, with the pool's text and url."""
    from polars_curate.pool import scan_pool

    picks: list[pl.DataFrame] = []
    groups: list[tuple[str, str, str]] = []  # (score, heading, group id)
    cols = [*KEYS, *scores, *(["in_subset"] if split else [])]
    order = [pl.col("uid_hi"), pl.col("uid_lo")]
    for c in scores:
        if c not in hists:
            continue
        x = pl.col(c).cast(pl.Float64)
        fin = lf.filter(_finite(c))
        cuts = [
            (f"at {s['rule']} (cut {_num(s['value'])})", float(s["value"]))
            for s in _steps_for(steps, c)
        ]
        if not cuts:
            cuts = [
                (
                    f"at the median (≈{_num(_percentiles(hists[c], (0.5,))[0])})",
                    _percentiles(hists[c], (0.5,))[0],
                )
            ]
        for j, (head, v) in enumerate(cuts):
            gid = f"{c}|{j}"
            above = fin.filter(x >= v).bottom_k(k, by=[x, *order]).select(cols)
            below = fin.filter(x < v).top_k(k, by=[x, *order]).select(cols)
            got = pl.collect_all([above, below], engine="streaming")
            picks += [
                d.with_columns(group=pl.lit(gid), side=pl.lit(side))
                for d, side in zip(got, ["above", "below"])
            ]
            groups.append((c, head, gid))
        gid = f"{c}|ends"
        low = fin.bottom_k(k, by=[x, *order]).select(cols)
        high = fin.top_k(k, by=[x, *order]).select(cols)
        for d, side in zip(pl.collect_all([high, low], engine="streaming"), ["highest", "lowest"]):
            picks.append(d.with_columns(group=pl.lit(gid), side=pl.lit(side)))
        groups.append((c, "the highest and the lowest", gid))
    if not picks:
        return "<p>No scores to show captions for.</p>"
    chosen = pl.concat(picks, how="diagonal_relaxed")
    chosen = chosen.with_columns(
        uids_from_keys(chosen["uid_hi"].to_numpy(), chosen["uid_lo"].to_numpy())
    )
    wanted = chosen.select("uid").unique()
    src = scan_pool(pool, embeddings=[])
    names = src.collect_schema().names()
    text_cols = [c for c in ("text", "url") if c in names]
    if "uid" not in names:
        raise ValueError(f"pool {pool}: no 'uid' column to match captions on")
    texts = (
        src.select("uid", *text_cols)
        .join(wanted.lazy(), on="uid", how="semi")
        .collect(engine="streaming")
        .unique("uid")
    )
    chosen = chosen.join(texts, on="uid", how="left")
    out = []
    for c, head, gid in groups:
        g = chosen.filter(pl.col("group") == gid)
        out.append(f"<h3>{html.escape(_label(c))}: {html.escape(head)}</h3>")
        rows = []
        for side in ("above", "below", "highest", "lowest"):
            part = g.filter(pl.col("side") == side)
            if part.height == 0:
                continue
            part = part.sort(c, descending=True)
            for r in part.iter_rows(named=True):
                kept = ""
                if split:
                    kept = "<span class='kept'>kept</span>" if r.get("in_subset") else "dropped"
                url = r.get("url")
                link = ""
                if isinstance(url, str) and url.lower().startswith(("http://", "https://")):
                    link = (
                        f"<a href='{html.escape(url, quote=True)}' rel='noopener noreferrer'>"
                        f"{html.escape(url[:60])}</a>"
                    )
                elif isinstance(url, str):
                    link = html.escape(url[:60])
                caption = r.get("text")
                caption = "" if caption is None else str(caption)
                rows.append(
                    [
                        side,
                        _num(r[c]),
                        *([kept] if split else []),
                        html.escape(caption[:240]),
                        link,
                    ]
                )
        out.append(
            _table(["side", c, *(["subset"] if split else []), "caption", "url"], rows, "caption")
        )
    return "".join(out)
