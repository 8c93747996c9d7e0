"""The score directory: what it holds, how it is recorded, and how readers check it.

A score directory ``OUT`` holds one ``<unit>.parquet`` per unit of the pool (``uid``, its binary
key ``uid_hi``/``uid_lo`` and one ``Float32`` column per score, rows in the pool's order) and a
record of what they were made from:

* ``_polars_curate.json``: the layout version and the unit size (``unit_rows``);
* ``_scores/<column>.json``: per score, its parameters (embedding columns, batch size,
  partitions, seed, normalisation, and for NormSim the target's content key and shape, never
  its path) and the package version; adding a score later adds a file, and the order of
  ``--scores`` does not matter;
* ``_runs/<digest>.json``: per planned run, the units (shard, row range, the shard's content
  fingerprint) it covers; two processes that split a pool by glob write one each;
* in each unit file's Parquet metadata: the unit, its shard's fingerprint and the scores (by
  parameter digest) it holds.

Record files are written once (a second writer finds the first one's); unit files are replaced
atomically. :func:`check_complete` is what ``select`` and ``report`` call first.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import polars as pl

from polars_curate._internal import __version__
from polars_curate._types import PathLike
from polars_curate.atomic import write_once
from polars_curate.pool import Unit
from polars_curate.scores import SCORES, Score, ScoreConfig
from polars_curate.storage import Loc, location, parquet_kv_metadata, scan_parquet

__all__ = [
    "DIR_RECORD",
    "FORMAT",
    "META_KEY",
    "RecordError",
    "check_complete",
    "check_records",
    "check_unit",
    "group_results",
    "grouped_scores",
    "read_record",
    "recorded_units",
    "scan_scores",
    "unit_entry",
    "unit_meta",
    "unit_scores",
    "write_records",
]

FORMAT = 1
DIR_RECORD = "_polars_curate.json"
META_KEY = "polars_curate"
#: A grouped score's (SemDeDup's) spilled rows; its results are in ``_<column>/``.
SPILL = "_spill"


def group_results(out: Loc, column: str, groups: int) -> list[Loc]:
    """The result file of each group of grouped score ``column``, in order."""
    return [out / f"_{column}" / f"{g:05d}.parquet" for g in range(groups)]


def recorded_units(out: Loc, record: dict[str, Any] | None = None) -> list[str]:
    """The units of every run the directory records (``record``: as already read), sorted."""
    runs = (record or read_record(out))["runs"]
    return sorted({u["unit"] for plan in runs for u in plan["units"]})


def spill_file(out: Loc, unit: str) -> Loc:
    """Where unit ``unit`` spills its rows for the grouped second pass."""
    return out / SPILL / f"{unit}.parquet"


def units_digest(units: Sequence[str]) -> str:
    """What a grouped result was computed over: a digest of the sorted unit names (a unit
    added to the pool, by this run or another writer's, makes every group stale)."""
    return hashlib.sha256("\n".join(sorted(units)).encode()).hexdigest()[:16]


def group_is_current(meta: dict[str, Any] | None, digest: str, units: str) -> bool:
    """Whether a group's result (its metadata ``meta``) holds score ``digest`` over ``units``."""
    return meta is not None and meta.get("digest") == digest and meta.get("units") == units


def unit_scores(out: Loc, name: str) -> dict[str, str]:
    """The scores (column -> parameter digest) unit ``name``'s file holds (none: no file)."""
    meta = unit_meta(out / f"{name}.parquet")
    return dict((meta or {}).get("scores", {}))


class RecordError(ValueError):
    """A score directory that does not hold what is asked (other data, other parameters,
    missing units); the message says what differs and how to proceed."""


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RecordError(f"{path}: unreadable record ({e})") from None


def _write_record_once(path: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Write ``record`` to ``path`` unless it exists; what ``path`` holds afterwards."""
    write_once(path, json.dumps(record, indent=1, sort_keys=True).encode())
    return _read_json(path)


def read_record(out: PathLike | Loc) -> dict[str, Any]:
    """The record of a score directory: ``{"unit_rows", "scores": {column: record},
    "runs": [plan, ...]}``. ``RecordError`` when ``out`` is not a score directory."""
    out = location(out)
    head = out / DIR_RECORD
    if not head.is_file():
        if not out.is_dir():
            raise RecordError(f"{out} is not a directory of scores")
        raise RecordError(
            f"{out} is not a score directory written by this version of polars-curate "
            f"(no {DIR_RECORD})"
        )
    record = _read_json(head)
    record["scores"] = {p.stem: _read_json(p) for p in sorted((out / "_scores").glob("*.json"))}
    record["runs"] = [_read_json(p) for p in sorted((out / "_runs").glob("*.json"))]
    return record


def _differences(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Where two records differ, as ``` `path` differs: recorded ..., now ...``` lines."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _differences(old.get(k), new.get(k), f"{prefix}{'.' if prefix else ''}{k}")
        return out
    if isinstance(old, list) and isinstance(new, list) and len(old) == len(new):
        return [
            d
            for i, (a, b) in enumerate(zip(old, new))
            for d in _differences(a, b, f"{prefix}[{i}]")
        ]
    if old == new:
        return []
    short = [r if len(r := repr(v)) <= 80 else r[:77] + "..." for v in (old, new)]
    return [f"`{prefix}` differs: recorded {short[0]}, now {short[1]}"]


def _is_score_directory(out: Path) -> bool:
    """Whether ``out`` holds a record; ``RecordError`` when it holds something else."""
    if not out.exists():
        return False
    if not out.is_dir():
        raise RecordError(f"--out {out} exists and is not a directory")
    if (out / DIR_RECORD).exists():
        return True
    stray = [p.name for p in out.iterdir() if not p.name.startswith(".")]
    if stray:
        raise RecordError(
            f"--out {out} holds files that are not a polars-curate score directory "
            f"(e.g. {stray[0]}); use an empty or new directory"
        )
    return False


def check_records(out: Path, unit_rows: int | None, configs: Sequence[ScoreConfig]) -> bool:
    """Compare a run with what ``out`` already records; ``RecordError`` naming the first
    parameter that differs. Returns whether ``out`` already is a score directory."""
    if not _is_score_directory(out):
        return False
    record = read_record(out)
    if record.get("format") != FORMAT:
        raise RecordError(
            f"{out}: score directory format {record.get('format')}, expected {FORMAT}"
        )
    if record.get("unit_rows") != unit_rows:
        raise RecordError(
            f"{out}: --unit-rows differs: recorded {record.get('unit_rows')}, now {unit_rows} "
            "(units decide negCLIPLoss's batches); use the recorded value or another --out"
        )
    for c in configs:
        old = record["scores"].get(c.column)
        if old is not None and old.get("digest") != c.digest:
            diffs = _differences(old.get("params", {}), c.params)
            what = diffs[0] if diffs else "its parameters differ"
            raise RecordError(
                f"{out}: score {c.name}: {what}; use the recorded value or another --out"
            )
    return True


def write_records(
    out: Path,
    unit_rows: int | None,
    configs: Sequence[ScoreConfig],
    pool: PathLike,
    units: Sequence[Unit],
) -> None:
    """Write the directory's, each score's and this run's records (each once)."""
    _write_record_once(out / DIR_RECORD, {"format": FORMAT, "unit_rows": unit_rows})
    for c in configs:
        _write_record_once(
            out / "_scores" / f"{c.column}.json",
            {
                "score": c.name,
                "column": c.column,
                "params": c.params,
                "digest": c.digest,
                "created_by": __version__,
            },
        )
    plan = {
        "pool": str(location(pool)),
        "scores": [c.column for c in configs],
        "units": [unit_entry(u) for u in units],
    }
    digest = hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:16]
    path = out / "_runs" / f"{digest}.json"
    found = _write_record_once(path, {**plan, "created_by": __version__})
    diffs = _differences({k: found.get(k) for k in plan}, plan)
    if diffs:  # the file named by this plan's digest holds another plan: it was edited
        raise RecordError(
            f"{path} does not hold the run it is named for ({diffs[0]}); it was changed after "
            "it was written: restore it or use another --out"
        )


def unit_meta(path: Path) -> dict[str, Any] | None:
    """What a unit file says of itself (its Parquet metadata), or ``None`` when it is not a
    readable unit file."""
    try:
        meta = parquet_kv_metadata(path)
    except Exception:
        return None  # unreadable: treated as not there (rewritten)
    try:
        return json.loads(meta[META_KEY])
    except (KeyError, ValueError):
        return None


def unit_entry(u: Unit) -> dict[str, Any]:
    """How the record names a unit: its shard, row range and the shard's fingerprint."""
    s = u.shard
    entry = {
        "unit": u.name,
        "shard": s.parquet.name + ("" if s.npz is None else f" + {s.npz.name}"),
        "start": u.start,
        "rows": u.rows,
        "fingerprint": s.fingerprint,
    }
    if s.npz is not None:  # its rows are scored only after the npz members' CRC-32 is checked
        entry["checked"] = CHECKED
    return entry


#: How a unit file says its npz's checksums were verified before it was scored (a unit file
#: without it, from a version that did not verify them, is scored again).
CHECKED = "crc32"
#: What names a unit's data: checked by every reader against the unit's plan.
PLAN_KEYS = ("unit", "fingerprint", "start", "rows")


def _made_from(entry: dict[str, Any]) -> str:
    start, rows = entry.get("start", 0), entry.get("rows", 0)
    return (
        f"unit {entry.get('unit')} ({entry.get('shard')} rows {start}..{start + rows}, "
        f"fingerprint {entry.get('fingerprint')})"
    )


def check_unit(out: Path, unit: Unit, meta: dict[str, Any] | None) -> None:
    """``RecordError`` when a unit file (``meta``; ``None``: no file) holds other data than
    ``unit``."""
    if meta is None:
        return
    want = unit_entry(unit)
    if any(meta.get(k) != want[k] for k in PLAN_KEYS):
        raise RecordError(
            f"{out / (unit.name + '.parquet')} holds scores of other data: it was made from "
            f"{_made_from(meta)}, but {unit.shard.describe()} is {_made_from(want)}; "
            "use another --out"
        )


def _expected_units(
    out: Path, record: dict[str, Any], columns: Sequence[str] | None
) -> dict[str, tuple[dict[str, Any], set[str]]]:
    """Per planned unit: its record entry and the score columns it must hold."""
    expected: dict[str, tuple[dict[str, Any], set[str]]] = {}
    for plan in record["runs"]:
        wanted = set(plan["scores"]) if columns is None else set(plan["scores"]) & set(columns)
        for u in plan["units"]:
            prev = expected.get(u["unit"])
            if prev is not None and prev[0]["fingerprint"] != u["fingerprint"]:
                raise RecordError(
                    f"{out}: runs disagree about unit {u['unit']} (two different inputs)"
                )
            expected[u["unit"]] = (u, (prev[1] if prev else set()) | wanted)
    return expected


def check_complete(
    out: PathLike | Loc, columns: Sequence[str] | None = None, units: Sequence[str] | None = None
) -> list[Loc]:
    """The unit files of a complete score directory, in unit order. ``RecordError`` when a
    planned unit lacks its file or one of the scores (``columns``: the scores that matter;
    default all recorded), or holds other data than its plan says. ``units``: check only
    these (what one run planned; another process may still be writing the others)."""
    out = location(out)
    record = read_record(out)
    if not record["runs"]:
        raise RecordError(f"{out} records no run yet; run `polars-curate score` first")
    digests = {col: r["digest"] for col, r in record["scores"].items()}
    unknown = [c for c in columns or () if c not in digests]
    if unknown:
        raise RecordError(
            f"{out} has no score {unknown[0]!r} (it has {', '.join(digests) or 'none'})"
        )
    expected = _expected_units(out, record, columns)
    names = sorted(expected if units is None else set(units) & set(expected))
    with ThreadPoolExecutor(max_workers=8) as ex:
        metas = list(ex.map(lambda n: unit_meta(out / f"{n}.parquet"), names))
    missing = []
    for name, meta in zip(names, metas):
        u, wanted = expected[name]
        if meta is None:
            missing.append(f"{name} (no file)")
            continue
        if any(meta.get(k) != u.get(k) for k in PLAN_KEYS):
            raise RecordError(
                f"{out / name}.parquet does not hold the data its run recorded: it holds "
                f"{_made_from(meta)}, the run planned {_made_from(u)}; run `polars-curate "
                "score` again to rescore it"
            )
        lacking = sorted(c for c in wanted if meta.get("scores", {}).get(c) != digests.get(c))
        if meta.get("checked") != u.get("checked", meta.get("checked")):
            missing.append(f"{name} (scored before its npz checksums were verified)")
        elif lacking:
            missing.append(f"{name} (no {', '.join(lacking)})")
    missing += _missing_groups(out, record, columns)
    if missing:
        raise RecordError(
            f"{out} is incomplete: {len(missing)} of {len(names)} units lack scores, e.g. "
            f"{'; '.join(missing[:3])}; run `polars-curate score` again to finish"
        )
    return [out / f"{n}.parquet" for n in names]


def _missing_groups(out: Loc, record: dict[str, Any], columns: Sequence[str] | None) -> list[str]:
    """The groups of each recorded grouped score (asked in ``columns``) without a result."""
    missing = []
    units = units_digest(recorded_units(out, record))
    for s, rec in grouped_scores(record, columns):
        for g, f in enumerate(group_results(out, s.column, rec["params"]["groups"])):
            meta = unit_meta(f) if f.exists() else None
            if not group_is_current(meta, rec["digest"], units):
                missing.append(f"{s.name} group {g} (no result over the recorded units)")
    return missing


def scan_scores(
    out: PathLike | Loc,
    columns: Sequence[str] | None = None,
    *,
    storage_options: dict[str, Any] | None = None,
) -> pl.LazyFrame:
    """The scores of a complete score directory as one lazy frame (``uid``, ``uid_hi``,
    ``uid_lo`` and the score columns); ``RecordError`` when it is incomplete. ``out`` may be
    in a bucket (``s3://``, with ``storage_options``). A grouped score (``semdedup``) is
    joined from its result files on the uid key (a hash join over the pool's keys: for
    pools larger than memory, ``select`` and ``report`` join a key partition at a time).

    Examples
    --------
    >>> import tempfile, polars as pl, polars_curate as pc
    >>> paths = pc.datasets.synthetic_pool(tempfile.mkdtemp(), n=500, d=16, shards=2)
    >>> out = paths["pool"].parent / "scores"
    >>> run = pc.score_pool(paths["pool"], out, scores=["clip"], progress=False)
    >>> run.units, run.scored_rows
    (2, 500)
    >>> lf = pc.scan_scores(out)
    >>> lf.collect_schema().names()
    ['uid', 'uid_hi', 'uid_lo', 'clip']
    >>> lf.select(pl.len()).collect().item()
    500
    """
    out = location(out, storage_options)
    files = check_complete(out, columns)
    lf = scan_parquet(files, missing_columns="insert", extra_columns="ignore")
    record = read_record(out)
    for s, rec in grouped_scores(record, columns):
        results = scan_parquet(group_results(out, s.column, rec["params"]["groups"]))
        lf = lf.join(results, on=["uid_hi", "uid_lo"], how="left", maintain_order="left")
    return lf


def grouped_scores(
    record: dict[str, Any], columns: Sequence[str] | None = None
) -> list[tuple[Score, dict[str, Any]]]:
    """The grouped scores the directory records (those in ``columns``), with their records."""
    return [
        (s, record["scores"][s.column])
        for s in SCORES.values()
        if s.kind == "grouped"
        and s.column in record["scores"]
        and (columns is None or s.column in columns)
    ]
