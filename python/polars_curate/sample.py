"""Sampling with repetition as ``select``'s last step: Soft Cap and Hard Cap Sampling (FLYT)
over the rows the rules left, written as a DataComp subset with each uid repeated as often as
it was drawn (DataComp's resharder writes a uid that many times).

The draws are the expressions :func:`~polars_curate.soft_cap_sample` and
:func:`~polars_curate.hard_cap_sample`, run on the candidates' scores in uid order (so the
result depends on the data, the parameters and the seed, not on files or threads). Memory: the
scores, a time and a count per candidate (16 bytes) plus one key partition at a time.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import polars as pl

from polars_curate._expr import hard_cap_sample, soft_cap_sample
from polars_curate.io import write_key_runs
from polars_curate.partitions import Partitions
from polars_curate.rules import KEYS
from polars_curate.storage import Loc

__all__ = ["KINDS", "Sample", "sample_subset"]

KINDS = ("soft-cap", "hard-cap")


@dataclass(frozen=True)
class Sample:
    """``kind:TOTAL`` draws on score ``by`` (``soft-cap``: ``batch``, ``alpha``; ``hard-cap``:
    ``limit``), logits ``score / temperature``."""

    kind: str
    total: int
    by: str
    batch: int = 100_000
    alpha: float = 0.15
    limit: int = 15
    temperature: float = 1.0
    seed: int = 0

    @classmethod
    def parse(cls, text: str, by: str, **options: Any) -> Sample:
        """``soft-cap:TOTAL`` or ``hard-cap:TOTAL``; ``ValueError`` naming ``--sample``."""
        kind, _, total = text.partition(":")
        if kind not in KINDS or not total.strip().isdigit():
            raise ValueError(f"--sample {text!r}: expected soft-cap:TOTAL or hard-cap:TOTAL")
        if not by:
            raise ValueError(f"--sample {text!r}: name the score to sample on (--sample-by)")
        sample = cls(kind, int(total), by, **options)
        sample.expression("x")  # the plugin's own checks of every parameter
        return sample

    def expression(self, column: str) -> pl.Expr:
        if self.kind == "soft-cap":
            return soft_cap_sample(
                column,
                self.total,
                batch=self.batch,
                alpha=self.alpha,
                temperature=self.temperature,
                seed=self.seed,
            )
        return hard_cap_sample(
            column, self.total, limit=self.limit, temperature=self.temperature, seed=self.seed
        )

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d.pop("limit" if self.kind == "soft-cap" else "batch")
        if self.kind == "hard-cap":
            d.pop("alpha")
        return d


def _parts_in_key_order(lf: pl.LazyFrame, column: str, parts: Partitions) -> Iterator[pl.DataFrame]:
    for p in parts:
        yield (
            lf.filter(parts.predicate(p))
            .select(*KEYS, column)
            .collect(engine="streaming")
            .sort(KEYS)
        )


def sample_subset(
    lf: pl.LazyFrame, column: str, sample: Sample, out: Loc, parts: Partitions
) -> tuple[int, dict[str, Any]]:
    """Draw ``sample`` over the rows of ``lf`` (score ``column``) and write ``out``: each uid
    as often as drawn, sorted. The number written (``sample.total``) and the log's summary:
    rows per count and the mean score per count."""
    scores = pl.concat(
        [df[column].cast(pl.Float32) for df in _parts_in_key_order(lf, column, parts)]
    )
    counts = scores.to_frame("s").select(sample.expression("s")).to_series().to_numpy()
    values = scores.to_numpy()
    summary = _summary(counts, values)
    del scores, values

    def runs() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        at = 0
        for df in _parts_in_key_order(lf, column, parts):
            c = counts[at : at + df.height]
            at += df.height
            yield np.repeat(df["uid_hi"].to_numpy(), c), np.repeat(df["uid_lo"].to_numpy(), c)

    written = write_key_runs(runs(), out)
    return written, {**sample.to_json(), "candidates": len(counts), **summary}


def _summary(counts: np.ndarray, values: np.ndarray) -> dict[str, Any]:
    """Rows per count and the mean score per count (rows without a score left out of it)."""
    rows = np.bincount(counts)
    finite = np.isfinite(values)
    sums = np.bincount(
        counts[finite], weights=values[finite].astype(np.float64), minlength=len(rows)
    )
    scored = np.bincount(counts[finite], minlength=len(rows))
    return {
        "rows_per_count": {str(c): int(n) for c, n in enumerate(rows) if n},
        "mean_score_per_count": {
            str(c): float(sums[c] / scored[c]) for c in range(len(rows)) if scored[c]
        },
    }
