"""Mixed scores: a linear combination of scores of the directory and of score files, each
used as it is or standardised over the start set.

``NAME=W*SCORE,W*z(SCORE),...``: ``SCORE`` is a directory score (``ncl``, ``normsim-inf``, a
column) or a score file ``PATH.parquet[#COLUMN]``; ``z(SCORE)`` is ``(x - mean) / std`` with
the mean and (population) standard deviation of the score's valid values over the start set.
A row whose component is null or NaN has no mixed score (never kept, never drawn). The means
and deviations used are recorded in the select log, so the report computes the same column.
In the lazy query a mix is plain Polars: ``pl.col("ncl") * 0.7 + pl.col("ns") * 0.3``.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from typing import Any

import polars as pl

from polars_curate.rules import ScoreRef, score_ref, valid
from polars_curate.scores import SCORES
from polars_curate.storage import location

__all__ = ["Mix", "Term", "mix_stats"]

_TERM = re.compile(r"^\s*(?P<w>[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?)\s*\*\s*(?P<s>.+?)\s*$")
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


@dataclass(frozen=True)
class Term:
    """``weight * score`` or ``weight * z(score)``."""

    ref: ScoreRef
    weight: float
    z: bool = False


@dataclass(frozen=True)
class Mix:
    """A named linear mix of scores (see the module docs)."""

    name: str
    terms: tuple[Term, ...]
    text: str = ""

    @classmethod
    def parse(cls, text: str, storage_options: dict[str, Any] | None = None) -> Mix:
        """``NAME=W*SCORE,W*z(SCORE),...``; ``ValueError`` naming the mix."""
        where = f"--mix {text!r}"
        name, sep, body = text.partition("=")
        name = name.strip()
        if not sep or not _NAME.match(name):
            raise ValueError(
                f"{where}: expected NAME=WEIGHT*SCORE,... (e.g. m=0.7*ncl,0.3*z(clip))"
            )
        if name in SCORES or any(name == s.column for s in SCORES.values()):
            raise ValueError(f"{where}: {name!r} is a score's name; name the mix otherwise")
        terms = []
        for part in body.split(","):
            m = _TERM.match(part)
            if not m:
                raise ValueError(f"{where}: term {part.strip()!r} is not WEIGHT*SCORE")
            weight, score = float(m["w"]), m["s"]
            z = score.startswith("z(") and score.endswith(")")
            ref = score_ref(score[2:-1] if z else score, where, storage_options)
            terms.append(Term(ref, weight, z))
        return cls(name, tuple(terms), text)

    def expression(self, stats: dict[str, tuple[float, float]]) -> pl.Expr:
        """The mix as a ``Float64`` column (null where a component is null or NaN), with the
        start set's ``(mean, std)`` of each standardised component."""
        total = pl.lit(0.0, dtype=pl.Float64)
        ok = pl.lit(True)
        for t in self.terms:
            x = pl.col(t.ref.column).cast(pl.Float64)
            if t.z:
                mean, std = stats[t.ref.column]
                x = (x - mean) / std
            total = total + t.weight * x
            ok = ok & valid(t.ref.column)
        return pl.when(ok).then(total).alias(self.name)

    @classmethod
    def from_json(
        cls, name: str, d: dict[str, Any], options: dict[str, Any] | None = None
    ) -> tuple[Mix, dict[str, tuple[float, float]]]:
        """A mix as a select log records it, with the means and deviations it used (score
        files in a bucket reached with ``options``)."""
        terms, stats = [], {}
        for t in d["terms"]:
            ref = ScoreRef(t["score"], location(t["file"], options) if t.get("file") else None)
            terms.append(Term(ref, float(t["weight"]), bool(t["z"])))
            if t["z"]:
                stats[ref.column] = (float(t["mean"]), float(t["std"]))
        return cls(name, tuple(terms), d.get("text", "")), stats

    def to_json(self, stats: dict[str, tuple[float, float]]) -> dict[str, Any]:
        terms = []
        for t in self.terms:
            term: dict[str, Any] = {"score": t.ref.score, "weight": t.weight, "z": t.z}
            if t.ref.source is not None:
                term["file"] = str(t.ref.source.resolve())
            if t.z:
                term["mean"], term["std"] = stats[t.ref.column]
            terms.append(term)
        return {"text": self.text, "terms": terms}


def mix_stats(lf: pl.LazyFrame, mixes: list[Mix]) -> dict[str, tuple[float, float]]:
    """``(mean, std)`` over ``lf`` of every standardised component (one streaming pass);
    ``ValueError`` naming a component without valid values or with no spread."""
    cols = sorted({t.ref.column for m in mixes for t in m.terms if t.z})
    if not cols:
        return {}
    exprs = []
    for c in cols:
        x = pl.when(valid(c)).then(pl.col(c).cast(pl.Float64))
        exprs += [x.mean().alias(f"{c}|mean"), x.std(ddof=0).alias(f"{c}|std")]
    row = lf.select(exprs).collect(engine="streaming").row(0, named=True)
    out = {}
    for c in cols:
        mean, std = row[f"{c}|mean"], row[f"{c}|std"]
        if mean is None or std is None or not math.isfinite(std) or std == 0:
            raise ValueError(f"z({c}): no spread over the start set (mean {mean}, std {std})")
        out[c] = (float(mean), float(std))
    return out
