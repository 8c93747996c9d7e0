"""Clusters and near-duplicates against NumPy/float64 references written from
docs/methods.md#clusters-and-near-duplicates: each row's nearest centroid, every k-means
iteration (objective and update, empty clusters included) from the centroids before it, the
seeded init, SemDeDup with planted exact and near duplicates, and DataComp's image-based keep
set; the same bits for any thread count and engine."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest
from support import as_dtype, clip_like, frame, series, unit

import polars_curate as pc
from polars_curate import _internal

import reference as ref


def fit(x: np.ndarray, k: int, iters: int, seed: int = 0, dtype: str = "f32"):
    """Our k-means (centroids and each iteration's (objective, moved, empty))."""
    steps: list[tuple[float, int, int]] = []

    def on_step(it: int, objective: float, moved: int, empty: int) -> bool:
        steps.append((objective, moved, empty))
        return True  # go on

    data = _internal.kmeans_fit(series("x", x, dtype), k, iters, seed, on_step)
    return np.frombuffer(data, dtype="<f4").reshape(k, -1).astype(np.float64), steps


def separated(x: np.ndarray, c: np.ndarray, normalize: bool = True, gap: float = 1e-5):
    """Rows whose best and second-best centroid differ by more than ``gap`` (float32 may order
    closer ones either way)."""
    xn, cn = (unit(x), unit(c)) if normalize else (x, c)
    s = np.sort(xn @ cn.T, axis=1)
    return s[:, -1] - s[:, -2] > gap


@pytest.mark.parametrize("normalize", [True, False])
def test_assign_clusters_is_the_nearest_centroid(dtype, normalize):
    x, _ = clip_like(700, 48, seed=3)
    x = x * np.random.default_rng(1).uniform(0.5, 2.0, (len(x), 1))
    c = np.random.default_rng(2).normal(size=(37, 48))
    got = frame(dtype, x=x).select(pc.assign_clusters("x", c, normalize=normalize).struct.unnest())
    xs = as_dtype(x, dtype)
    want_j, want_s = ref.nearest(xs, c.astype(np.float32), normalize)
    ok = separated(xs, c.astype(np.float32), normalize)
    assert ok.mean() > 0.95
    assert got.schema == pl.Schema({"cluster": pl.UInt32, "similarity": pl.Float32})
    np.testing.assert_array_equal(got["cluster"].to_numpy()[ok], want_j[ok])
    scale = np.maximum(np.linalg.norm(xs, axis=1), 1.0) if not normalize else 1.0
    np.testing.assert_allclose(got["similarity"].to_numpy(), want_s, atol=1e-5 * np.max(scale))
    # zero_shot_labels is the same search: the same indices, always.
    labels = frame(dtype, x=x).select(pc.zero_shot_labels("x", c, normalize=normalize))["x"]
    assert labels.to_list() == got["cluster"].to_list()


def test_assign_clusters_nulls_ties_and_errors():
    x = np.array([[1.0, 0.0], [0.0, 0.0], [np.nan, 1.0], [1.0, 1.0]])
    c = np.array([[0.0, 1.0], [1.0, 0.0], [2.0, 0.0]])
    got = frame("f32", x=x).select(pc.assign_clusters("x", c).struct.unnest())
    # zero and NaN rows are null; (1, 1) ties centroids 0, 1 and 2: the lower index wins.
    assert got["cluster"].to_list() == [1, None, None, 0]
    with pytest.raises(pl.exceptions.ComputeError, match="centroids"):
        frame("f32", x=x).select(pc.assign_clusters("x", np.ones((3, 5))))


def test_init_is_k_distinct_sample_rows():
    x, _ = clip_like(300, 16, seed=5)
    c0, steps = fit(x, 12, 0, seed=7)
    assert steps == []
    hits = np.abs(c0 @ unit(x).T - 1.0) < 1e-6  # each centroid is one normalised row
    rows = [int(np.flatnonzero(h)[0]) for h in hits]
    assert all(h.sum() == 1 for h in hits) and len(set(rows)) == 12
    assert not np.array_equal(c0, fit(x, 12, 0, seed=8)[0])  # the seed picks them


@pytest.mark.parametrize(
    "data",
    ["mixture", "repeated"],
)
def test_every_iteration_is_the_reference_step(data):
    """fit(t + 1) = one reference iteration from fit(t) (the contract says the first t are the
    same), objective and centroids; "repeated" rows make identical initial centroids, so some
    clusters are empty and re-seeded."""
    rng = np.random.default_rng(11)
    if data == "mixture":
        x, _ = clip_like(800, 24, seed=11, clusters=6)
        k = 10
    else:
        x = np.repeat(rng.normal(size=(5, 24)), 40, axis=0)
        x = np.vstack([x, rng.normal(size=(7, 24))])
        k = 9
    x = as_dtype(x, "f32")
    empties = 0
    c, _ = fit(x, k, 0)
    for t in range(6):
        objective, labels, want = ref.kmeans_step(x, c)
        nxt, steps = fit(x, k, t + 1)
        assert len(steps) == t + 1
        got_obj, moved, empty = steps[-1]
        assert got_obj == pytest.approx(objective, rel=1e-6)
        assert empty == sum(1 for j in range(k) if not (labels == j).any())
        if t == 0:
            assert moved == len(x)
        np.testing.assert_allclose(nxt, want, atol=2e-6)
        empties += empty
        c = nxt
    assert (empties > 0) == (data == "repeated")


def test_rows_that_cancel_out_reseed_their_cluster_and_zero_rows_have_no_cluster():
    c, steps = fit(np.array([[1.0, 0.0], [-1.0, 0.0]]), 1, 3)
    assert np.abs(c[0]).tolist() == [1.0, 0.0]  # never a zero centroid (it could not assign)
    assert [e for _, _, e in steps] == [1, 1, 1]
    x = np.array([[0.0, 0.0], [2.0, 1.0]])  # raw products: a zero row ties every centroid
    got = frame("f32", x=x).select(pc.assign_clusters("x", np.eye(2), normalize=False))["x"]
    assert got.struct.field("cluster").to_list() == [None, 0]


def test_kmeans_errors_name_the_argument():
    x = series("x", np.eye(3), "f32")
    with pytest.raises(ValueError, match="k = 4 needs at least 4 usable rows, got 3"):
        _internal.kmeans_fit(x, 4, 2, 0, lambda *a: True)
    with pytest.raises(ValueError, match="`k` must be in"):
        _internal.kmeans_fit(x, 0, 2, 0, lambda *a: True)


def planted(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Rows with exact duplicates and near duplicates (cosine about 0.9999) of other rows, and
    a random order."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    src = rng.choice(n, size=n // 5, replace=False)
    dst = rng.permutation(np.setdiff1d(np.arange(n), src))[: n // 5]
    x[dst[: n // 10]] = x[src[: n // 10]] * 2.5  # exact (a scale changes no cosine)
    x[dst[n // 10 :]] = x[src[n // 10 :]] + 0.01 * rng.normal(size=(n // 5 - n // 10, d))
    return x, rng.permutation(n)


@pytest.mark.parametrize("n", [1, 2, 7, 150, 333])
def test_semdedup_is_the_definition(dtype, n):
    x, order = planted(n, 40, seed=n)
    xs = as_dtype(x, dtype)
    df = frame(dtype, x=x).with_columns(pos=pl.Series(order))
    got = df.select(pc.semdedup("x", by="pos"))["x"].to_numpy().astype(np.float64)
    want = ref.semdedup(xs, order)
    first = np.isneginf(want)
    assert first.sum() == 1 and np.isneginf(got[first]).all()
    np.testing.assert_allclose(got[~first], want[~first], atol=2e-6)
    if n >= 150:  # the planted duplicates after their source are found (cosine ~1)
        assert (got > 0.99).sum() >= n // 10


def test_semdedup_per_group_orders_and_unusable_rows():
    x, _ = planted(200, 16, seed=4)
    x[5] = 0.0
    group = np.arange(200) % 3
    sim = np.random.default_rng(9).normal(size=200)
    uid = [f"{i:032x}" for i in range(200)]
    df = frame("f64", x=x).with_columns(
        g=pl.Series(group), sim=pl.Series(sim).round(1), uid=pl.Series(uid)
    )
    got = (
        df.with_row_index("row")
        .group_by("g", maintain_order=True)
        .agg("row", s=pc.semdedup("x", by=["sim", "uid"]))
        .explode("row", "s")
        .sort("row")["s"]
        .to_list()
    )
    assert got[5] is None
    for g in range(3):
        rows = np.flatnonzero((group == g) & (np.arange(200) != 5))
        key = sorted(rows, key=lambda r: (round(sim[r], 1), uid[r]))  # SemDeDup's order
        want = ref.semdedup(x[rows], np.array([key.index(r) for r in rows]))
        np.testing.assert_allclose([got[r] for r in rows], want, atol=1e-6)


def test_image_based_filter_keep_set():
    pool, _ = clip_like(900, 32, seed=21, clusters=12)
    centroids = unit(np.random.default_rng(3).normal(size=(40, 32)))
    target = np.random.default_rng(4).normal(size=(25, 32)) * 3.0
    picked = pc.clusters.target_clusters(target, centroids)
    kept = frame("f32", x=pool).select(
        pc.assign_clusters("x", centroids).struct.field("cluster").is_in(picked.tolist())
    )["cluster"]
    want = ref.image_based_keep(as_dtype(pool, "f32"), centroids.astype(np.float32), target)
    ok = separated(as_dtype(pool, "f32"), centroids)
    np.testing.assert_array_equal(kept.to_numpy()[ok], want[ok])
    assert 0 < want.sum() < len(pool)


def test_same_bits_for_any_thread_count_and_engine():
    x, _ = clip_like(3000, 32, seed=8)
    c, _ = fit(x, 16, 4)
    lf = (
        frame("f16", x=x)
        .lazy()
        .with_columns(a=pc.assign_clusters("x", c), s=pc.semdedup("x", by=pl.int_range(pl.len())))
    )
    runs = []
    for threads in (1, 2, 3):
        _internal.set_thread_count(threads)
        try:
            runs.append(fit(x, 16, 4)[0].tobytes())
            for engine in ("in-memory", "streaming"):
                runs.append(lf.collect(engine=engine).hash_rows().to_numpy().tobytes())
        finally:
            _internal.set_thread_count(0)
    assert runs[0::3] == [runs[0]] * 3
    assert set(runs[1::3]) | set(runs[2::3]) == {runs[1]}
