"""SemDeDup's second pass: a cluster spans shards, so the pool's rows are regrouped by cluster.

* **Spill** (in the unit pass, :func:`spill`): each unit writes ``_spill/<unit>.parquet``: its
  rows' keys, cluster, group (``cluster % groups``) and clustered embedding, sorted by group in
  small row groups, so a group's read skips the rest by their statistics. It holds a copy of
  the clustered embeddings (delete ``_spill/`` once ``score`` has finished; a rerun that needs
  it spills those units again).
* **Groups** (:class:`GroupWork`, after every unit of every recorded run is scored): group
  ``g`` reads its rows from all the spills, takes each row's cosine to its cluster's centroid,
  and per cluster orders the rows by it (ascending: the hardest first; ties by uid) and
  computes :func:`polars_curate.semdedup`. It writes ``_semdedup/<g>.parquet``: ``uid_hi``,
  ``uid_lo``, ``semdedup`` (Float32), its record in the Parquet metadata. One group at a time
  per worker (memory: a few times the group's embeddings); resumable; one Ray task per group. A
  result records the units it was computed over: a unit added to the pool makes it stale.

Readers join ``_semdedup/`` on the uid key, a key partition at a time (``select``, ``report``).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import polars as pl

from polars_curate._expr import clip_score, semdedup
from polars_curate._internal import __version__
from polars_curate.atomic import write_atomic
from polars_curate.pool import Unit
from polars_curate.scoredir import (
    META_KEY,
    RecordError,
    group_is_current,
    group_results,
    spill_file,
    unit_meta,
    units_digest,
)
from polars_curate.scores import Arrays, ScoreConfig
from polars_curate.storage import Loc, scan_parquet
from polars_curate.uids import uids_from_keys

__all__ = ["Group", "GroupWork", "groups_of", "spill"]

#: Rows per row group of a spill file: small, so a group's read skips the others' rows.
SPILL_ROW_GROUP = 4096


def spill(
    out: Loc, unit: Unit, config: ScoreConfig, table: pl.DataFrame, embeddings: pl.DataFrame
) -> None:
    """Write ``unit``'s rows for the grouped pass (see the module docs)."""
    groups, column = config.params["groups"], config.params["embedding"]
    frame = table.select("uid_hi", "uid_lo", "cluster").with_columns(
        group=(pl.col("cluster") % groups).cast(pl.UInt32), embedding=embeddings[column]
    )
    frame = frame.sort("group", maintain_order=True)
    write_atomic(
        spill_file(out, unit.name),
        lambda f: frame.write_parquet(f, row_group_size=SPILL_ROW_GROUP, statistics=True),
    )


@dataclass(frozen=True)
class Group:
    """One group of clusters of the second pass (``name`` and ``rows`` for the progress line)."""

    index: int
    name: str
    rows: int = 0


@dataclass(frozen=True)
class GroupWork:
    """What every group of the second pass is computed with; :meth:`score` runs one, wherever
    a runner runs it (like :class:`polars_curate.unit.Work` for units)."""

    out: Loc
    config: ScoreConfig
    arrays: Arrays
    units: tuple[str, ...]

    def record(self, g: int, rows: int) -> dict[str, Any]:
        groups, digest = self.config.params["groups"], self.config.digest
        units = units_digest(self.units)
        return {"group": g, "groups": groups, "rows": rows, "digest": digest, "units": units}

    def result(self, group: Group) -> Loc:
        files = group_results(self.out, self.config.column, self.config.params["groups"])
        return files[group.index]

    def is_current(self, group: Group) -> bool:
        """Whether ``group``'s result holds these scores over these units."""
        dest = self.result(group)
        meta = unit_meta(dest) if dest.exists() else None
        return group_is_current(meta, self.config.digest, units_digest(self.units))

    def score(self, group: Group) -> int:
        """Group ``group``'s SemDeDup scores into its result file; the rows scored (0 when the
        file was there)."""
        g, dest = group.index, self.result(group)
        if self.is_current(group):
            return 0
        spills = [spill_file(self.out, u) for u in self.units]
        rows = scan_parquet(spills).filter(pl.col("group") == g).collect()
        _refuse_repeats(rows, group)
        scored = _scores(rows, self.arrays["centroids"])
        blob = json.dumps({**self.record(g, scored.height), "created_by": __version__})
        write_atomic(dest, lambda f: scored.write_parquet(f, metadata={META_KEY: blob}))
        return scored.height


def _refuse_repeats(rows: pl.DataFrame, group: Group) -> None:
    """SemDeDup orders a cluster's rows by uid among equals, and its results are joined on the
    uid: a uid in several rows of the pool has no one score."""
    dup = rows.filter(pl.struct("uid_hi", "uid_lo").is_duplicated()).head(1)
    if dup.height:
        uid = uids_from_keys(dup["uid_hi"].to_numpy(), dup["uid_lo"].to_numpy())[0]
        raise RecordError(
            f"semdedup ({group.name}): uid {uid} is in several rows of the pool; SemDeDup needs "
            "each uid once (deduplicate the pool, or score it without semdedup)"
        )


def _scores(rows: pl.DataFrame, centroids: np.ndarray) -> pl.DataFrame:
    """``uid_hi``, ``uid_lo``, ``semdedup`` of a group's rows: per cluster, in SemDeDup's order
    (cosine to the centroid ascending, ties by uid)."""
    if rows.height == 0:
        return pl.DataFrame(
            schema={"uid_hi": pl.UInt64, "uid_lo": pl.UInt64, "semdedup": pl.Float32}
        )
    width = rows.schema["embedding"].size  # type: ignore[union-attr]
    centres = pl.DataFrame(
        {
            "cluster": np.arange(len(centroids), dtype=np.uint32),
            "centroid": pl.Series(centroids.astype(np.float32)).cast(pl.Array(pl.Float32, width)),
        }
    )
    rows = rows.join(centres, on="cluster", how="left").with_columns(
        similarity=clip_score("embedding", "centroid")
    )
    order = ["similarity", "uid_hi", "uid_lo"]
    return (
        rows.group_by("cluster", maintain_order=True)
        .agg("uid_hi", "uid_lo", semdedup=semdedup("embedding", by=order))
        .explode("uid_hi", "uid_lo", "semdedup")
        .select("uid_hi", "uid_lo", "semdedup")
        .sort("uid_hi", "uid_lo")
    )


def groups_of(work: GroupWork) -> Sequence[Group]:
    """The groups of the second pass, in order."""
    return [Group(g, f"group {g:05d}") for g in range(work.config.params["groups"])]
