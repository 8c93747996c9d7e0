"""polars-curate: embedding-only data-selection scores as Polars expressions.

The scores of ``docs/methods.md`` (CLIPScore, negCLIPLoss, NormSim) run inside Polars as plugin
expressions, so curating a DataComp-style pool is one lazy query over Parquet::

    import polars as pl
    import polars_curate as pc

    (pl.scan_parquet("pool/*.parquet")
       .with_columns(ncl=pc.neg_clip_loss("l14_img", "l14_txt"),
                     ns=pc.normsim("l14_img", target, p="inf"))
       .filter(pc.top_fraction("ncl", 0.3)))
"""

from polars_curate import datasets, io
from polars_curate._expr import (
    clip_score,
    clipcov,
    neg_clip_loss,
    normsim,
    normsim2_dynamic,
    top_fraction,
    zero_shot_labels,
)
from polars_curate._internal import __version__
from polars_curate.io import read_datacomp, read_uids, write_uids

__all__ = [
    "__version__",
    "clip_score",
    "clipcov",
    "datasets",
    "io",
    "neg_clip_loss",
    "normsim",
    "normsim2_dynamic",
    "read_datacomp",
    "read_uids",
    "top_fraction",
    "write_uids",
    "zero_shot_labels",
]
