"""The report's sections, one function each: ``section(page, data)`` adds its HTML and
figures to the page from the plain data of :mod:`polars_curate.report.data`.

Everything from the pool or the rules (captions, urls, rule text, paths) is escaped; only
http(s) urls become links, and what is put in the page is capped in length.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable

import numpy as np
import plotly.graph_objects as go
import polars as pl
from plotly.subplots import make_subplots

from polars_curate._errors import PoolError
from polars_curate._internal import __version__
from polars_curate.report.data import (
    BINS,
    GRID,
    MAX_COMBINATIONS,
    CaptionGroup,
    ReportData,
    caption_rows,
    cluster_sizes,
    density,
    overlap,
    percentiles,
    removal_curve,
    steps_for,
)
from polars_curate.report.page import DROPPED, KEPT, Page, label, num, table
from polars_curate.scores import SCORES, score_of

__all__ = ["SECTIONS"]


def summary(page: Page, d: ReportData) -> None:
    page.add(f"<h1>polars-curate report: {html.escape(d.scores_dir.name)}</h1>")
    items = [
        f"<li><b>{d.total:,}</b> scored rows in {len(d.files):,} unit files of "
        f"<code>{html.escape(str(d.scores_dir))}</code>; scores: "
        f"{html.escape(', '.join(label(c) for c in d.columns))}</li>"
    ]
    if d.subset is not None:
        kept_rows = int(d.rows.select(pl.col("in_subset").sum()).collect(engine="streaming").item())
        log = (
            f"; select log <code>{html.escape(d.subset.stem + '.select.json')}</code>"
            if d.log
            else "; no select log beside it, so no cuts are drawn"
        )
        items.append(
            f"<li>subset <code>{html.escape(str(d.subset))}</code>: {d.sizes['subset']:,} uids, "
            f"<span class='kept'>{kept_rows:,} scored rows hold them</span>{log}</li>"
        )
    if d.base is not None:
        without = d.log.base_without_scores if d.log else None
        items.append(
            f"<li>base <code>{html.escape(str(d.base))}</code>: {d.sizes['base']:,} uids"
            + (f", {without:,} of them without scores" if without is not None else "")
            + "</li>"
        )
    items.append(
        f"<li>made by polars-curate {html.escape(__version__)}; histograms and "
        f"densities count all {d.total:,} rows ({BINS} and {GRID} x {GRID} bins)"
        + (f"; captions: {d.examples} rows on each side of every cut" if d.pool else "")
        + "</li>"
    )
    items += [f"<li class='note'>Not shown: {html.escape(n)}</li>" for n in d.notes]
    page.add(f"<ul>{''.join(items)}</ul>")


def _statistics_table(d: ReportData) -> str:
    rows = []
    for c in d.columns:
        st = d.stats[c]
        pct = percentiles(d.hists[c], (0.01, 0.1, 0.5, 0.9, 0.99)) if c in d.hists else [None] * 5
        rows.append(
            [
                html.escape(label(c)),
                f"{st['n']:,}",
                f"{st['missing']:,}",
                num(st["min"]),
                *[num(v) for v in pct[:3]],
                num(st["mean"]),
                *[num(v) for v in pct[3:]],
                num(st["max"]),
            ]
        )
    header = ["score", "rows", "null/NaN/inf", "min", "p1", "p10", "median", "mean"]
    return (
        table([*header, "p90", "p99", "max"], rows)
        + "<p class='note'>Percentiles are read off the histogram (to within one bin).</p>"
    )


def _histogram_figure(d: ReportData, c: str) -> go.Figure:
    h = d.hists[c]
    mids = (h["edges"][:-1] + h["edges"][1:]) / 2
    width = float(h["edges"][1] - h["edges"][0])
    fig = go.Figure()
    if d.split:
        fig.add_bar(x=mids, y=h["kept"], width=width, name="kept", marker_color=KEPT)
        fig.add_bar(x=mids, y=h["dropped"], width=width, name="dropped", marker_color=DROPPED)
    else:
        fig.add_bar(x=mids, y=h["kept"], width=width, name="rows", marker_color=KEPT)
    for j, s in enumerate(steps_for(d.steps, c)):
        fig.add_vline(
            x=float(s.value),  # type: ignore[arg-type]
            line={"color": "#d62828", "dash": "dash"},
            annotation={
                "text": f"{html.escape(s.rule)}: {num(s.value)}",
                "yshift": -16 * j,
                "font": {"color": "#d62828"},
            },
        )
    fig.update_layout(
        barmode="stack",
        bargap=0,
        title=f"{label(c)}: {d.stats[c]['n']:,} rows",
        xaxis_title=label(c),
        yaxis_title="rows",
        height=340,
    )
    return fig


def distributions(page: Page, d: ReportData) -> None:
    page.add("<h2 id='distributions'>Distributions</h2>")
    page.add(_statistics_table(d))
    for c in d.columns:
        if c not in d.hists:
            page.add(f"<p>{html.escape(label(c))}: no finite values.</p>")
            continue
        page.figure(_histogram_figure(d, c), f"hist-{c}")


def rules(page: Page, d: ReportData) -> None:
    if not d.steps:
        return
    page.add("<h2 id='rules'>Rules</h2>")
    start_label = "start: pool" if not d.log or not d.log.base else "start: base"
    fig = go.Figure(
        go.Funnel(
            y=[start_label, *[f"{i + 1}. {html.escape(s.rule)}" for i, s in enumerate(d.steps)]],
            x=[d.log.start, *[s.kept for s in d.steps]] if d.log else [],
            textinfo="value+percent initial",
            marker={"color": KEPT},
        )
    )
    fig.update_layout(
        title="Rows left after each rule", height=120 + 60 * len(d.steps), yaxis_title="rule"
    )
    page.figure(fig, "rules")
    rows = []
    for i, s in enumerate(d.steps):
        cut = repr(float(s.value) + 0.0) if s.value is not None else "-"
        what = (
            f"top {s.k:,} of the start set ({s.fraction})"
            if s.kind == "fraction"
            else f"{s.score} {s.op} {num(s.value)}"
        )
        cells = [html.escape(s.rule), html.escape(what), cut, f"{s.before:,}", f"{s.kept:,}"]
        rows.append([str(i + 1), *cells])
    page.add(table(["#", "rule", "keeps", "cut", "rows before", "rows after"], rows))


def _overlap_figure(shown: pl.DataFrame, names: list[str], sizes: tuple[int, ...]) -> go.Figure:
    fig = make_subplots(
        rows=2, cols=1, shared_xaxes=True, row_heights=[0.62, 0.38], vertical_spacing=0.03
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
    for j in range(len(names)):
        on = shown[f"__set{j}"].to_list()
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
        tickvals=list(range(len(names))),
        ticktext=[f"{n} ({sz:,})" for n, sz in zip(names, sizes)],  # names are escaped
        autorange="reversed",
        row=2,
        col=1,
    )
    fig.update_xaxes(showticklabels=False, row=2, col=1)
    fig.update_layout(
        title="Rows in exactly these sets (UpSet): filled dots mark the sets",
        showlegend=False,
        height=260 + 28 * len(names),
    )
    return fig


def overlap_section(page: Page, d: ReportData) -> None:
    if len(d.members) < 2:
        return
    page.add("<h2 id='overlap'>Overlap</h2>")
    combos, sizes = overlap(d.rows, len(d.members))
    shown = combos.head(MAX_COMBINATIONS)
    page.figure(_overlap_figure(shown, d.members, sizes), "overlap")
    page.add(
        "<p class='note'>Each rule is applied on its own to every scored row (its "
        "logged cut), so the bars show how the rules agree; the subset is their "
        f"sequence. {combos.height - shown.height:,} smaller combinations not drawn."
        "</p>"
    )


def _density_pair(d: ReportData) -> tuple[str, str] | None:
    """The first score of the registry read against another, when both have values."""
    for s in SCORES.values():
        if s.read_against and {s.column, s.read_against} <= set(d.hists):
            return s.read_against, s.column
    return None


def density_section(page: Page, d: ReportData) -> None:
    pair = _density_pair(d)
    if pair is None:
        return
    x, y = pair
    names = [s.label if (s := score_of(c)) else c for c in pair]
    page.add(f"<h2 id='density'>{html.escape(names[0])} vs {html.escape(names[1])}</h2>")
    cx, cy, panels = density(d, x, y)
    fig = make_subplots(
        rows=1,
        cols=len(panels),
        shared_yaxes=True,
        subplot_titles=[p[0] for p in panels],
        horizontal_spacing=0.04,
    )
    for k, (name, flag, z) in enumerate(panels):
        zl = np.where(z > 0, np.log10(np.maximum(z, 1)), np.nan)
        fig.add_heatmap(
            x=cx,
            y=cy,
            z=zl,
            colorscale="Greens" if flag is not False else "Greys",
            colorbar={"title": f"log10 rows<br>{name}", "x": 1.02 + 0.1 * k},
            customdata=z,
            hovertemplate=f"{x} %{{x:.3g}}<br>{y} %{{y:.3g}}<br>"
            "%{customdata:,} rows<extra>" + name + "</extra>",
            row=1,
            col=k + 1,
        )
        for score, draw in ((x, fig.add_vline), (y, fig.add_hline)):
            for s in steps_for(d.steps, score):
                at = {"x" if score == x else "y": float(s.value)}  # type: ignore[arg-type]
                draw(**at, line={"color": "#d62828", "dash": "dash"}, row=1, col=k + 1)
        fig.update_xaxes(title_text=label(x), row=1, col=k + 1)
    fig.update_yaxes(title_text=label(y), row=1, col=1)
    fig.update_layout(title="Density of every scored row (dashed: the rules' cuts)", height=440)
    page.figure(fig, "density")


def sampling_section(page: Page, d: ReportData) -> None:
    """The sample's draws: rows per count and the mean score per count (from the log)."""
    sample = d.log.sample if d.log else None
    if not sample:
        return
    page.add("<h2 id='sampling'>Sampling</h2>")
    rows = {int(c): n for c, n in sample["rows_per_count"].items()}
    means = {int(c): v for c, v in sample["mean_score_per_count"].items()}
    counts = sorted(rows)
    fig = make_subplots(specs=[[{"secondary_y": True}]])
    fig.add_bar(x=counts, y=[rows[c] for c in counts], name="rows", marker_color=KEPT)
    fig.add_scatter(
        x=[c for c in counts if c in means],
        y=[means[c] for c in counts if c in means],
        name=f"mean {html.escape(sample['by'])}",
        mode="lines+markers",
        marker_color="#d62828",
        secondary_y=True,
    )
    fig.update_xaxes(title_text="times drawn", dtick=1)
    fig.update_yaxes(title_text="rows", secondary_y=False)
    fig.update_yaxes(title_text=f"mean {html.escape(sample['by'])}", secondary_y=True)
    params = ", ".join(
        f"{k} {sample[k]}"
        for k in ("batch", "alpha", "limit", "temperature", "seed")
        if k in sample
    )
    fig.update_layout(
        title=f"{html.escape(sample['kind'])}: {sample['total']:,} draws from "
        f"{sample['candidates']:,} rows ({html.escape(params)})",
        height=360,
    )
    page.figure(fig, "sampling")


def clusters_section(page: Page, d: ReportData) -> None:
    """Cluster sizes, and SemDeDup's removal as a function of ``eps`` (to choose it from)."""
    if "cluster" not in d.scores:
        return
    page.add("<h2 id='clusters'>Clusters</h2>")
    sizes = cluster_sizes(d)
    if len(sizes):
        fig = go.Figure(go.Histogram(x=np.log10(sizes), nbinsx=40, marker_color=KEPT))
        fig.update_layout(
            title=f"{len(sizes):,} clusters with rows: median {int(np.median(sizes)):,} rows, "
            f"largest {int(sizes.max()):,}",
            xaxis_title="log10 rows in the cluster",
            yaxis_title="clusters",
            height=320,
        )
        page.figure(fig, "cluster-sizes")
    if "semdedup" not in d.columns:
        return
    eps, removed = removal_curve(d)
    fig = go.Figure(go.Scatter(x=eps, y=removed, mode="lines+markers", marker_color=KEPT))
    fig.update_layout(
        title="SemDeDup: rows removed as near-duplicates (score > 1 - eps)",
        xaxis_title="eps",
        yaxis_title="fraction of rows removed",
        height=340,
    )
    page.figure(fig, "semdedup-eps")


def _heading(g: CaptionGroup) -> str:
    if g.kind == "cut":
        return f"at {g.rule} (cut {num(g.value)})"
    if g.kind == "median":
        return f"at the median (≈{num(g.value)})"
    return "the highest and the lowest"


#: The longest url made a link (longer ones are shown cut, as text).
MAX_URL = 2048


def _link(url: object) -> str:
    """An http(s) url as a link (escaped, at most :data:`MAX_URL` characters), anything else
    as text; the text shown is cut at 60 characters."""
    if (
        isinstance(url, str)
        and len(url) <= MAX_URL
        and url.lower().startswith(("http://", "https://"))
    ):
        return (
            f"<a href='{html.escape(url, quote=True)}' rel='noopener noreferrer'>"
            f"{html.escape(url[:60])}</a>"
        )
    return html.escape(url[:60]) if isinstance(url, str) else ""


def _caption_table(chosen: pl.DataFrame, g: CaptionGroup, split: bool) -> str:
    rows = []
    part_of = chosen.filter(pl.col("group") == g.gid)
    for side in ("above", "below", "highest", "lowest"):
        part = part_of.filter(pl.col("side") == side).sort(g.score, descending=True)
        for r in part.iter_rows(named=True):
            kept = []
            if split:
                kept = ["<span class='kept'>kept</span>" if r.get("in_subset") else "dropped"]
            caption = "" if r.get("text") is None else str(r.get("text"))
            rows.append(
                [side, num(r[g.score]), *kept, html.escape(caption[:240]), _link(r.get("url"))]
            )
    header = ["side", g.score, *(["subset"] if split else []), "caption", "url"]
    return table(header, rows, "caption")


def captions(page: Page, d: ReportData) -> None:
    if d.pool is None:
        return
    page.add("<h2 id='captions'>Captions around the cuts</h2>")
    try:
        chosen, groups = caption_rows(d)
    except PoolError as e:
        page.add(f"<p class='note'>Captions not shown: {html.escape(str(e))}</p>")
        return
    if not groups:
        page.add("<p>No scores to show captions for.</p>")
        return
    for g in groups:
        page.add(f"<h3>{html.escape(label(g.score))}: {html.escape(_heading(g))}</h3>")
        page.add(_caption_table(chosen, g, d.split))


def parameters(page: Page, d: ReportData) -> None:
    page.add("<h2 id='parameters'>Parameters</h2>")
    rows = [
        [
            html.escape(label(c)),
            f"<code>{html.escape(json.dumps(r.get('params', {}), sort_keys=True))}</code>",
            html.escape(str(r.get("created_by", ""))),
        ]
        for c, r in d.record["scores"].items()
    ]
    page.add(table(["score", "parameters", "made by"], rows))
    runs = d.record["runs"]
    page.add(
        f"<p>{len(runs)} run(s) recorded, unit size {d.record.get('unit_rows') or 'one shard'}"
        f" rows; {sum(len(r['units']) for r in runs):,} unit entries.</p>"
    )
    if d.log:
        page.add(
            f"<p>select: start {d.log.start:,} rows, kept {d.log.kept:,}; made by "
            f"{html.escape(str(d.log.created_by))}.</p>"
        )


#: The sections, in page order.
SECTIONS: list[Callable[[Page, ReportData], None]] = [
    summary,
    distributions,
    rules,
    sampling_section,
    overlap_section,
    density_section,
    clusters_section,
    captions,
    parameters,
]
