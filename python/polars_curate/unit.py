"""The unit worker: score one unit of the pool into its file of the score directory.

The same function runs in a local run and in a Ray task, so both write the same bytes. A unit
file is written whole, under a per-process temporary name, fsynced and renamed: a crash or
``kill -9`` at any moment leaves only complete files.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import polars as pl

from polars_curate._errors import first_line, is_interrupt
from polars_curate._internal import __version__
from polars_curate.atomic import write_atomic
from polars_curate.grouped import spill
from polars_curate.pool import PoolError, Unit, read_unit
from polars_curate.scoredir import (
    META_KEY,
    RecordError,
    check_unit,
    spill_file,
    unit_entry,
    unit_meta,
)
from polars_curate.scores import SCORES, Arrays, ScoreConfig
from polars_curate.storage import Loc, read_parquet
from polars_curate.uids import check_uids, uid_key_exprs

__all__ = ["Work", "score_unit"]


def _keys(df: pl.DataFrame, unit: Unit) -> pl.DataFrame:
    """``uid`` with its binary key; ``PoolError`` naming the first invalid uid's row."""
    try:
        check_uids(df["uid"], str(unit.shard.parquet), unit.start)
    except ValueError as e:
        raise PoolError(str(e)) from None
    return df.select("uid", *uid_key_exprs("uid"))


def _compute(
    unit: Unit, need: Sequence[ScoreConfig], arrays: Arrays
) -> tuple[pl.DataFrame, pl.DataFrame, pl.DataFrame]:
    """The unit's keys, its ``need`` scores (those computed per unit) and the embeddings they
    read; errors name the shard."""
    cols = list(dict.fromkeys(e for c in need for e in c.embeddings()))
    where = unit.shard.describe()
    per_unit = [c for c in need if c.score.build is not None]
    try:
        df = read_unit(unit, ["uid"], cols)
        keys = _keys(df, unit)
        scores = df.select(**{c.column: c.expression(arrays) for c in per_unit})
    except PoolError as e:
        msg = str(e)
        raise PoolError(
            msg if msg.startswith(str(unit.shard.parquet)) else f"{where}: {msg}"
        ) from None
    except Exception as e:  # a data problem the plugin reports (width, dtype, ...)
        if is_interrupt(e):
            raise KeyboardInterrupt from None
        raise PoolError(f"{where}: {first_line(e)}") from None
    return keys, scores, df.select(cols)


def score_unit(
    unit: Unit,
    out: Loc,
    configs: Sequence[ScoreConfig],
    arrays: Arrays,
    respill: bool = False,
) -> int:
    """Score one unit into ``out/<unit>.parquet``, adding to what the file already holds (and
    spill its rows for a grouped score's second pass); returns the rows scored (0 when
    everything asked was there). ``respill``: also spill again for a grouped score whose spill
    was lost (the unit file stands). Errors name the shard."""
    dest = out / f"{unit.name}.parquet"
    meta = unit_meta(dest) if dest.exists() else None
    check_unit(out, unit, meta)
    if meta is not None and meta.get("checked") != unit_entry(unit).get("checked"):
        meta = None  # scored from unverified bytes: scored again, whole
    have: dict[str, Any] = (meta or {}).get("scores", {})
    need = [c for c in configs if have.get(c.column) != c.digest]
    lost = [
        c
        for c in configs
        if respill and c not in need and c.score.kind == "grouped"
        and not spill_file(out, unit.name).exists()
    ]  # fmt: skip
    if not need and not lost:
        return 0
    keys, scores, embeddings = _compute(unit, need + lost, arrays)
    if meta is not None:
        kept = read_parquet(dest).drop([c.column for c in need], strict=False)
        if not kept["uid"].equals(keys["uid"]):
            raise RecordError(
                f"{dest}: its uids differ from {unit.shard.describe()}; use another --out"
            )
        keys = kept
    table = keys.hstack(scores)
    columns = [s.column for s in SCORES.values() if s.column in table.columns]
    table = table.select("uid", "uid_hi", "uid_lo", *columns)
    for c in need + lost:
        if c.score.kind == "grouped":
            spill(out, unit, c, table, embeddings)
    if not need:
        return unit.rows  # only a spill was lost: the unit file holds what it held
    entry = unit_entry(unit)
    entry["scores"] = {**have, **{c.column: c.digest for c in need}}
    entry["created_by"] = __version__
    blob = json.dumps(entry, sort_keys=True)
    write_atomic(dest, lambda f: table.write_parquet(f, metadata={META_KEY: blob}))
    return unit.rows


@dataclass(frozen=True)
class Work:
    """What every unit of a run is scored with: where its files go, the scores and their
    input files' values. A runner gets one and calls :meth:`score` once per unit, wherever it
    runs."""

    out: Loc
    configs: tuple[ScoreConfig, ...]
    arrays: Arrays
    #: Also spill again where a grouped score's spill was lost (see :func:`score_unit`).
    respill: bool = False

    def score(self, unit: Unit) -> int:
        """:func:`score_unit` of ``unit``: the rows scored (0 when it was finished)."""
        return score_unit(unit, self.out, self.configs, self.arrays, self.respill)
