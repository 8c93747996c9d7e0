import numpy as np
import polars as pl
import pytest
from support import as_dtype, assert_rel, clip_like, frame, random_pairs

import polars_curate as pc
from polars_curate import _internal

import reference as ref


def partitions(n: int, batch_size: int, num_batches: int, seed: int) -> list[list[np.ndarray]]:
    """The plugin's batches, as index arrays (from its documented partition function)."""
    out = []
    for k in range(num_batches):
        b = np.array(_internal.batch_assignment(n, batch_size, seed, k))
        out.append([np.flatnonzero(b == j) for j in range(b.max() + 1)] if n else [])
    return out


@pytest.mark.parametrize("make", [random_pairs, clip_like])
def test_one_batch_equals_reference(make, dtype):
    x, t = make(300, 48, seed=11)
    out = (
        frame(dtype, img=x, txt=t)
        .select(pc.neg_clip_loss("img", "txt", batch_size=300, num_batches=1))["img"]
        .to_numpy()
    )
    xs, ts = as_dtype(x, dtype), as_dtype(t, dtype)
    want, scale = ref.neg_clip_loss(xs, ts, [[np.arange(300)]], tau=0.01)
    assert_rel(out, want, scale)


def test_over_batches_equals_reference_on_those_batches():
    x, t = clip_like(900, 64, seed=12)
    batch = np.random.default_rng(0).integers(0, 4, 900)
    df = frame(img=x, txt=t).with_columns(batch=pl.Series(batch))
    out = df.select(
        pc.neg_clip_loss("img", "txt", batch_size=10_000, num_batches=1, temperature=0.02).over(
            "batch"
        )
    )["img"].to_numpy()
    idx = [np.flatnonzero(batch == b) for b in range(4)]
    want, scale = ref.neg_clip_loss(as_dtype(x, "f32"), as_dtype(t, "f32"), [idx], tau=0.02)
    assert_rel(out, want, scale)


def test_group_by_agg_partitions_each_group():
    x, t = clip_like(400, 32, seed=13)
    g = np.repeat([0, 1], 200)
    df = frame(img=x, txt=t).with_columns(g=pl.Series(g))
    agg = (
        df.group_by("g", maintain_order=True)
        .agg(pc.neg_clip_loss("img", "txt", num_batches=1).alias("ncl"))
        .explode("ncl")["ncl"]
        .to_numpy()
    )
    want, scale = ref.neg_clip_loss(
        as_dtype(x, "f32"), as_dtype(t, "f32"), [[np.arange(200), np.arange(200, 400)]], tau=0.01
    )
    assert_rel(agg, want, scale)


@pytest.mark.parametrize("n,batch_size,k", [(1000, 128, 3), (257, 100, 2), (50, 7, 4)])
def test_random_batches_equal_reference_on_the_same_batches(n, batch_size, k):
    x, t = clip_like(n, 32, seed=14)
    out = (
        frame(img=x, txt=t)
        .select(pc.neg_clip_loss("img", "txt", batch_size=batch_size, num_batches=k, seed=5))["img"]
        .to_numpy()
    )
    want, scale = ref.neg_clip_loss(
        as_dtype(x, "f32"), as_dtype(t, "f32"), partitions(n, batch_size, k, 5), tau=0.01
    )
    assert_rel(out, want, scale)


def test_partitions_are_nearly_equal_and_seeded():
    for n, b in [(10, 3), (1000, 128), (32769, 32768)]:
        a = np.array(_internal.batch_assignment(n, b, 1, 0))
        sizes = np.bincount(a)
        assert len(sizes) == -(-n // b)
        assert sizes.max() - sizes.min() <= 1 and sizes.max() <= b
    assert _internal.batch_assignment(100, 10, 1, 0) == _internal.batch_assignment(100, 10, 1, 0)
    assert _internal.batch_assignment(100, 10, 1, 0) != _internal.batch_assignment(100, 10, 2, 0)
    assert _internal.batch_assignment(100, 10, 1, 0) != _internal.batch_assignment(100, 10, 1, 1)


def test_two_seeds_rank_alike():
    """The K-average is a stable score: two seeds give nearly the same ranking (as the
    reference's own random batches do)."""
    x, t = clip_like(3000, 64, seed=15)
    df = frame(img=x, txt=t)
    a, b = (
        df.select(pc.neg_clip_loss("img", "txt", batch_size=500, seed=s))["img"].to_numpy()
        for s in (1, 2)
    )
    assert not np.array_equal(a, b)
    rank = lambda v: np.argsort(np.argsort(v))  # noqa: E731
    ours = np.corrcoef(rank(a), rank(b))[0, 1]
    r1, _ = ref.neg_clip_loss(x, t, partitions(3000, 500, 10, 101), tau=0.01)
    r2, _ = ref.neg_clip_loss(x, t, partitions(3000, 500, 10, 102), tau=0.01)
    theirs = np.corrcoef(rank(r1), rank(r2))[0, 1]
    assert ours > 0.95 and abs(ours - theirs) < 0.02, (ours, theirs)


def test_bad_rows_are_null_and_take_no_part():
    x, t = clip_like(60, 16, seed=16)
    x[5] = np.nan
    t[7] = 0.0
    df = frame(img=x, txt=t).with_columns(
        pl.when(pl.int_range(pl.len()) == 9).then(None).otherwise(pl.col("txt")).alias("txt")
    )
    out = df.select(pc.neg_clip_loss("img", "txt", num_batches=1))["img"]
    bad = [5, 7, 9]
    assert out.is_null().to_numpy().nonzero()[0].tolist() == bad
    keep = np.setdiff1d(np.arange(60), bad)
    want, scale = ref.neg_clip_loss(
        as_dtype(x[keep], "f32"), as_dtype(t[keep], "f32"), [[np.arange(len(keep))]], tau=0.01
    )
    assert_rel(out.to_numpy()[keep], want, scale)


def test_huge_similarities_do_not_overflow():
    """exp(s / tau) with s = 1, tau = 0.001 would be exp(1000): must be shifted."""
    x = np.eye(8)[:, :8] + 1e-3
    out = (
        frame(img=x, txt=x)
        .select(pc.neg_clip_loss("img", "txt", num_batches=1, temperature=0.001))["img"]
        .to_numpy()
    )
    want, scale = ref.neg_clip_loss(as_dtype(x, "f32"), as_dtype(x, "f32"), [[np.arange(8)]], 0.001)
    assert np.isfinite(out).all()
    assert_rel(out, want, scale)


def test_single_row_and_empty():
    x, t = random_pairs(1, 8, seed=17)
    one = frame(img=x, txt=t).select(pc.neg_clip_loss("img", "txt"))["img"].to_numpy()
    # One row: both log-sum-exps are s/tau, so ncl = s - s = 0.
    assert abs(one[0]) < 1e-6
    empty = frame(img=np.zeros((0, 8)), txt=np.zeros((0, 8))).select(pc.neg_clip_loss("img", "txt"))
    assert empty.shape == (0, 1) and empty.schema == {"img": pl.Float32}
