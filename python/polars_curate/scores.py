"""The score registry: one declaration per score of the job, and the options of a run.

Everything the job knows about a score is its entry in :data:`SCORES`: the name the command
line and ``select`` use, the column it writes, its label in the report, whether it needs a
NormSim target, which options it records and how its expression is built from them. The CLI's
flags are the fields of :class:`ScoreOptions`; the record (``_scores/<column>.json``), ``select``
and the report read names, columns and labels from here. Adding a score to the job is one entry
(plus its kernel and expression, and an option field if it has a new parameter).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, fields, replace
from functools import partial
from typing import Any

import numpy as np
import polars as pl

from polars_curate._expr import assign_clusters, clip_score, neg_clip_loss, normsim
from polars_curate._targets import target_array, target_key
from polars_curate._types import PathLike
from polars_curate._validate import as_bool, as_int
from polars_curate.pool import DEFAULT_UNIT_ROWS
from polars_curate.storage import located

__all__ = [
    "SCORES",
    "Score",
    "ScoreConfig",
    "ScoreOptions",
    "column_of",
    "configure",
    "label_of",
    "positive_int",
    "prepare_inputs",
    "score_of",
]


def _unit_rows(text: str) -> int | None:
    if text.strip().lower() in ("shard", "none"):
        return None
    try:
        int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a row count or 'shard', got {text!r}") from None
    return positive_int(text)


def positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def _names(text: str) -> tuple[str, ...]:
    return tuple(x.strip() for x in text.split(",") if x.strip())


#: What a score's parameters record of its input files (the key and shape), by input name.
Infos = dict[str, dict[str, Any]]
#: The values of its input files (float32), by input name.
Arrays = dict[str, np.ndarray]


def _ncl_params(o: ScoreOptions, infos: Infos) -> dict[str, Any]:
    return dict(
        image=o.image_column,
        text=o.text_column,
        batch_size=o.batch_size,
        num_batches=o.num_batches,
        temperature=o.temperature,
        seed=o.seed,
        normalize=o.normalize,
    )


def _ncl(p: dict[str, Any], arrays: Arrays) -> pl.Expr:
    return neg_clip_loss(
        p["image"],
        p["text"],
        batch_size=p["batch_size"],
        num_batches=p["num_batches"],
        temperature=p["temperature"],
        seed=p["seed"],
        normalize=p["normalize"],
    )


def _clip_params(o: ScoreOptions, infos: Infos) -> dict[str, Any]:
    return dict(image=o.image_column, text=o.text_column, normalize=o.normalize)


def _clip(p: dict[str, Any], arrays: Arrays) -> pl.Expr:
    return clip_score(p["image"], p["text"], normalize=p["normalize"])


def _normsim_params(power: float | str, o: ScoreOptions, infos: Infos) -> dict[str, Any]:
    return dict(embedding=o.normsim_column, p=power, target=infos["target"], normalize=o.normalize)


def _normsim(p: dict[str, Any], arrays: Arrays) -> pl.Expr:
    return normsim(p["embedding"], arrays["target"], p=p["p"], normalize=p["normalize"])


def _cluster_params(o: ScoreOptions, infos: Infos) -> dict[str, Any]:
    return dict(embedding=o.cluster_column, centroids=infos["centroids"], similarity="ip")


def _cluster(p: dict[str, Any], arrays: Arrays) -> pl.Expr:
    # Raw inner products: DataComp's rule, and spherical k-means' for unit centroids.
    found = assign_clusters(p["embedding"], arrays["centroids"], normalize=False)
    return found.struct.field("cluster")


def _semdedup_params(o: ScoreOptions, infos: Infos) -> dict[str, Any]:
    return dict(embedding=o.cluster_column, centroids=infos["centroids"], groups=o.groups)


@dataclass(frozen=True)
class Score:
    """One score of the job."""

    #: The name ``--scores`` and ``select``'s rules use.
    name: str
    #: The column it writes.
    column: str
    #: Its name in the report.
    label: str
    #: The parameters a run records for it, from the options (and its input files' keys).
    params: Callable[[ScoreOptions, Infos], dict[str, Any]]
    #: Its expression per unit, from the recorded parameters and the input files' values
    #: (``None``: computed in the grouped pass, see ``kind``).
    build: Callable[[dict[str, Any], Arrays], pl.Expr] | None
    #: The input file it needs: ``"target"`` (``--target``) or ``"centroids"``.
    needs: str | None = None
    #: ``"score"`` (a value to rank), ``"label"`` (the cluster: an id, not ranked) or
    #: ``"grouped"`` (SemDeDup: a second pass over the pool, grouped by cluster; its column is
    #: kept beside the unit files, in ``_semdedup/``).
    kind: str = "score"
    #: Scores it needs computed in the same directory (added to a run that asks for it).
    requires: tuple[str, ...] = ()
    #: The report draws its density against this score's (when both are there).
    read_against: str | None = None

    @property
    def needs_target(self) -> bool:
        return self.needs == "target"


#: Every score of the job, in column order.
SCORES: dict[str, Score] = {
    s.name: s
    for s in (
        Score("ncl", "ncl", "negCLIPLoss", _ncl_params, _ncl, read_against="clip"),
        Score("clip", "clip", "CLIPScore", _clip_params, _clip),
        Score(
            "normsim-inf",
            "normsim_inf",
            "NormSim∞",
            partial(_normsim_params, "inf"),
            _normsim,
            needs="target",
        ),
        Score(
            "normsim-2",
            "normsim_2",
            "NormSim₂",
            partial(_normsim_params, 2.0),
            _normsim,
            needs="target",
        ),
        Score("cluster", "cluster", "cluster", _cluster_params, _cluster, "centroids", "label"),
        Score(
            "semdedup",
            "semdedup",
            "SemDeDup",
            _semdedup_params,
            None,
            "centroids",
            "grouped",
            requires=("cluster",),
        ),
    )
}
_BY_COLUMN = {s.column: s for s in SCORES.values()}


def _flag(flag: str, help: str, **cli: Any) -> dict[str, Any]:
    """The command-line flag of a field of :class:`ScoreOptions` (argparse keywords)."""
    return {"flag": flag, "help": help, **cli}


@dataclass(frozen=True)
class ScoreOptions:
    """Everything a ``score`` run takes besides the pool and the score directory: one object
    for :func:`~polars_curate.score_pool` (its keywords are these fields) and the command line
    (each field is a flag)."""

    target: PathLike | np.ndarray | None = field(
        default=None,
        metadata=_flag("--target", ".npy/.parquet of downstream image embeddings (NormSim)"),
    )
    scores: Sequence[str] = field(
        default=("ncl", "clip"),
        metadata=_flag(
            "--scores",
            f"comma-separated, from {', '.join(SCORES)}, any order (default: ncl,clip)",
            type=_names,
        ),
    )
    centroids: PathLike | np.ndarray | None = field(
        default=None,
        metadata=_flag(
            "--centroids",
            ".npy of k-means centroids (from `cluster`, or DataComp's) for cluster and semdedup",
        ),
    )
    cluster_col: str | None = field(
        default=None,
        metadata=_flag("--cluster-col", "the column clustered (default: MODEL_img)"),
    )
    groups: int = field(
        default=256,
        metadata=_flag(
            "--groups",
            "semdedup's second pass: the pool's clusters in this many groups, one at a time "
            "(memory: a few times the pool's clustered embeddings / N; default 256)",
            type=int,
        ),
    )
    model: str = field(
        default="l14",
        metadata=_flag("--model", "embedding prefix: MODEL_img, MODEL_txt (default l14)"),
    )
    image_col: str | None = field(
        default=None, metadata=_flag("--image-col", "image column (default: MODEL_img)")
    )
    text_col: str | None = field(
        default=None, metadata=_flag("--text-col", "text column (default: MODEL_txt)")
    )
    normsim_model: str | None = field(
        default=None,
        metadata=_flag(
            "--normsim-model", "embedding prefix for NormSim (default: --model), e.g. b32"
        ),
    )
    normsim_col: str | None = field(
        default=None,
        metadata=_flag("--normsim-col", "NormSim's image column (default: NORMSIM_MODEL_img)"),
    )
    batch_size: int = field(
        default=32768, metadata=_flag("--batch-size", "negCLIPLoss batch B (32768)", type=int)
    )
    num_batches: int = field(
        default=10, metadata=_flag("--num-batches", "negCLIPLoss partitions K (10)", type=int)
    )
    temperature: float = field(
        default=0.01, metadata=_flag("--temperature", "negCLIPLoss tau (0.01)", type=float)
    )
    seed: int = field(default=0, metadata=_flag("--seed", "negCLIPLoss seed (0)", type=int))
    normalize: bool = field(
        default=True,
        metadata=_flag(
            "--no-normalize",
            "use the embeddings as stored (the paper's code does not re-normalise DataComp's "
            "float16 vectors)",
            action="store_false",
        ),
    )
    unit_rows: int | None = field(
        default=DEFAULT_UNIT_ROWS,
        metadata=_flag(
            "--unit-rows",
            "largest unit of work; bigger files are cut at row groups "
            f"(default {DEFAULT_UNIT_ROWS:,}; 'shard': one unit per shard)",
            type=_unit_rows,
            metavar="N",
        ),
    )
    ray: str | bool | None = field(
        default=None,
        metadata=_flag(
            "--ray",
            "one Ray task per unit, on the cluster at ADDRESS (default: RAY_ADDRESS or a local "
            'instance); needs pip install "polars-curate[ray]"',
            nargs="?",
            const=True,
            metavar="ADDRESS",
        ),
    )
    ray_cpus: int = field(
        default=1, metadata=_flag("--ray-cpus", "CPUs per Ray task (1)", type=int)
    )
    progress: bool = field(
        default=True, metadata=_flag("--no-progress", "no progress output", action="store_false")
    )

    @classmethod
    def of(cls, options: ScoreOptions | None = None, **changes: Any) -> ScoreOptions:
        """``options`` (default: the defaults) with ``changes``; ``TypeError`` naming an unknown
        option. A single string for ``scores`` is a comma-separated list."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(changes) - known)
        if unknown:
            raise TypeError(f"unknown option {unknown[0]!r}; options: {', '.join(sorted(known))}")
        opts = replace(options or cls(), **changes)
        scores = _names(opts.scores) if isinstance(opts.scores, str) else tuple(opts.scores)
        unit_rows = None if opts.unit_rows is None else as_int(opts.unit_rows, "unit_rows")
        return replace(
            opts,
            scores=scores,
            normalize=as_bool(opts.normalize, "normalize"),
            unit_rows=unit_rows,
            ray_cpus=as_int(opts.ray_cpus, "ray_cpus"),
            groups=as_int(opts.groups, "groups", 1, 1 << 20),
        )

    @property
    def image_column(self) -> str:
        return self.image_col or f"{self.model}_img"

    @property
    def text_column(self) -> str:
        return self.text_col or f"{self.model}_txt"

    @property
    def cluster_column(self) -> str:
        return self.cluster_col or self.image_column

    @property
    def normsim_column(self) -> str:
        return self.normsim_col or f"{self.normsim_model or self.model}_img"


def column_of(name: str) -> str:
    """The column of score ``name`` (a registry name or already a column)."""
    return SCORES[name].column if name in SCORES else name


def score_of(column: str) -> Score | None:
    """The registry's score writing ``column``, if any."""
    return _BY_COLUMN.get(column)


def label_of(column: str) -> str:
    """``column (Label)`` for a score column of the registry, else the column."""
    s = _BY_COLUMN.get(column)
    return f"{column} ({s.label})" if s else column


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

    @property
    def score(self) -> Score:
        return SCORES[self.name]

    @property
    def needs_target(self) -> bool:
        return self.score.needs_target

    def embeddings(self) -> list[str]:
        p = self.params
        return [p["embedding"]] if "embedding" in p else [p["image"], p["text"]]

    def expression(self, arrays: Arrays) -> pl.Expr:
        build = self.score.build
        assert build is not None, f"{self.name} is computed in the grouped pass"
        return build(self.params, arrays)


def _asked(scores: Sequence[str]) -> list[str]:
    """The known scores among ``scores`` and those they require."""
    known = [s for s in scores if s in SCORES]
    return known + [r for s in known for r in SCORES[s].requires]


def configure(options: ScoreOptions, infos: Infos) -> list[ScoreConfig]:
    """The scores ``options`` asks for (and those they require), in column order (the order of
    ``scores`` does not matter); ``ValueError`` naming an unknown score or a missing input."""
    asked = list(options.scores)
    unknown = [s for s in asked if s not in SCORES]
    if unknown:
        raise ValueError(f"unknown score {unknown[0]!r}; choose from {', '.join(SCORES)}")
    if not asked:
        raise ValueError("no scores asked for; choose from " + ", ".join(SCORES))
    asked = _asked(asked)
    out = []
    for s in SCORES.values():
        if s.name not in asked:
            continue
        if s.needs is not None and s.needs not in infos:
            what = "downstream image embeddings" if s.needs == "target" else "k-means centroids"
            raise ValueError(f"score {s.name!r} needs --{s.needs} ({what})")
        out.append(ScoreConfig(s.name, s.column, s.params(options, infos)))
    return out


def prepare_inputs(
    options: ScoreOptions, storage_options: dict[str, Any] | None = None
) -> tuple[Arrays, Infos]:
    """The input files the scores asked for need (the NormSim target, the centroids): their
    float32 values and what the record keeps of them (content key and shape); a URL is read
    with ``storage_options``."""
    needed = {SCORES[s].needs for s in _asked(options.scores)} - {None}
    arrays: Arrays = {}
    infos: Infos = {}
    for name in sorted(needed):  # type: ignore[type-var]
        given = located(getattr(options, name), storage_options)
        if given is None:
            continue
        # NormSim's target follows --no-normalize; centroids are used as they are.
        norm = options.normalize and name == "target"
        arrays[name], infos[name] = read_input(given, name, normalize=norm)
    return arrays, infos


def read_input(given: Any, name: str, *, normalize: bool) -> tuple[np.ndarray, dict[str, Any]]:
    """An input file's float32 values (see :func:`target_array`) and what a record keeps of it:
    its content key and shape, by which a later run or ``select`` recognises it."""
    f32, _ = target_array(given, name, normalize=normalize)
    return f32, {"key": f"{target_key(f32):016x}", "rows": f32.shape[0], "dim": f32.shape[1]}
