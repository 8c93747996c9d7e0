"""The lazy query over a pool: whole-frame expressions per shard stream shard by shard, give
the bits of an eager ``.over("shard")`` and of ``score --unit-rows shard``, and compose with
filters on pool columns and joined score files."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import polars_curate as pc
from polars_curate.datasets import synthetic_pool

NCL = dict(batch_size=128, num_batches=2, seed=3)


@pytest.fixture(scope="module", params=["parquet", "npz"])
def pool(request, tmp_path_factory):
    root = tmp_path_factory.mktemp(request.param)
    paths = synthetic_pool(root, n=1500, d=16, seed=5, shards=3, layout=request.param)
    uids = pc.scan_pool(paths["pool"]).select("uid").collect()["uid"]
    rng = np.random.default_rng(0)
    hype = pl.DataFrame({"uid": uids, "hype": rng.random(len(uids))}).sample(fraction=1, seed=1)
    hype.write_parquet(root / "hype.parquet")  # another order than the pool's
    return {**paths, "hype": root / "hype.parquet"}


def nodes(lf: pl.LazyFrame) -> list[str]:
    """The kinds of the streaming engine's physical nodes of ``lf``."""
    dot = lf.show_graph(engine="streaming", plan_stage="physical", raw_output=True, show=False)
    assert dot is not None
    kinds = []
    for line in dot.splitlines():
        if 'label="' in line and "->" not in line:
            kinds.append(line.split('label="', 1)[1].split("\\n", 1)[0])
    return kinds


def assert_streams_shard_by_shard(lf: pl.LazyFrame) -> None:
    kinds = nodes(lf)
    assert "sorted-group-by" in kinds, kinds
    assert not [k for k in kinds if "in-memory" in k or "window" in k], kinds


def whole_frame_expressions() -> dict[str, pl.Expr]:
    return {
        "ncl": pc.neg_clip_loss("l14_img", "l14_txt", **NCL),
        "dyn": pc.normsim2_dynamic("l14_img", keep=0.3, steps=4, seed=1),
        "cov": pc.clipcov("l14_img", "l14_txt", classes="concept", keep=0.2),
        "top": pc.top_fraction("clip_l14_similarity_score", 0.25, by="uid"),
    }


@pytest.mark.parametrize("filtered", [False, True], ids=["all", "filtered"])
def test_per_shard_equals_the_eager_over_bit_for_bit_and_streams(pool, filtered):
    lf = pc.scan_pool(pool["pool"])
    if filtered:  # a DFN-like score column of the pool
        lf = lf.filter(pl.col("clip_b32_similarity_score") > 0.05)
    exprs = whole_frame_expressions()
    lazy = lf.pipe(pc.per_shard, "uid", **exprs)
    assert_streams_shard_by_shard(lazy)
    got = lazy.collect()
    eager = lf.collect()
    want = eager.select("shard", "uid", **{k: e.over("shard") for k, e in exprs.items()})
    assert got.height == eager.height > 0
    assert got.equals(want)


def test_the_readme_form_streams_with_nothing_declared(pool, tmp_path):
    ncl = pc.neg_clip_loss("l14_img", "l14_txt", **NCL)
    lf = (
        pc.scan_pool(pool["pool"])
        .filter(pl.col("clip_b32_similarity_score") > 0.05)
        .group_by("shard", maintain_order=True)
        .agg("uid", ncl=ncl)
        .explode("uid", "ncl")
    )
    assert_streams_shard_by_shard(lf)
    lf.sink_parquet(tmp_path / "out.parquet", row_group_size=1000)
    want = (
        pc.scan_pool(pool["pool"])
        .filter(pl.col("clip_b32_similarity_score") > 0.05)
        .collect()
        .select("shard", "uid", ncl=ncl.over("shard"))
    )
    assert pl.read_parquet(tmp_path / "out.parquet").equals(want)


def test_equals_what_score_writes_per_shard(pool, tmp_path):
    run = pc.score_pool(
        pool["pool"], tmp_path / "s", scores="ncl,clip", unit_rows=None, progress=False, **NCL
    )
    assert run.units == 3
    written = pc.scan_scores(tmp_path / "s").select("uid", "ncl", "clip").collect()
    with_clip = (
        pc.scan_pool(pool["pool"])
        .with_columns(clip=pc.clip_score("l14_img", "l14_txt"))
        .pipe(pc.per_shard, "uid", "clip", ncl=pc.neg_clip_loss("l14_img", "l14_txt", **NCL))
    )
    assert_streams_shard_by_shard(with_clip)
    got = with_clip.select("uid", "ncl", "clip").collect()
    assert got.equals(written)


def test_composes_with_a_joined_score_file_and_a_second_per_shard_step(pool):
    """HYPE-like scores joined on uid (keeping the pool's order, so the shard stays sorted),
    then negCLIPLoss per shard, then the top fraction of it per shard."""
    hype = pl.scan_parquet(pool["hype"])
    ncl = pc.neg_clip_loss("l14_img", "l14_txt", **NCL)
    lf = (
        pc.scan_pool(pool["pool"])
        .join(hype, on="uid", how="inner", maintain_order="left")
        .filter(pl.col("hype") > 0.3)
        .pipe(pc.per_shard, "uid", "hype", ncl=ncl)
        .pipe(pc.per_shard, "uid", "hype", "ncl", top=pc.top_fraction("ncl", 0.5, by="uid"))
    )
    assert_streams_shard_by_shard(lf)
    got = lf.collect()
    eager = pc.scan_pool(pool["pool"]).collect().join(hype.collect(), on="uid", how="inner")
    eager = eager.filter(pl.col("hype") > 0.3)
    want = eager.select("shard", "uid", "hype", ncl=ncl.over("shard"))
    want = want.with_columns(top=pc.top_fraction("ncl", 0.5, by="uid").over("shard"))
    assert got.equals(want)
    # The per-shard count is floor(0.5 * rows of the shard) exactly.
    sizes = got.group_by("shard").agg(n=pl.len(), kept=pl.col("top").sum())
    assert (sizes["kept"] == sizes["n"] // 2).all()


def test_over_is_what_holds_the_pool(pool):
    """Why the README does not show ``.over``: Polars plans it as a window, not a stream."""
    ncl = pc.neg_clip_loss("l14_img", "l14_txt", **NCL)
    kinds = nodes(pc.scan_pool(pool["pool"]).select("uid", ncl=ncl.over("shard")))
    assert "sorted-group-by" not in kinds and any("window" in k for k in kinds), kinds
