"""polars-curate: embedding-only data-selection scores as Polars expressions.

The scores of ``docs/methods.md`` (CLIPScore, negCLIPLoss, NormSim, NormSim_2-D, ClipCov) run
inside Polars as plugin expressions, and the job around them (score a pool unit by unit,
select, report) works on DataComp-style pools of any size::

    import polars as pl
    import polars_curate as pc

    lf = pc.scan_pool("pool/")                       # Parquet (+ npz) shards, lazily
    scores = lf.select("uid", ns=pc.normsim("l14_img", "target.npy", p="inf"))
    run = pc.score_pool("pool/", "scores/", target="target.npy",
                        scores=["ncl", "normsim-inf"])
"""

from polars_curate import clusters, datasets, io
from polars_curate._expr import (
    assign_clusters,
    clip_score,
    clipcov,
    hard_cap_sample,
    neg_clip_loss,
    normsim,
    normsim2_dynamic,
    semdedup,
    soft_cap_sample,
    top_fraction,
    zero_shot_labels,
)
from polars_curate._internal import __version__
from polars_curate._internal import set_thread_count as _set_thread_count
from polars_curate._internal import thread_count as _thread_count
from polars_curate._validate import as_int
from polars_curate.io import read_uids, write_uids
from polars_curate.pipeline import score_pool
from polars_curate.pool import read_datacomp, scan_pool
from polars_curate.query import per_shard
from polars_curate.scoredir import scan_scores
from polars_curate.scores import ScoreOptions
from polars_curate.selection import select


def set_thread_count(n: int) -> None:
    """Use ``n`` threads for the plugin's work from the next call on (``0``: back to
    ``POLARS_MAX_THREADS`` or the number of cores). Polars' own threads are set by
    ``POLARS_MAX_THREADS`` before Polars is imported."""
    _set_thread_count(as_int(n, "n", 0, 1 << 16))


def thread_count() -> int:
    """Threads the plugin's next call uses."""
    return _thread_count()


__all__ = [
    "ScoreOptions",
    "__version__",
    "assign_clusters",
    "clip_score",
    "clipcov",
    "clusters",
    "datasets",
    "hard_cap_sample",
    "io",
    "neg_clip_loss",
    "normsim",
    "normsim2_dynamic",
    "per_shard",
    "read_datacomp",
    "read_uids",
    "scan_pool",
    "scan_scores",
    "score_pool",
    "select",
    "semdedup",
    "set_thread_count",
    "soft_cap_sample",
    "thread_count",
    "top_fraction",
    "write_uids",
    "zero_shot_labels",
]
