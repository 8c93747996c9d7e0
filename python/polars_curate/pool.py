"""Pools on disk: both layouts, units of work, and a lazy scan.

A pool is a set of shards. Two layouts, possibly mixed, are read everywhere a pool is read:

* **Parquet with embedding columns** (the layout this package is built around): each
  ``<shard>.parquet`` holds ``uid`` and the embeddings as ``Array(Float16|Float32|Float64, d)``
  columns (``l14_img``, ``l14_txt``, ``b32_img``, ...), one file per shard or a few very large
  files cut into row groups;
* **DataComp's pairs**: ``<shard>.parquet`` (metadata, ``uid``) + ``<shard>.npz`` (the
  embeddings as float16 arrays under the same names), rows aligned.

The job runs in **units** of at most ``unit_rows`` rows: a shard is one unit unless it holds
more rows, in which case it is cut at row-group boundaries (npz shards: at row boundaries)
into consecutive units. So memory stays about one unit whatever the size of the pool or of any
one file. A unit is identified by its shard and row range, and the shard by a content
fingerprint (size and a hash of the file's tail: the Parquet footer, the zip directory with
its CRCs), so a record of units says exactly what was scored.
"""

from __future__ import annotations

import glob as _glob
import hashlib
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import polars as pl

from polars_curate._errors import PoolError, first_line
from polars_curate._types import PathLike
from polars_curate.npz import member_headers, member_rows, unusable_reason
from polars_curate.storage import (
    Loc,
    S3Path,
    location,
    parquet_footer,
    parquet_schema,
    scan_parquet,
    size_and_tail,
)

__all__ = [
    "DEFAULT_UNIT_ROWS",
    "PoolError",
    "Shard",
    "Unit",
    "check_agree",
    "list_pool",
    "plan_units",
    "read_datacomp",
    "scan_pool",
]

#: Units hold at most this many rows unless told otherwise: about 0.8 GB of float16 image and
#: text embeddings at d = 768. DataComp's shards (about 10,000 rows) are one unit each.
DEFAULT_UNIT_ROWS = 262_144

_FLOATS = (pl.Float16, pl.Float32, pl.Float64)


@dataclass(frozen=True)
class Shard:
    """One shard: a Parquet file, with its npz twin in DataComp's layout."""

    name: str
    parquet: Loc
    npz: Loc | None
    rows: int
    fingerprint: str
    #: Embedding columns: name -> (inner dtype name, width).
    embeddings: tuple[tuple[str, str, int], ...]
    #: Rows per Parquet row group (Parquet layout), for cutting large files.
    row_groups: tuple[int, ...]
    #: The Parquet file's columns: name -> dtype (as Polars prints it).
    columns: tuple[tuple[str, str], ...] = ()
    #: npz arrays that cannot be embeddings: name -> why.
    unusable: tuple[tuple[str, str], ...] = ()

    def embedding(self, name: str) -> tuple[str, int] | None:
        for n, dtype, width in self.embeddings:
            if n == name:
                return dtype, width
        return None

    def require(self, name: str, purpose: str = "", hint: str = "") -> tuple[str, int]:
        """``(inner dtype name, width)`` of embedding column ``name``; ``PoolError`` naming the
        shard and the embedding columns it has when there is none (``purpose``: what wanted
        it, e.g. ``"for ncl"``; ``hint``: how to choose another column)."""
        found = self.embedding(name)
        why_not = dict(self.unusable).get(name)
        if found is None and why_not is not None:
            raise PoolError(
                f"{self.npz}: array {name!r} is {why_not}; embeddings must be 2-D arrays of "
                "float16, float32 or float64"
            )
        if found is None:
            have = ", ".join(n for n, _, _ in self.embeddings) or "none"
            why = f" {purpose}" if purpose else ""
            how = f"; {hint}" if hint else ""
            raise PoolError(
                f"{self.describe()}: no embedding column {name!r}{why} "
                f"(embedding columns there: {have}{how})"
            )
        return found

    def describe(self) -> str:
        return str(self.parquet if self.npz is None else f"{self.parquet} + {self.npz.name}")


@dataclass(frozen=True)
class Unit:
    """Rows ``start .. start + rows`` of a shard: what one task reads, scores and writes."""

    name: str
    shard: Shard
    start: int
    rows: int


def _fingerprint(paths: Sequence[Loc]) -> str:
    """Size and a hash of the last 64 KiB of each file: the Parquet footer (schema, row groups,
    statistics) or the zip central directory (member CRCs). Cheap (one ranged read on a
    bucket), and it changes with the content; it does not depend on the path, the place or
    the modification time, so a pool copied elsewhere (or to a bucket) is the same pool."""
    h = hashlib.blake2b(digest_size=12)
    sizes = []
    for p in paths:
        size, tail = size_and_tail(p)
        sizes.append(str(size))
        h.update(tail)
    return "+".join(sizes) + ":" + h.hexdigest()


_NP_TO_PL = {"<f2": "Float16", "<f4": "Float32", "<f8": "Float64"}


def _describe_shard(parquet: Loc, npz: Loc | None) -> Shard:
    try:
        meta = parquet_footer(parquet)
        schema = parquet_schema(parquet)
    except Exception as e:
        raise PoolError(f"{parquet}: not a readable Parquet file ({first_line(e)})") from None
    rows = meta.num_rows
    groups = tuple(meta.row_group(i).num_rows for i in range(meta.num_row_groups))
    emb: list[tuple[str, str, int]] = []
    for name, dtype in schema.items():
        if isinstance(dtype, pl.Array) and dtype.inner in _FLOATS and dtype.size > 0:
            emb.append((name, str(dtype.inner), dtype.size))
    files = [parquet]
    unusable: list[tuple[str, str]] = []
    if npz is not None:
        for key, (dt, shape) in member_headers(npz).items():
            why = unusable_reason(dt, shape)
            if why is not None:
                unusable.append((key, why))  # reported if asked for
                continue
            if shape[0] != rows:
                raise PoolError(
                    f"{npz}: array {key!r} has {shape[0]} rows, but {parquet.name} has {rows}"
                )
            emb.append((key, _NP_TO_PL[dt.str], shape[1]))
        files.append(npz)
    return Shard(
        name=parquet.stem,
        parquet=parquet,
        npz=npz,
        rows=rows,
        fingerprint=_fingerprint(files),
        embeddings=tuple(emb),
        row_groups=groups,
        columns=tuple((n, str(t)) for n, t in schema.items()),
        unusable=tuple(unusable),
    )


def _found(p: Loc, text: str) -> list[Loc]:
    """The files ``p`` names: a directory's, a pair's, or a glob's (on a bucket: a prefix's
    objects, a pair, or ``*``/``?`` patterns in the last part)."""
    if p.is_dir():
        return sorted(p.glob("*.parquet")) + sorted(p.glob("*.npz"))
    if p.suffix in (".parquet", ".npz") and p.is_file():
        return [f for f in (p.with_suffix(".parquet"), p.with_suffix(".npz")) if f.exists()]
    if isinstance(p, S3Path):
        return sorted(p.parent.glob(p.name))
    return sorted(Path(m) for m in _glob.glob(text))


def list_pool(
    path: PathLike | S3Path, storage_options: dict[str, Any] | None = None
) -> list[Shard]:
    """The shards of a pool: ``path`` is a directory, a glob, or one file (``.parquet`` or
    ``.npz`` of a pair), local or in a bucket (``s3://``, with ``storage_options``). Files
    whose names start with ``.`` or ``_`` are not shards. Each ``.parquet`` with a ``.npz``
    twin is a DataComp pair; one without is a Parquet shard with embedding columns. Shards come
    in name order; their metadata is read in parallel."""
    p = location(path, storage_options)
    found = _found(p, str(path))
    found = [f for f in found if not f.name.startswith((".", "_"))]
    broken = [f for f in found if f.is_symlink() and not f.exists()]
    if broken:
        raise PoolError(f"{broken[0]}: a broken link in the pool (its target is missing)")
    # Absolute: units travel to other processes (Ray workers) with other working directories.
    found = [f.absolute() for f in found if f.is_file()]
    # In name order (names are unique): the order of `scan_pool`'s shard column, declared sorted.
    parquets = sorted(
        {f.with_suffix("") for f in found if f.suffix == ".parquet"}, key=lambda f: (f.name, f)
    )
    npzs = {f.with_suffix("") for f in found if f.suffix == ".npz"}
    if not parquets and not npzs:
        raise FileNotFoundError(
            f"no pool shards (.parquet, or .parquet + .npz pairs) found at {path}"
        )
    orphans = sorted(npzs - set(parquets))
    if orphans:
        o = orphans[0]
        raise FileNotFoundError(
            f"{o.with_suffix('.parquet')} is missing: every .npz needs its .parquet"
        )
    names: dict[str, Loc] = {}
    for stem in parquets:
        if stem.name in names:
            raise PoolError(
                f"two shards are named {stem.name!r} ({names[stem.name]} and {stem}); "
                "shard names must be unique"
            )
        names[stem.name] = stem
    pairs = [
        (s.with_suffix(".parquet"), s.with_suffix(".npz") if s in npzs else None) for s in parquets
    ]
    with ThreadPoolExecutor(max_workers=8) as ex:
        shards = list(ex.map(lambda a: _describe_shard(*a), pairs))
    if npzs:  # a DataComp pool: a .parquet without embeddings has lost its twin
        lost = [s for s in shards if s.npz is None and not s.embeddings]
        if lost:
            raise FileNotFoundError(
                f"{lost[0].parquet.with_suffix('.npz')} is missing: {lost[0].parquet.name} has "
                "no embedding columns, and the pool's other shards are .parquet + .npz pairs"
            )
    return shards


def check_agree(shards: Sequence[Shard], columns: Sequence[str] | None = None) -> None:
    """``PoolError`` when two shards give a column (default: every column and embedding of
    the first shard) different types or widths, naming both files: a pool's files must
    agree (embeddings of different widths come from different models)."""
    seen: dict[str, tuple[str, Shard]] = {}
    for s in shards:
        types = dict(s.columns)
        types.update({n: f"Array({t}, {w})" for n, t, w in s.embeddings})
        for name in columns if columns is not None else types:
            if name not in types:
                continue
            first = seen.setdefault(name, (types[name], s))
            if first[0] != types[name]:
                raise PoolError(
                    f"{s.describe()}: column {name!r} is {types[name]}, but "
                    f"{first[1].describe()} has {first[0]}; a pool's files must agree"
                )


def plan_units(shards: Sequence[Shard], unit_rows: int | None = DEFAULT_UNIT_ROWS) -> list[Unit]:
    """Cut shards into units of at most ``unit_rows`` rows (``None``: one unit per shard).

    A Parquet shard is cut at row-group boundaries, consecutive row groups filling a unit up
    to ``unit_rows``; a row group larger than that is cut into pieces of ``unit_rows`` rows. An
    npz shard is cut every ``unit_rows`` rows. A shard that is one unit keeps its name; the
    units of a cut shard are named ``<shard>.<part>`` (five digits)."""
    if unit_rows is not None and unit_rows < 1:
        raise ValueError(f"`unit_rows` must be >= 1, got {unit_rows}")
    units: list[Unit] = []
    for s in shards:
        if unit_rows is None or s.rows <= unit_rows:
            units.append(Unit(s.name, s, 0, s.rows))
            continue
        ranges: list[tuple[int, int]] = []
        if s.npz is None and s.row_groups:
            start = filled = 0
            for g in s.row_groups:
                if filled and filled + g > unit_rows:
                    ranges.append((start, filled))
                    start, filled = start + filled, 0
                if g > unit_rows:
                    for off in range(0, g, unit_rows):
                        ranges.append((start + off, min(unit_rows, g - off)))
                    start += g
                else:
                    filled += g
            if filled:
                ranges.append((start, filled))
        else:
            ranges = [(a, min(unit_rows, s.rows - a)) for a in range(0, s.rows, unit_rows)]
        units += [Unit(f"{s.name}.{i:05d}", s, a, n) for i, (a, n) in enumerate(ranges)]
    return units


def _parquet_columns(shard: Shard) -> list[str]:
    return [n for n, _ in shard.columns]


def read_unit(unit: Unit, columns: Sequence[str], embeddings: Sequence[str]) -> pl.DataFrame:
    """The rows of ``unit``: Parquet ``columns`` and ``embeddings`` as ``Array`` columns (from
    the Parquet or the npz), each one contiguous chunk. Errors name the file."""
    s = unit.shard
    for e in embeddings:
        s.require(e)
    in_parquet = set(_parquet_columns(s))
    pq_cols = list(dict.fromkeys([*columns, *(e for e in embeddings if e in in_parquet)]))
    missing = [c for c in pq_cols if c not in in_parquet]
    if missing:
        raise PoolError(f"{s.parquet}: no column {missing[0]!r}")
    try:
        lf = scan_parquet([s.parquet]).select(pq_cols).slice(unit.start, unit.rows)
        df = lf.collect()
    except Exception as e:
        raise PoolError(
            f"{s.parquet}: cannot read rows {unit.start}..{unit.start + unit.rows} "
            f"({first_line(e)})"
        ) from None
    df = df.rechunk()
    extra = []
    for e in embeddings:
        if e in in_parquet:
            continue
        assert s.npz is not None
        try:
            a = member_rows(s.npz, s.fingerprint, e, unit.start, unit.rows)
        except PoolError:
            raise
        except Exception as err:
            raise PoolError(f"{s.npz}: cannot read array {e!r} ({err})") from None
        extra.append(pl.Series(e, a))
    if extra:
        df = df.with_columns(extra)
    if df.height != unit.rows:
        raise PoolError(
            f"{s.parquet}: expected {unit.rows} rows from {unit.start}, got {df.height}"
        )
    return df.select([*dict.fromkeys([*columns, *embeddings])])


def scan_pool(
    path: PathLike | S3Path,
    *,
    embeddings: Sequence[str] | None = None,
    shard_column: str = "shard",
    storage_options: dict[str, Any] | None = None,
) -> pl.LazyFrame:
    """A lazy frame over a pool in either layout, with a ``shard`` column naming each row's
    shard, so that a query over a pool is one line.

    Parameters
    ----------
    path
        A directory, a glob or one file (see :func:`list_pool`).
    embeddings
        npz arrays to attach as ``Array`` columns (default: every 2-D float array in the npz);
        Parquet embedding columns are always there.
    shard_column
        Name of the String column holding each row's shard name.
    storage_options
        For a pool in a bucket (``s3://``): endpoint, region, credentials, as Polars takes them
        (default: the ``AWS_*`` environment and ``~/.aws``; see :mod:`polars_curate.storage`).

    Notes
    -----
    Elementwise expressions (``clip_score``, ``normsim``, ``zero_shot_labels``) stream: a
    ``sink_parquet(..., row_group_size=...)`` of them holds a few morsels at a time.
    Whole-frame expressions (``neg_clip_loss``, ``normsim2_dynamic``, ``clipcov``,
    ``top_fraction``) need all rows they see at once: run them per shard with
    :func:`polars_curate.per_shard` (a ``group_by`` on the shard column, which this frame
    declares sorted, so Polars' streaming engine holds one shard at a time). Not
    ``.over("shard")``: Polars computes a window over a non-elementwise expression in memory,
    holding the whole pool.

    Examples
    --------
    >>> import tempfile, polars as pl, polars_curate as pc
    >>> from polars_curate.datasets import synthetic_pool
    >>> paths = synthetic_pool(tempfile.mkdtemp(), n=300, d=16, shards=3)
    >>> lf = pc.scan_pool(paths["pool"], embeddings=["l14_img", "l14_txt"])
    >>> (lf.group_by("shard").agg(pl.len(), pl.col("l14_img").first().arr.len().alias("d"))
    ...    .sort("shard").collect())
    shape: (3, 3)
    ┌──────────┬─────┬─────┐
    │ shard    ┆ len ┆ d   │
    │ ---      ┆ --- ┆ --- │
    │ str      ┆ u32 ┆ u32 │
    ╞══════════╪═════╪═════╡
    │ 00000000 ┆ 100 ┆ 16  │
    │ 00000001 ┆ 100 ┆ 16  │
    │ 00000002 ┆ 100 ┆ 16  │
    └──────────┴─────┴─────┘
    """
    shards = list_pool(path, storage_options)
    for s in shards:
        if shard_column in dict(s.columns) or s.embedding(shard_column):
            raise PoolError(
                f"{s.parquet}: the pool already has a column {shard_column!r}; name the shard "
                "column otherwise (shard_column=...)"
            )
    check_agree(shards)
    if all(s.npz is None for s in shards):
        lf = scan_parquet([s.parquet for s in shards], include_file_paths="__pc_path__")
        stem = pl.col("__pc_path__").str.extract(r"([^/\\]+)\.parquet$", 1)
        lf = lf.with_columns(stem.alias(shard_column)).drop("__pc_path__")
    else:
        lf = _scan_pairs(shards, embeddings, shard_column)
    # Rows come shard after shard, in name order: said, so that a group_by on the shard runs
    # as Polars' sorted group-by, holding one shard at a time (see `per_shard`).
    return lf.with_columns(pl.col(shard_column).set_sorted())


def _scan_pairs(
    shards: list[Shard], embeddings: Sequence[str] | None, shard_column: str
) -> pl.LazyFrame:
    from polars.io.plugins import register_io_source

    first = shards[0]
    base = parquet_schema(first.parquet)
    names = (
        list(embeddings)
        if embeddings is not None
        else [n for n, _, _ in first.embeddings if n not in base]
    )
    schema: dict[str, Any] = dict(base)
    for n in names:
        dtype, width = first.require(n)
        schema[n] = pl.Array(getattr(pl, dtype), width)
    schema[shard_column] = pl.String

    def source(
        with_columns: list[str] | None,
        predicate: pl.Expr | None,
        n_rows: int | None,
        batch_size: int | None,
    ) -> Iterator[pl.DataFrame]:
        left = n_rows
        wanted = list(schema) if with_columns is None else list(with_columns)
        for s in shards:
            if left is not None and left <= 0:
                return
            pq = [c for c in wanted if c in base]
            emb = [c for c in wanted if c in names]
            if not pq:  # read one Parquet column for the row count (a frame needs a height)
                pq = [next(iter(base))]
            step = batch_size or s.rows or 1
            for start in range(0, max(s.rows, 1), step):
                rows = min(step, s.rows - start)
                if rows <= 0:
                    break
                df = read_unit(Unit(s.name, s, start, rows), pq, emb)
                if shard_column in wanted:
                    df = df.with_columns(pl.lit(s.name, pl.String).alias(shard_column))
                if predicate is not None:
                    df = df.filter(predicate)
                if left is not None:
                    df = df.head(left)
                    left -= df.height
                yield df.select(wanted)

    return register_io_source(io_source=source, schema=schema)


def read_datacomp(
    path: PathLike | S3Path,
    *,
    keys: Sequence[str] | None = None,
    shard_column: str | None = "shard",
    storage_options: dict[str, Any] | None = None,
) -> pl.DataFrame:
    """Read a whole pool (either layout: DataComp's ``<name>.parquet`` + ``<name>.npz`` pairs,
    or Parquet files with embedding columns) into one frame; for pools that fit in memory.
    Larger ones: :func:`polars_curate.scan_pool` (lazy) and :func:`polars_curate.score_pool`.

    Parameters
    ----------
    path
        One shard (either file of a pair), a directory of shards, or a glob.
    keys
        The npz arrays to attach as ``Array(Float16, d)`` columns (default: all of them), e.g.
        ``["l14_img", "l14_txt"]``.
    shard_column
        Name of a String column holding each row's shard name (for ``.over("shard")``), or
        ``None`` for none.

    Rows keep the shard's order; shards are read in name order. A missing twin file,
    mismatched row counts or an unknown key raises an error naming the file.
    """
    lf = scan_pool(
        path,
        embeddings=keys,
        shard_column=shard_column or "__shard__",
        storage_options=storage_options,
    )
    if shard_column is None:
        lf = lf.drop("__shard__")
    return lf.collect()
