"""The lazy query over a pool: whole-frame expressions per shard, streaming shard by shard.

``neg_clip_loss``, ``normsim2_dynamic``, ``clipcov`` and ``top_fraction`` see every row they
score at once. Over a pool they must run per shard, and the form matters:

* ``expr.over("shard")`` is a window; Polars' streaming engine computes a window over a
  non-elementwise expression in an in-memory node that holds every row of the pool;
* ``group_by("shard", maintain_order=True).agg(...)`` on a key Polars knows to be sorted runs
  as its streaming sorted group-by, which holds one group (shard) at a time.
  :func:`~polars_curate.scan_pool` declares its ``shard`` column sorted (rows come shard after
  shard), and the flag survives filters, ``maintain_order="left"`` joins and earlier
  :func:`per_shard` steps.

:func:`per_shard` writes the second form. Both give the same bits: each shard's rows reach the
expression in the same order, so the partitions, and so the scores, are the same.
"""

from __future__ import annotations

import polars as pl

__all__ = ["per_shard"]


def per_shard(
    lf: pl.LazyFrame, *columns: str, by: str = "shard", **scores: pl.Expr
) -> pl.LazyFrame:
    """``scores`` computed per shard, one row per input row, streaming shard by shard.

    ``lf.group_by(by, maintain_order=True).agg(*columns, **scores).explode(...)``: the rows
    keep their order; the result has ``by``, ``columns`` (default: every column of ``lf``) and
    one column per score. Streams one shard at a time when ``by`` is declared sorted, as
    :func:`~polars_curate.scan_pool` declares its ``shard`` column (see this module's notes);
    otherwise Polars groups in memory.

    Examples
    --------
    >>> import tempfile
    >>> paths = pc.datasets.synthetic_pool(tempfile.mkdtemp(), n=600, d=16, shards=3)
    >>> ncl = pc.neg_clip_loss("l14_img", "l14_txt", batch_size=64)
    >>> lf = pc.scan_pool(paths["pool"]).filter(pl.col("clip_l14_similarity_score") > 0.2)
    >>> scored = lf.pipe(pc.per_shard, "uid", ncl=ncl).collect()
    >>> scored.columns, scored.height == lf.select(pl.len()).collect().item()
    (['shard', 'uid', 'ncl'], True)
    >>> eager = lf.collect().select("uid", ncl=ncl.over("shard"))  # same bits, all in memory
    >>> scored["ncl"].equals(eager["ncl"])
    True
    """
    if not columns:
        columns = tuple(c for c in lf.collect_schema().names() if c != by)
    out = [*columns, *scores]
    return (
        lf.group_by(by, maintain_order=True)
        .agg(*[pl.col(c) for c in columns], **scores)
        .explode(*out)
    )
