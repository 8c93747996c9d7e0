"""The main job: score a pool unit by unit into a score directory that says what it holds.

``score_pool`` plans (every argument, the pool and the directory's record checked before
anything is written), records, then hands the units to a runner (this process, or Ray) and
shows progress. The directory's layout and guarantees: :mod:`polars_curate.scoredir`; one
unit's work: :mod:`polars_curate.unit`; the scores and options: :mod:`polars_curate.scores`.

A rerun with other parameters is refused with the parameter's old and new value; a resume
checks every unit it skips against the record (another pool's data, a changed shard or target
is an error, never a silent mix) and finishes with output identical to an uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from polars_curate._types import PathLike
from polars_curate.atomic import remove_stale_temporaries
from polars_curate.grouped import GroupWork, groups_of
from polars_curate.pool import PoolError, Shard, Unit, check_agree, list_pool, plan_units
from polars_curate.progress import Progress
from polars_curate.runners import Runner, runner_for
from polars_curate.scoredir import (
    SPILL,
    RecordError,
    check_complete,
    check_records,
    check_unit,
    recorded_units,
    spill_file,
    unit_meta,
    unit_scores,
    write_records,
)
from polars_curate.scores import Arrays, ScoreConfig, ScoreOptions, configure, prepare_inputs
from polars_curate.storage import Loc, location
from polars_curate.unit import Work

__all__ = ["ScoreRun", "score_pool"]

_HINT = "choose with --model, --image-col, --text-col or --normsim-col"


@dataclass
class ScoreRun:
    """What :func:`score_pool` did."""

    out: Loc
    units: int
    rows: int
    scored_units: int = 0
    scored_rows: int = 0
    files: list[Loc] = field(default_factory=list)

    def __str__(self) -> str:
        done = self.units - self.scored_units
        return (
            f"{self.units} units ({self.rows:,} rows) in {self.out}: scored {self.scored_units} "
            f"({self.scored_rows:,} rows), {done} already done"
        )


@dataclass(frozen=True)
class _Plan:
    """A checked run: nothing of it has been written yet."""

    out: Loc
    options: ScoreOptions
    configs: list[ScoreConfig]
    arrays: Arrays
    units: list[Unit]
    runner: Runner


def _check_columns(shards: Sequence[Shard], configs: Sequence[ScoreConfig], arrays: Arrays) -> None:
    check_agree(shards, [e for c in configs for e in c.embeddings()])
    for s in shards:
        for c in configs:
            needs = c.score.needs
            for col in c.embeddings():
                _, width = s.require(col, f"for {c.name}", _HINT)
                if needs in arrays and width != arrays[needs].shape[1]:
                    raise PoolError(
                        f"{s.describe()}: column {col!r} is {width} wide but the {needs} is "
                        f"{arrays[needs].shape[1]} wide (--{needs})"
                    )


def _check_out(out: Loc, shards: Sequence[Shard]) -> None:
    out_abs = out.resolve()
    for s in shards:
        for f in (s.parquet, s.npz):
            if f is not None and f.resolve().parent == out_abs:
                raise RecordError(
                    f"--out {out} is the pool's own directory ({f.name} is a shard); "
                    "use another directory"
                )


def _plan(pool: Loc, out: Loc, options: ScoreOptions, storage: dict[str, Any] | None) -> _Plan:
    """Every argument, the pool and what ``out`` records, checked; nothing written."""
    arrays, infos = prepare_inputs(options, storage)
    configs = configure(options, infos)
    for c in configs:  # the plugin's own parameter checks
        if c.score.build is not None:
            c.expression(arrays)
    runner = runner_for(options)
    shards = list_pool(pool)
    _check_out(out, shards)
    _check_columns(shards, configs, arrays)
    units = plan_units(shards, options.unit_rows)
    if check_records(out, options.unit_rows, configs):
        for u in units:  # a resume checks every unit it would skip
            dest = out / f"{u.name}.parquet"
            if dest.exists():
                check_unit(out, u, unit_meta(dest))
    return _Plan(out, options, configs, arrays, units, runner)


def score_pool(
    pool: PathLike | Loc,
    out: PathLike | Loc,
    options: ScoreOptions | None = None,
    *,
    storage_options: dict[str, Any] | None = None,
    **changes: Any,
) -> ScoreRun:
    """Score every unit of ``pool`` into the score directory ``out`` (resumable).

    Parameters
    ----------
    pool
        A directory, glob or file of shards in either layout (see
        :func:`polars_curate.pool.list_pool`).
    out
        The score directory (created; a rerun resumes; see :mod:`polars_curate.scoredir`).
    options
        A :class:`~polars_curate.scores.ScoreOptions`; ``changes`` (its field names as
        keywords) override it. The main ones: ``scores`` (from ``ncl``, ``clip``,
        ``normsim-inf``, ``normsim-2``, any order; scores already in ``out`` with the same
        parameters are not recomputed), ``target`` (NormSim's downstream image embeddings,
        recorded by content, not by path), ``model``/``normsim_model`` (embedding prefixes) or
        ``image_col``/``text_col``/``normsim_col``, negCLIPLoss's ``batch_size``,
        ``num_batches``, ``temperature`` and ``seed`` (it batches within each unit),
        ``normalize``, ``unit_rows`` (``None``: one unit per shard), ``progress``, and ``ray``
        (``True`` or a cluster address: one Ray task per unit, ``ray_cpus`` CPUs each).
    storage_options
        For a pool or a score directory in a bucket (``s3://``): endpoint, region,
        credentials, as Polars takes them (default: the ``AWS_*`` environment and ``~/.aws``;
        see :mod:`polars_curate.storage`). Ray tasks get them with their units.

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
    pool, out = location(pool, storage_options), location(out, storage_options)
    plan = _plan(pool, out, ScoreOptions.of(options, **changes), storage_options)
    write_records(plan.out, plan.options.unit_rows, plan.configs, pool, plan.units)
    for d in (plan.out, plan.out / SPILL, *(plan.out / f"_{c.column}" for c in plan.configs)):
        remove_stale_temporaries(d)  # (the grouped pass writes in its own folders)
    run = _run(plan)
    grouped = [c for c in plan.configs if c.score.kind == "grouped"]
    for c in grouped:
        _run_groups(plan, c)
    # What select and report will check, checked now: exit 0 means they accept the directory.
    units = None if grouped else [u.name for u in plan.units]
    check_complete(plan.out, [c.column for c in plan.configs], units)
    return run


def _run(plan: _Plan) -> ScoreRun:
    units = plan.units
    run = ScoreRun(plan.out, len(units), sum(u.rows for u in units))
    bar = Progress(len(units), run.rows, enabled=plan.options.progress)
    try:
        work = Work(plan.out, tuple(plan.configs), plan.arrays)
        for u, n in plan.runner.run(units, work):
            bar.done(u.name, u.rows, skipped=n == 0)  # n = 0: a unit found finished
            run.scored_units += n > 0
            run.scored_rows += n
    finally:
        bar.close()
    run.files = [plan.out / f"{u.name}.parquet" for u in units]
    return run


def _respill(plan: _Plan, config: ScoreConfig, units: Sequence[str]) -> None:
    """Spill again the units whose spill is gone (deleted after a finished run) before groups
    are computed again; a unit of another run's plan cannot be, and is named."""
    lost = [n for n in units if not spill_file(plan.out, n).exists()]
    ours = [u for u in plan.units if u.name in set(lost)]
    others = sorted(set(lost) - {u.name for u in ours})
    if others:
        raise RecordError(
            f"{plan.out}: {config.name} needs the spill of unit {others[0]} (of another run's "
            "pool): rerun that run's `polars-curate score` command first"
        )
    work = Work(plan.out, (config,), plan.arrays, respill=True)
    for _ in plan.runner.run(ours, work):
        pass


def _run_groups(plan: _Plan, config: ScoreConfig) -> None:
    """A grouped score's second pass over every unit of every recorded run (clusters span the
    pool): refused while units of other runs are not scored yet."""
    units = recorded_units(plan.out)
    lacking = [n for n in units if unit_scores(plan.out, n).get(config.column) != config.digest]
    if lacking:
        raise RecordError(
            f"{plan.out}: {config.name}'s second pass needs every unit of the pool's runs; "
            f"{len(lacking)} are not scored yet (e.g. {lacking[0]}): rerun `polars-curate "
            "score` once the other runs have finished"
        )
    work = GroupWork(plan.out, config, plan.arrays, tuple(units))
    groups = groups_of(work)
    if not all(work.is_current(g) for g in groups):
        _respill(plan, config, units)
    bar = Progress(len(groups), 0, enabled=plan.options.progress, label=config.name)
    try:
        for g, n in plan.runner.run(groups, work):
            bar.done(g.name, n, skipped=n == 0)
    finally:
        bar.close()
