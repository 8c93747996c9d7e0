"""Staging: joins computed once and written to a temporary Parquet file that later passes read.

``select`` and ``report`` make several streaming passes over the score files joined with a
base, a subset or external score files. Each join runs once, into files of a temporary
directory beside the output, one key partition at a time (:mod:`polars_curate.partitions`:
one part of each hash table held at once); a dead process's directory is removed by the next
run (:func:`polars_curate.atomic.remove_stale_temporaries`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import polars as pl

from polars_curate.atomic import remove_stale_temporaries, temporary_directory
from polars_curate.io import SINK_ROW_GROUP
from polars_curate.partitions import Partitions
from polars_curate.storage import Loc, scan_parquet

__all__ = ["Staging", "scan_units", "staging"]


def scan_units(files: Sequence[Loc], columns: Sequence[str]) -> pl.LazyFrame:
    """The score files' ``uid_hi``, ``uid_lo`` and ``columns`` (missing ones as null)."""
    return scan_parquet(files, missing_columns="insert").select("uid_hi", "uid_lo", *columns)


class Staging:
    """A temporary directory whose :meth:`stage` writes a lazy frame out and scans it back."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    def stage(self, lf: pl.LazyFrame, name: str) -> pl.LazyFrame:
        """``lf`` written to ``<name>.parquet``, scanned back."""
        path = self.directory / f"{name}.parquet"
        lf.sink_parquet(path, row_group_size=SINK_ROW_GROUP)
        return pl.scan_parquet(path)

    def stage_parts(
        self, part: Callable[[int], pl.LazyFrame], parts: Partitions, name: str
    ) -> pl.LazyFrame:
        """``part(p)`` for every key partition ``p``, each written to its own file (one
        part's joins held at a time), scanned back as one frame in part order."""
        paths = []
        for p in parts:
            paths.append(self.directory / f"{name}-{p:05d}.parquet")
            part(p).sink_parquet(paths[-1], row_group_size=SINK_ROW_GROUP)
        return pl.scan_parquet(paths)


@contextmanager
def staging(out: Loc, name: str) -> Iterator[Staging]:
    """A :class:`Staging` beside ``out`` for the command ``name``, removed on exit."""
    if isinstance(out, Path) and out.parent.is_dir():
        remove_stale_temporaries(out.parent)
    with temporary_directory(out, name) as directory:
        yield Staging(directory)
