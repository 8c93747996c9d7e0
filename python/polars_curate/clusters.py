"""Clusters of a pool: spherical k-means fitted on a seeded sample drawn while streaming the
pool, and DataComp's image-based filter (the clusters a downstream target hits).

* The **sample** is drawn by uid, not by position: a row is in it when ``uid_hi XOR m(seed)``
  is among the ``sample_rows`` smallest (or below ``fraction * 2^64``), ``m`` a fixed mix of the
  seed. DataComp's uids are hashes, so this is a uniform sample, and it does not depend on the
  files' order, their listing or the threads. Memory: the sample and the centroids.
* **k-means** is :func:`polars_curate._internal.kmeans_fit` (the Rust kernel
  ``kernels::scores::kmeans``): seeded random init, each iteration's assignment on the fused
  argmax kernel, the objective and the rows that moved reported after every iteration.
* **Image-based**: each target embedding (ImageNet-1k train, in DataComp) picks its nearest
  centroid by raw inner product; a pool row is kept when its cluster was picked
  (``baselines/apply_filter.py``).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import polars as pl

from polars_curate import _internal
from polars_curate._expr import assign_clusters
from polars_curate._targets import target_array
from polars_curate._types import PathLike, TargetLike
from polars_curate._validate import as_int, as_seed
from polars_curate.atomic import write_atomic
from polars_curate.pool import scan_pool
from polars_curate.storage import Loc, location
from polars_curate.uids import uid_key_exprs

__all__ = ["Fit", "fit_centroids", "sample_pool", "target_clusters"]


def _seed_mix(seed: int) -> int:
    """SplitMix64's finaliser of ``seed``: the XOR mask that orders uids for a sample."""
    z = (seed + 0x9E3779B97F4A7C15) & (2**64 - 1)
    z = ((z ^ (z >> 30)) * 0xBF58476D1CE4E5B9) & (2**64 - 1)
    z = ((z ^ (z >> 27)) * 0x94D049BB133111EB) & (2**64 - 1)
    return z ^ (z >> 31)


def sample_pool(
    pool: PathLike | Loc,
    column: str,
    *,
    fraction: float | None = None,
    rows: int | None = None,
    seed: int = 0,
    storage_options: dict[str, Any] | None = None,
) -> pl.Series:
    """The embeddings of a seeded sample of the pool's rows (``fraction`` of them, or ``rows``
    of them), in sample order (see the module docs); streams the pool, holds the sample."""
    if (fraction is None) == (rows is None):
        raise ValueError("give one of --sample (a fraction) and --sample-rows")
    if fraction is not None and not 0 < float(fraction) <= 1:
        raise ValueError(f"--sample must be in (0, 1], got {fraction}")
    rows = None if rows is None else as_int(rows, "sample_rows")
    seed = as_seed(seed)
    lf = scan_pool(pool, embeddings=[column], storage_options=storage_options)
    if column not in lf.collect_schema():
        raise ValueError(f"pool {pool}: no embedding column {column!r}")
    key = (pl.col("uid_hi") ^ pl.lit(_seed_mix(seed), dtype=pl.UInt64)).alias("__key")
    lf = lf.select(*uid_key_exprs("uid"), column).with_columns(key)
    bad = lf.select(pl.col("uid_hi").is_null().sum()).collect(engine="streaming").item()
    if bad:
        raise ValueError(f"pool {pool}: {bad} rows have no valid uid (32 hex digits)")
    if rows is not None:
        picked = lf.bottom_k(rows, by=["__key", "uid_lo"])
    else:
        cut = min(int(float(fraction) * 2**64), 2**64 - 1)  # type: ignore[arg-type]
        picked = lf.filter(pl.col("__key") <= pl.lit(cut, dtype=pl.UInt64))
    got = picked.collect(engine="streaming").sort("__key", "uid_lo")
    return got[column]


@dataclass
class Fit:
    """What :func:`fit_centroids` did."""

    centroids: np.ndarray
    sample_rows: int
    objectives: list[float] = field(default_factory=list)
    moved: list[int] = field(default_factory=list)
    empty: list[int] = field(default_factory=list)


def _progress(fit: Fit, iters: int, enabled: bool) -> Callable[[int, float, int, int], bool]:
    def step(it: int, objective: float, moved: int, empty: int) -> bool:
        fit.objectives.append(objective)
        fit.moved.append(moved)
        fit.empty.append(empty)
        if enabled:
            reseeded = f", {empty} empty clusters re-seeded" if empty else ""
            print(
                f"cluster: iteration {it + 1}/{iters}: objective {objective:,.4f} "
                f"(mean cosine {objective / max(fit.sample_rows, 1):.4f}), "
                f"{moved:,} rows moved{reseeded}",
                file=sys.stderr,
                flush=True,
            )
        return True

    return step


def fit_centroids(
    pool: PathLike | Loc,
    out: PathLike | Loc | None,
    *,
    k: int,
    column: str = "l14_img",
    sample: float | None = None,
    sample_rows: int | None = None,
    iters: int = 20,
    seed: int = 0,
    progress: bool = True,
    storage_options: dict[str, Any] | None = None,
) -> Fit:
    """Spherical k-means of a seeded sample of the pool's ``column``; the ``k x d`` unit
    centroids written to ``out`` (``.npy``, atomically; ``None``: not written). ``iters=0``
    gives the seeded initial centroids (``k`` distinct sample rows, normalised).

    Examples
    --------
    >>> import tempfile
    >>> paths = pc.datasets.synthetic_pool(tempfile.mkdtemp(), n=2000, d=16, shards=2)
    >>> fit = pc.clusters.fit_centroids(paths["pool"], None, k=8, sample=0.5, iters=5,
    ...                                 progress=False)
    >>> fit.centroids.shape, len(fit.objectives), fit.moved[-1] < fit.moved[0]
    ((8, 16), 5, True)
    """
    k, iters = as_int(k, "k", hi=2**32 - 1), as_int(iters, "iters", lo=0)
    rows = sample_pool(
        pool, column, fraction=sample, rows=sample_rows, seed=seed, storage_options=storage_options
    )
    fit = Fit(np.zeros((0, 0), np.float32), rows.len())
    data = _internal.kmeans_fit(rows, k, iters, as_seed(seed), _progress(fit, iters, progress))
    fit.centroids = np.frombuffer(data, dtype="<f4").reshape(k, -1).copy()
    if out is not None:
        dest = location(out, storage_options)
        write_atomic(dest, lambda f: np.save(f, fit.centroids, allow_pickle=False))
    return fit


def target_clusters(target: TargetLike, centroids: TargetLike) -> np.ndarray:
    """The clusters a target picks (DataComp's image-based filter): the distinct
    ``argmax_j <t, c_j>`` over the target's rows, by raw inner product, sorted.

    Examples
    --------
    >>> c = np.array([[1.0, 0.0], [0.0, 1.0], [-1.0, 0.0]])
    >>> pc.clusters.target_clusters(np.array([[0.9, 0.2], [0.8, -0.1]]), c)
    array([0], dtype=uint32)
    """
    t, _ = target_array(target, "target", normalize=False)
    c, _ = target_array(centroids, "centroids", normalize=False)
    if t.shape[1] != c.shape[1]:
        raise ValueError(
            f"the target ({target if isinstance(target, (str, os.PathLike)) else 'array'}) is "
            f"{t.shape[1]} wide but the centroids are {c.shape[1]} wide"
        )
    frame = pl.DataFrame({"t": pl.Series(t.astype(np.float32))})
    picked = frame.select(assign_clusters("t", centroids, normalize=False).struct.field("cluster"))
    return np.unique(picked.to_series().drop_nulls().to_numpy()).astype(np.uint32)
