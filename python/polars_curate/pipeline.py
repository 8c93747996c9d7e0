"""The main job: score a pool unit by unit into a score directory that says what it holds.

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

Everything is validated before anything is written; a rerun with other parameters is refused
with the parameter's old and new value; a resume checks every unit it skips against the record
(another pool's data, a changed shard or target is an error, never a silent mix). Each unit is
written under a per-process temporary name, fsynced and renamed, so a crash or ``kill -9`` at
any moment leaves only complete files, and a rerun finishes with output identical to an
uninterrupted run. :func:`check_complete` is what ``select`` and ``report`` call first.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Union

import numpy as np
import polars as pl

import polars_curate as pc
from polars_curate import _expr
from polars_curate.io import atomic_write, remove_stale_temporaries, uid_key_exprs
from polars_curate.pool import (
    DEFAULT_UNIT_ROWS,
    PoolError,
    Shard,
    Unit,
    list_pool,
    plan_units,
    read_unit,
)
from polars_curate.progress import Progress

__all__ = [
    "SCORES",
    "RecordError",
    "ScoreRun",
    "check_complete",
    "read_record",
    "scan_scores",
    "score_pool",
]

PathLike = Union[str, "os.PathLike[str]"]

#: Score names (as the CLI spells them) and the column each one writes, in column order.
SCORES = {"ncl": "ncl", "clip": "clip", "normsim-inf": "normsim_inf", "normsim-2": "normsim_2"}
FORMAT = 1
DIR_RECORD = "_polars_curate.json"
META_KEY = "polars_curate"


class RecordError(ValueError):
    """A score directory that does not hold what is asked (other data, other parameters,
    missing units); the message says what differs and how to proceed."""


@dataclass(frozen=True)
class ScoreConfig:
    """One score as a run computes it: everything a worker needs to build its expression."""

    name: str
    column: str
    params: dict[str, Any]

    @property
    def digest(self) -> str:
        blob = json.dumps({"score": self.name, "params": self.params}, sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def embeddings(self) -> list[str]:
        p = self.params
        return [p["embedding"]] if "embedding" in p else [p["image"], p["text"]]

    def expression(self, target: np.ndarray | None) -> pl.Expr:
        p = self.params
        if self.name == "ncl":
            return pc.neg_clip_loss(
                p["image"],
                p["text"],
                batch_size=p["batch_size"],
                num_batches=p["num_batches"],
                temperature=p["temperature"],
                seed=p["seed"],
                normalize=p["normalize"],
            )
        if self.name == "clip":
            return pc.clip_score(p["image"], p["text"], normalize=p["normalize"])
        assert target is not None
        return pc.normsim(p["embedding"], target, p=p["p"], normalize=p["normalize"])


@dataclass
class ScoreRun:
    """What :func:`score_pool` did."""

    out: Path
    units: int
    rows: int
    scored_units: int = 0
    scored_rows: int = 0
    files: list[Path] = field(default_factory=list)

    def __str__(self) -> str:
        done = self.units - self.scored_units
        return (
            f"{self.units} units ({self.rows:,} rows) in {self.out}: scored {self.scored_units} "
            f"({self.scored_rows:,} rows), {done} already done"
        )


def _configs(
    scores: Sequence[str],
    *,
    image_col: str,
    text_col: str,
    normsim_col: str,
    target_info: dict[str, Any] | None,
    batch_size: int,
    num_batches: int,
    temperature: float,
    seed: int,
    normalize: bool,
) -> list[ScoreConfig]:
    unknown = [s for s in scores if s not in SCORES]
    if unknown:
        raise ValueError(f"unknown score {unknown[0]!r}; choose from {', '.join(SCORES)}")
    if not scores:
        raise ValueError("no scores asked for; choose from " + ", ".join(SCORES))
    out = []
    for s in SCORES:  # canonical order: the order of --scores does not matter
        if s not in scores:
            continue
        if s == "ncl":
            params = dict(
                image=image_col,
                text=text_col,
                batch_size=batch_size,
                num_batches=num_batches,
                temperature=temperature,
                seed=seed,
                normalize=normalize,
            )
        elif s == "clip":
            params = dict(image=image_col, text=text_col, normalize=normalize)
        else:
            if target_info is None:
                raise ValueError(f"score {s!r} needs --target (downstream image embeddings)")
            p: float | str = "inf" if s == "normsim-inf" else 2.0
            params = dict(embedding=normsim_col, p=p, target=target_info, normalize=normalize)
        out.append(ScoreConfig(s, SCORES[s], params))
    return out


# ----------------------------------------------------------------------------- the record


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise RecordError(f"{path}: unreadable record ({e})") from None


def _write_once(path: Path, record: dict[str, Any]) -> dict[str, Any]:
    """Write ``record`` to ``path`` unless it exists (atomically, also against a concurrent
    writer); return what ``path`` holds afterwards."""
    if path.exists():
        return _read_json(path)
    blob = json.dumps(record, indent=1, sort_keys=True).encode()
    tmp = path.with_name(f".{path.name}.{os.getpid()}.new")
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(tmp, "wb") as f:
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    try:
        os.link(tmp, path)  # fails if another process made it first
    except FileExistsError:
        pass
    finally:
        tmp.unlink(missing_ok=True)
    return _read_json(path)


def read_record(out: PathLike) -> dict[str, Any]:
    """The record of a score directory: ``{"unit_rows", "scores": {column: record},
    "runs": [plan, ...]}``. ``RecordError`` when ``out`` is not a score directory."""
    out = Path(out)
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
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new)):
            out += _differences(old.get(k), new.get(k), f"{prefix}{'.' if prefix else ''}{k}")
        return out
    return [] if old == new else [f"`{prefix}` differs: recorded {old!r}, now {new!r}"]


def _check_records(out: Path, unit_rows: int | None, configs: list[ScoreConfig]) -> bool:
    """Compare a run with what ``out`` already records; ``RecordError`` naming the first
    parameter that differs. Returns whether ``out`` already is a score directory."""
    if not out.exists():
        return False
    if not out.is_dir():
        raise RecordError(f"--out {out} exists and is not a directory")
    if not (out / DIR_RECORD).exists():
        stray = [p.name for p in out.iterdir() if not p.name.startswith(".")]
        if stray:
            raise RecordError(
                f"--out {out} holds files that are not a polars-curate score directory "
                f"(e.g. {stray[0]}); use an empty or new directory"
            )
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


def _unit_meta(path: Path) -> dict[str, Any] | None:
    try:
        meta = pl.read_parquet_metadata(path)
    except Exception:
        return None  # unreadable: treated as not there (rewritten)
    try:
        return json.loads(meta[META_KEY])
    except (KeyError, ValueError):
        return None


def _unit_entry(u: Unit) -> dict[str, Any]:
    s = u.shard
    return {
        "unit": u.name,
        "shard": s.parquet.name + ("" if s.npz is None else f" + {s.npz.name}"),
        "start": u.start,
        "rows": u.rows,
        "fingerprint": s.fingerprint,
    }


def _check_unit(out: Path, unit: Unit, meta: dict[str, Any] | None) -> None:
    if meta is None:
        return
    want = _unit_entry(unit)
    for k in ("fingerprint", "start", "rows"):
        if meta.get(k) != want[k]:
            start, rows = meta.get("start", 0), meta.get("rows", 0)
            raise RecordError(
                f"{out / (unit.name + '.parquet')} holds scores of other data: it was made from "
                f"{meta.get('shard')} rows {start}..{start + rows} "
                f"(fingerprint {meta.get('fingerprint')}), but {unit.shard.describe()} rows "
                f"{unit.start}..{unit.start + unit.rows} has fingerprint {unit.shard.fingerprint}; "
                "use another --out"
            )


# ----------------------------------------------------------------------------- one unit


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def score_unit(
    unit: Unit, out: Path, configs: Sequence[ScoreConfig], target: np.ndarray | None
) -> int:
    """Score one unit into ``out/<unit>.parquet``, adding to what the file already holds;
    returns the rows scored (0 when everything asked was there). Errors name the shard."""
    dest = out / f"{unit.name}.parquet"
    meta = _unit_meta(dest) if dest.exists() else None
    _check_unit(out, unit, meta)
    have = (meta or {}).get("scores", {})
    need = [c for c in configs if have.get(c.column) != c.digest]
    if not need:
        return 0
    cols = list(dict.fromkeys(e for c in need for e in c.embeddings()))
    where = unit.shard.describe()
    try:
        df = read_unit(unit, ["uid"], cols)
        if df["uid"].dtype != pl.String:
            raise PoolError(f"column 'uid' must be String, got {df['uid'].dtype}")
        keys = df.select("uid", *uid_key_exprs("uid"))
        bad = (
            keys["uid_hi"].is_null()
            | keys["uid_lo"].is_null()
            | (keys["uid"].str.len_bytes() != 32)
        )
        if bad.any():
            row = int(bad.arg_max())
            uid = keys["uid"][row]
            raise PoolError(
                f"invalid uid at row {unit.start + row}: {uid!r} (expected 32 hex digits)"
            )
        scores = df.select(**{c.column: c.expression(target) for c in need})
    except PoolError as e:
        msg = str(e)
        raise PoolError(
            msg if msg.startswith(str(unit.shard.parquet)) else f"{where}: {msg}"
        ) from None
    except Exception as e:  # a data problem the plugin reports (width, dtype, ...)
        if "interrupted (KeyboardInterrupt)" in str(e):
            raise KeyboardInterrupt from None
        raise PoolError(f"{where}: {_first_line(e)}") from None
    if meta is not None:
        kept = pl.read_parquet(dest).drop([c.column for c in need], strict=False)
        if not kept["uid"].equals(keys["uid"]):
            raise RecordError(f"{dest}: its uids differ from {where}; use another --out")
        keys = kept
    table = keys.hstack(scores)
    ordered = ["uid", "uid_hi", "uid_lo", *[c for c in SCORES.values() if c in table.columns]]
    table = table.select(ordered)
    entry = _unit_entry(unit)
    entry["scores"] = {**have, **{c.column: c.digest for c in need}}
    entry["created_by"] = pc.__version__
    blob = json.dumps(entry, sort_keys=True)
    atomic_write(dest, lambda f: table.write_parquet(f, metadata={META_KEY: blob}))
    return unit.rows


# ----------------------------------------------------------------------------- the run


def _load_target(target: PathLike | np.ndarray | None, normalize: bool):
    if target is None:
        return None, None
    f32, _ = _expr.target_array(target, "target", normalize=normalize)
    info = {"key": f"{_expr.target_key(f32):016x}", "rows": f32.shape[0], "dim": f32.shape[1]}
    return f32, info


def _check_columns(
    shards: Sequence[Shard], configs: Sequence[ScoreConfig], dim: int | None
) -> None:
    for s in shards:
        for c in configs:
            for col in c.embeddings():
                got = s.embedding(col)
                if got is None:
                    have = ", ".join(n for n, _, _ in s.embeddings) or "none"
                    raise PoolError(
                        f"{s.describe()}: no embedding column {col!r} for {c.name} "
                        f"(embedding columns there: {have}; choose with --model, --image-col, "
                        "--text-col or --normsim-col)"
                    )
                if dim is not None and c.name.startswith("normsim") and got[1] != dim:
                    raise PoolError(
                        f"{s.describe()}: column {col!r} is {got[1]} wide but the target is "
                        f"{dim} wide"
                    )


def score_pool(
    pool: PathLike,
    out: PathLike,
    *,
    target: PathLike | np.ndarray | None = None,
    scores: Sequence[str] = ("ncl", "clip"),
    model: str = "l14",
    normsim_model: str | None = None,
    image_col: str | None = None,
    text_col: str | None = None,
    normsim_col: str | None = None,
    batch_size: int = 32768,
    num_batches: int = 10,
    temperature: float = 0.01,
    seed: int = 0,
    normalize: bool = True,
    unit_rows: int | None = DEFAULT_UNIT_ROWS,
    progress: bool = True,
    ray: str | bool | None = None,
    ray_cpus: int = 1,
) -> ScoreRun:
    """Score every unit of ``pool`` into the score directory ``out`` (resumable).

    Parameters
    ----------
    pool
        A directory, glob or file of shards in either layout (see
        :func:`polars_curate.pool.list_pool`).
    out
        The score directory (created; a rerun resumes; see the module docs for its record).
    target
        NormSim's target: image embeddings of downstream data (``.npy``/``.parquet`` path or
        array). Recorded by content, not by path.
    scores
        From ``ncl`` (negCLIPLoss), ``clip`` (CLIPScore), ``normsim-inf``, ``normsim-2``; in any
        order. Scores already in ``out`` (same parameters) are not recomputed.
    model, normsim_model
        Embedding prefix of the CLIP teacher (``l14`` -> columns ``l14_img``/``l14_txt``) and of
        NormSim (default: ``model``).
    image_col, text_col, normsim_col
        Name the columns instead of the prefixes.
    batch_size, num_batches, temperature, seed
        negCLIPLoss's ``B``, ``K``, ``tau`` and seed; it batches within each unit.
    normalize
        L2-normalise embeddings first (default). ``False`` reproduces pipelines that use
        DataComp's float16 vectors as they are.
    unit_rows
        Largest unit (default :data:`~polars_curate.pool.DEFAULT_UNIT_ROWS`; ``None``: one unit
        per shard, however large).
    progress
        A bar on a terminal, plain lines otherwise.
    ray
        Run one Ray task per unit: ``True`` (``ray.init()``: ``RAY_ADDRESS`` or a local
        instance) or a cluster address. Needs ``pip install "polars-curate[ray]"``.
    ray_cpus
        CPUs per Ray task (the plugin's and Polars' threads in that task).

    Examples
    --------
    >>> import tempfile, polars as pl, polars_curate as pc
    >>> from polars_curate.datasets import synthetic_pool
    >>> tmp = tempfile.mkdtemp()
    >>> paths = synthetic_pool(tmp, n=600, d=16, shards=2)
    >>> run = pc.score_pool(paths["pool"], f"{tmp}/scores", target=paths["target"],
    ...                     scores=["ncl", "normsim-inf"], batch_size=128, progress=False)
    >>> run.units, run.scored_rows
    (2, 600)
    >>> pc.scan_scores(f"{tmp}/scores").collect().columns
    ['uid', 'uid_hi', 'uid_lo', 'ncl', 'normsim_inf']
    >>> pc.score_pool(paths["pool"], f"{tmp}/scores", target=paths["target"],
    ...               scores=["normsim-inf", "ncl"], batch_size=128, progress=False).scored_rows
    0
    """
    out = Path(out)
    normalize = _expr._bool(normalize, "normalize")
    normsim_model = normsim_model or model
    # 1. Every argument, before anything is written.
    if unit_rows is not None:
        unit_rows = _expr._int(unit_rows, "unit_rows")
    f32, target_info = (
        _load_target(target, normalize)
        if any(s.startswith("normsim") for s in scores)
        else (None, None)
    )
    configs = _configs(
        list(scores),
        image_col=image_col or f"{model}_img",
        text_col=text_col or f"{model}_txt",
        normsim_col=normsim_col or f"{normsim_model}_img",
        target_info=target_info,
        batch_size=batch_size,
        num_batches=num_batches,
        temperature=temperature,
        seed=seed,
        normalize=normalize,
    )
    for c in configs:  # the plugin's own parameter checks
        c.expression(f32)
    runner = None
    if ray not in (None, False):
        from polars_curate.distributed import RayRunner

        runner = RayRunner(ray, cpus=_expr._int(ray_cpus, "ray_cpus"))
    shards = list_pool(pool)
    out_abs = out.resolve()
    for s in shards:
        for f in (s.parquet, s.npz):
            if f is not None and f.resolve().parent == out_abs:
                raise RecordError(
                    f"--out {out} is the pool's own directory ({f.name} is a shard); "
                    "use another directory"
                )
    _check_columns(shards, configs, None if f32 is None else f32.shape[1])
    units = plan_units(shards, unit_rows)
    exists = _check_records(out, unit_rows, configs)
    for u in units:  # a resume checks every unit it would skip
        dest = out / f"{u.name}.parquet"
        if exists and dest.exists():
            _check_unit(out, u, _unit_meta(dest))
    # 2. The record.
    _write_once(out / DIR_RECORD, {"format": FORMAT, "unit_rows": unit_rows})
    for c in configs:
        _write_once(
            out / "_scores" / f"{c.column}.json",
            {
                "score": c.name,
                "column": c.column,
                "params": c.params,
                "digest": c.digest,
                "created_by": pc.__version__,
            },
        )
    plan = {
        "pool": str(Path(pool)),
        "scores": [c.column for c in configs],
        "units": [_unit_entry(u) for u in units],
    }
    digest = hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()[:16]
    _write_once(out / "_runs" / f"{digest}.json", {**plan, "created_by": pc.__version__})
    remove_stale_temporaries(out)
    # 3. The units.
    run = ScoreRun(out, len(units), sum(u.rows for u in units))
    bar = Progress(len(units), run.rows, enabled=progress)
    try:
        done = (
            ((u, score_unit(u, out, configs, f32)) for u in units)
            if runner is None
            else runner.run(units, out.absolute(), configs, f32)
        )
        for u, n in done:  # n = rows scored now; 0 for a unit found finished
            bar.done(u.name, u.rows, skipped=n == 0)
            run.scored_units += n > 0
            run.scored_rows += n
    finally:
        bar.close()
    run.files = [out / f"{u.name}.parquet" for u in units]
    return run


# ----------------------------------------------------------------------------- reading back


def check_complete(out: PathLike, columns: Sequence[str] | None = None) -> list[Path]:
    """The unit files of a complete score directory, in unit order. ``RecordError`` when a
    planned unit lacks its file or one of the scores (``columns``: the scores that matter;
    default all recorded), or holds other data than its plan says."""
    out = Path(out)
    record = read_record(out)
    if not record["runs"]:
        raise RecordError(f"{out} records no run yet; run `polars-curate score` first")
    digests = {col: r["digest"] for col, r in record["scores"].items()}
    if columns is not None:
        unknown = [c for c in columns if c not in digests]
        if unknown:
            raise RecordError(
                f"{out} has no score {unknown[0]!r} (it has {', '.join(digests) or 'none'})"
            )
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
    names = sorted(expected)
    with ThreadPoolExecutor(max_workers=8) as ex:
        metas = list(ex.map(lambda n: _unit_meta(out / f"{n}.parquet"), names))
    missing = []
    for name, meta in zip(names, metas):
        u, wanted = expected[name]
        if meta is None:
            missing.append(f"{name} (no file)")
            continue
        if meta.get("fingerprint") != u["fingerprint"]:
            raise RecordError(f"{out / name}.parquet does not hold the data its run recorded")
        lacking = sorted(c for c in wanted if meta.get("scores", {}).get(c) != digests.get(c))
        if lacking:
            missing.append(f"{name} (no {', '.join(lacking)})")
    if missing:
        raise RecordError(
            f"{out} is incomplete: {len(missing)} of {len(names)} units lack scores, e.g. "
            f"{'; '.join(missing[:3])}; run `polars-curate score` again to finish"
        )
    return [out / f"{n}.parquet" for n in names]


def scan_scores(out: PathLike, columns: Sequence[str] | None = None) -> pl.LazyFrame:
    """The scores of a complete score directory as one lazy frame (``uid``, ``uid_hi``,
    ``uid_lo`` and the score columns); ``RecordError`` when it is incomplete.

    Examples
    --------
    >>> import tempfile, polars as pl, polars_curate as pc
    >>> from polars_curate.datasets import synthetic_pool
    >>> tmp = tempfile.mkdtemp()
    >>> paths = synthetic_pool(tmp, n=500, d=16, shards=2)
    >>> _ = pc.score_pool(paths["pool"], f"{tmp}/s", scores=["clip"], progress=False)
    >>> lf = pc.scan_scores(f"{tmp}/s")
    >>> lf.collect_schema().names()
    ['uid', 'uid_hi', 'uid_lo', 'clip']
    >>> lf.select(pl.len()).collect().item()
    500
    """
    files = check_complete(out, columns)
    return pl.scan_parquet(files, missing_columns="insert", extra_columns="ignore")


def score_columns(scores_dir: PathLike) -> pl.DataFrame:
    """All scores of a complete directory as one frame (small pools and reports)."""
    return scan_scores(scores_dir).collect()
