"""A one-file HTML report of a scored pool: histograms, CLIPScore vs negCLIPLoss, overlap with a
base subset, and the lowest- and highest-scoring captions. Plain HTML + inline SVG: no plotting
dependency, opens in any browser."""

from __future__ import annotations

import html
import os
from pathlib import Path

import numpy as np
import polars as pl

from polars_curate.io import atomic_write, read_datacomp, read_uids
from polars_curate.pipeline import score_columns

__all__ = ["write_report"]

W, H, PAD = 420, 220, 34


def _histogram(values: np.ndarray, title: str, bins: int = 50) -> str:
    values = values[np.isfinite(values)]
    if values.size == 0:
        return f"<p>{html.escape(title)}: no values</p>"
    counts, edges = np.histogram(values, bins=bins)
    top = max(int(counts.max()), 1)
    bw = (W - 2 * PAD) / bins
    bars = "".join(
        f'<rect x="{PAD + i * bw:.1f}" y="{H - PAD - (H - 2 * PAD) * c / top:.1f}" '
        f'width="{max(bw - 1, 1):.1f}" height="{(H - 2 * PAD) * c / top:.1f}" fill="#4c72b0"/>'
        for i, c in enumerate(counts)
    )
    return _frame(title, bars, f"{edges[0]:.3g}", f"{edges[-1]:.3g}", f"max {top:,}")


def _frame(title: str, body: str, xmin: str, xmax: str, ylabel: str) -> str:
    return (
        f'<figure><svg width="{W}" height="{H}" xmlns="http://www.w3.org/2000/svg">'
        f'<rect width="{W}" height="{H}" fill="white" stroke="#ccc"/>{body}'
        f'<text x="{PAD}" y="{H - 10}" font-size="11">{xmin}</text>'
        f'<text x="{W - PAD}" y="{H - 10}" font-size="11" text-anchor="end">{xmax}</text>'
        f'<text x="{PAD}" y="{PAD - 10}" font-size="11">{html.escape(ylabel)}</text></svg>'
        f"<figcaption>{html.escape(title)}</figcaption></figure>"
    )


def _scatter(x: np.ndarray, y: np.ndarray, title: str, n: int = 4000) -> str:
    ok = np.isfinite(x) & np.isfinite(y)
    x, y = x[ok], y[ok]
    if x.size == 0:
        return ""
    pick = np.random.default_rng(0).permutation(x.size)[:n]
    x, y = x[pick], y[pick]
    sx = lambda v: PAD + (W - 2 * PAD) * (v - x.min()) / max(np.ptp(x), 1e-12)  # noqa: E731
    sy = lambda v: H - PAD - (H - 2 * PAD) * (v - y.min()) / max(np.ptp(y), 1e-12)  # noqa: E731
    dots = "".join(
        f'<circle cx="{sx(a):.1f}" cy="{sy(b):.1f}" r="1.2" fill="#c44e52" fill-opacity="0.4"/>'
        for a, b in zip(x, y)
    )
    label = f"y: {y.min():.3g} .. {y.max():.3g}"
    return _frame(title, dots, f"{x.min():.3g}", f"{x.max():.3g}", label)


def _table(df: pl.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(c)}</th>" for c in df.columns)
    rows = "".join(
        "<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>"
        for r in df.iter_rows()
    )
    return f"<table><tr>{head}</tr>{rows}</table>"


def write_report(
    scores_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    base: str | os.PathLike[str] | None = None,
    subset: str | os.PathLike[str] | None = None,
    pool: str | os.PathLike[str] | None = None,
    examples: int = 10,
) -> Path:
    """Write the report to ``out`` (atomically). ``pool`` adds captions; ``base`` and ``subset``
    add their overlap."""
    df = score_columns(scores_dir)
    scores = [c for c in df.columns if c not in ("uid", "uid_hi", "uid_lo")]
    parts = [
        "<h1>polars-curate report</h1>",
        f"<p>{df.height:,} scored rows from {html.escape(str(scores_dir))}; scores: "
        f"{html.escape(', '.join(scores))}.</p>",
        "<h2>Score distributions</h2>",
    ]
    stats = df.select(
        [
            pl.struct(
                score=pl.lit(c),
                null=pl.col(c).null_count(),
                mean=pl.col(c).mean(),
                p10=pl.col(c).quantile(0.1),
                median=pl.col(c).median(),
                p90=pl.col(c).quantile(0.9),
            ).alias(c)
            for c in scores
        ]
    )
    parts.append(
        _table(
            pl.DataFrame([stats[c][0] for c in scores]).with_columns(pl.col(pl.Float64).round(4))
        )
    )
    parts += [_histogram(df[c].cast(pl.Float64).to_numpy(), c) for c in scores]
    if {"clip", "ncl"} <= set(scores):
        parts.append("<h2>CLIPScore vs negCLIPLoss</h2>")
        parts.append(
            _scatter(df["clip"].to_numpy(), df["ncl"].to_numpy(), "x: CLIPScore, y: negCLIPLoss")
        )
    if base is not None or subset is not None:
        parts.append("<h2>Overlap</h2><ul>")
        pool_uids = df["uid"]
        base_u = read_uids(base)["uid"] if base is not None else None
        sub_u = read_uids(subset)["uid"] if subset is not None else None
        if base_u is not None:
            inside = pool_uids.is_in(base_u.implode()).sum()
            parts.append(
                f"<li>base {html.escape(Path(base).name)}: {base_u.len():,} uids, "
                f"{inside:,} of them in this pool</li>"
            )
        if sub_u is not None:
            parts.append(f"<li>subset {html.escape(Path(subset).name)}: {sub_u.len():,} uids</li>")
        if base_u is not None and sub_u is not None:
            both = sub_u.is_in(base_u.implode()).sum()
            union = pl.concat([base_u, sub_u]).n_unique()
            parts.append(
                f"<li>subset ∩ base: {both:,} ({both / max(sub_u.len(), 1):.1%} of the "
                f"subset); Jaccard {both / max(union, 1):.3f}</li>"
            )
        parts.append("</ul>")
    if pool is not None:
        text = read_datacomp(pool, keys=[], shard_column=None).select("uid", "text")
        joined = df.join(text, on="uid", how="left")
        for c in scores:
            ranked = (
                joined.filter(pl.col(c).is_not_null())
                .sort(c)
                .with_columns(pl.col(c).cast(pl.Float64).round(4))
            )
            parts.append(f"<h2>Captions by {html.escape(c)}</h2><h3>lowest</h3>")
            parts.append(_table(ranked.head(examples).select(c, "text")))
            parts.append("<h3>highest</h3>")
            parts.append(_table(ranked.tail(examples).reverse().select(c, "text")))
    style = (
        "body{font-family:sans-serif;max-width:960px;margin:2em auto}"
        "figure{display:inline-block;margin:.5em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ddd;padding:2px 8px;font-size:13px}"
    )
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>polars-curate report</title>"
        f"<style>{style}</style></head><body>{''.join(parts)}</body></html>"
    )
    out = Path(out)
    atomic_write(out, lambda f: f.write(page.encode()))
    return out
