"""The page: HTML helpers and the one-file document Plotly's figures are drawn into."""

from __future__ import annotations

import html
import math
from typing import Any

from polars_curate.scores import label_of

__all__ = ["DROPPED", "KEPT", "Page", "label", "num", "table"]

KEPT, DROPPED = "#2a9d8f", "#b0b7bf"


def num(v: float | None, digits: int = 4) -> str:
    """A score for people: ``digits`` significant digits, never ``-0``."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "-"
    return f"{float(v) + 0.0:.{digits}g}"  # + 0.0 turns -0.0 into 0.0


def label(col: str) -> str:
    """A score column as the report names it (not escaped)."""
    return label_of(col)


def table(header: list[str], rows: list[list[str]], cls: str = "") -> str:
    """An HTML table; ``header`` is escaped here, the cells must be escaped by the caller."""
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in r) + "</tr>" for r in rows)
    return f'<table class="{cls}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


_STYLE = (
    "body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;"
    "color:#222}h2{margin-top:2em;border-bottom:1px solid #ddd}table{border-collapse:"
    "collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:3px 8px;font-size:13px;"
    "vertical-align:top;text-align:left}.caption td{max-width:560px}"
    ".note{color:#555;font-size:13px}.kept{color:" + KEPT + ";font-weight:600}"
)
# Errors in the page (a figure that fails to draw, a rejected promise) and how many figures
# Plotly drew (divs holding its SVG) are recorded where a test can see them.
_GUARD = (
    "<script>(function(){var seen=[],root=document.documentElement;"
    "function fail(m){seen.push(String(m));"
    "root.setAttribute('data-errors',seen.join(' | '));}"
    "window.addEventListener('error',function(e){fail(e.message);});"
    "window.addEventListener('unhandledrejection',function(e){fail(e.reason);});"
    "window.addEventListener('load',function(){var n=0;document.querySelectorAll("
    "'.plotly-graph-div').forEach(function(d){if(d.querySelector('.main-svg'))n++;});"
    "root.setAttribute('data-figures-drawn',String(n));});})();</script>"
)


class Page:
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

        return (
            "<!doctype html><html><head><meta charset='utf-8'>"
            f"<title>{html.escape(title)}</title><style>{_STYLE}</style>{_GUARD}"
            f"<script>{get_plotlyjs()}</script></head><body>"
            f"{''.join(self.parts)}</body></html>"
        )
