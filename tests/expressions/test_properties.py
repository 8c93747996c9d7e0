"""Property tests: random shapes, dtypes and null patterns against the NumPy reference."""

import math

import numpy as np
import polars as pl
from hypothesis import example, given, settings
from hypothesis import strategies as st
from support import as_dtype, assert_rel, series

import polars_curate as pc
from polars_curate import _internal

import reference as ref

# Derandomized: the same examples on every run, so CI is reproducible.
SETTINGS = settings(max_examples=40, deadline=None, derandomize=True, database=None)

# A cosine (or a sum of |cosines|) is a difference of O(1) sums known to ~1e-7 in float32
# whatever its own size, so errors are measured against max(|value|, 0.01).
FLOOR = 1e-2


@st.composite
def pairs(draw):
    n = draw(st.integers(0, 40))
    d = draw(st.integers(1, 12))
    dtype = draw(st.sampled_from(["f16", "f32", "f64"]))
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, d))
    t = rng.normal(size=(n, d))
    nulls = draw(st.lists(st.booleans(), min_size=n, max_size=n))
    return x, t, np.array(nulls, dtype=bool), dtype


def build(x, t, nulls, dtype):
    df = pl.DataFrame([series("img", x, dtype), series("txt", t, dtype)])
    return df.with_columns(
        img=pl.when(pl.Series(nulls)).then(None).otherwise(pl.col("img"))
        if len(nulls)
        else pl.col("img")
    )


def usable(x, t, nulls, dtype):
    xs, ts = as_dtype(x, dtype), as_dtype(t, dtype)
    return ~nulls & (np.linalg.norm(xs, axis=1) > 0) & (np.linalg.norm(ts, axis=1) > 0)


@SETTINGS
@given(pairs())
@example((np.zeros((0, 3)), np.zeros((0, 3)), np.zeros(0, bool), "f32"))
@example((np.ones((1, 1)), -np.ones((1, 1)), np.zeros(1, bool), "f16"))
def test_clip_score(case):
    x, t, _nulls, dtype = case
    out = build(*case).select(pc.clip_score("img", "txt"))["img"]
    ok = usable(*case)
    assert out.is_not_null().to_numpy().tolist() == ok.tolist()
    want = ref.clip_score(as_dtype(x, dtype)[ok], as_dtype(t, dtype)[ok])
    assert_rel(out.to_numpy()[ok], want, np.maximum(np.abs(want), FLOOR))


@SETTINGS
@given(pairs(), st.integers(1, 50), st.integers(1, 3), st.integers(0, 2**63 - 1))
@example((np.ones((3, 2)), np.ones((3, 2)), np.zeros(3, bool), "f64"), 1, 2, 0)
def test_neg_clip_loss(case, batch_size, k, seed):
    x, t, _nulls, dtype = case
    out = build(*case).select(
        pc.neg_clip_loss(
            "img", "txt", batch_size=batch_size, num_batches=k, seed=seed, temperature=0.1
        )
    )["img"]
    ok = usable(*case)
    assert out.is_not_null().to_numpy().tolist() == ok.tolist()
    nv = int(ok.sum())
    parts = []
    for kk in range(k):
        b = np.array(_internal.batch_assignment(nv, batch_size, seed, kk), dtype=int)
        parts.append([np.flatnonzero(b == j) for j in range(b.max() + 1)] if nv else [])
    if nv:
        want, scale = ref.neg_clip_loss(as_dtype(x, dtype)[ok], as_dtype(t, dtype)[ok], parts, 0.1)
        assert_rel(out.to_numpy()[ok], want, scale)


@SETTINGS
@given(pairs(), st.integers(1, 30), st.sampled_from([2.0, math.inf, 1.0, 2.5]))
def test_normsim(case, m, p):
    x, _t, nulls, dtype = case
    target = np.random.default_rng(m).normal(size=(m, x.shape[1]))
    out = build(*case).select(pc.normsim("img", target, p=p))["img"]
    xs = as_dtype(x, dtype)
    ok = ~nulls & (np.linalg.norm(xs, axis=1) > 0)
    assert out.is_not_null().to_numpy().tolist() == ok.tolist()
    want = ref.normsim(xs[ok], target, p)
    assert_rel(out.to_numpy()[ok], want, np.maximum(want, FLOOR), tol=1e-4)
