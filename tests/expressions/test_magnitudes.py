"""A finite vector is a vector: any magnitude scores like its direction, against the float64
reference; exact values where the formula gives them (zero terms, negCLIPLoss <= 0)."""

from __future__ import annotations

import math

import numpy as np
import polars as pl
import pytest
from support import assert_rel, clip_like

import polars_curate as pc
from polars_curate import _internal

import reference as ref

SCALES = [
    ("f32", 1e20),
    ("f32", 1e-25),
    ("f32", 3e37),
    ("f64", 1e200),
    ("f64", 1e-200),
    ("f64", 1e300),
]


def scaled(a: np.ndarray, dtype: str, scale: float) -> pl.Series:
    inner = pl.Float32 if dtype == "f32" else pl.Float64
    vals = (a * scale).astype(np.float32 if dtype == "f32" else np.float64)
    return pl.Series(vals).cast(pl.Array(inner, a.shape[1]))


@pytest.mark.parametrize("dtype,scale", SCALES)
def test_scores_of_any_magnitude(dtype, scale):
    x, t = clip_like(300, 16, seed=1)
    target, _ = clip_like(40, 16, seed=2)
    df = pl.DataFrame({"img": scaled(x, dtype, scale), "txt": scaled(t, dtype, scale)})
    # The directions of the values the plugin was given (scaled by their largest element so
    # that the float64 reference itself neither overflows nor underflows).
    xs, ts = (
        v / np.abs(v).max(axis=1, keepdims=True)
        for v in (df[c].cast(pl.Array(pl.Float64, 16)).to_numpy() for c in ("img", "txt"))
    )
    out = df.select(
        clip=pc.clip_score("img", "txt"),
        ncl=pc.neg_clip_loss("img", "txt", batch_size=300, num_batches=1),
        inf=pc.normsim("img", target * scale, p="inf"),
        two=pc.normsim("img", target, p=2),
        three=pc.normsim("img", target, p=3),
    )
    assert out.null_count().row(0) == (0,) * 5, "no row may lose its score to over/underflow"
    assert_rel(out["clip"], ref.clip_score(xs, ts), scale=np.full(300, 0.01))
    batches = [[np.arange(300)]]
    want, size = ref.neg_clip_loss(xs, ts, batches, tau=0.01)
    assert_rel(out["ncl"], want, scale=np.maximum(size, 0.01))
    for col, p in (("inf", math.inf), ("two", 2.0), ("three", 3.0)):
        assert_rel(out[col], ref.normsim(xs, target, p), scale=np.full(300, 0.01))


def test_unnormalised_rows_beyond_float32_are_null_not_wrong():
    x = np.array([[1e200, 0.0], [0.6, 0.8]])
    df = pl.DataFrame({"a": pl.Series(x).cast(pl.Array(pl.Float64, 2))})
    out = df.select(pc.clip_score("a", "a", normalize=False)).to_series()
    assert out[0] is None and out[1] == pytest.approx(1.0)


def test_zero_terms_are_exact_for_every_p():
    # Row 0 is orthogonal to every target: NormSim_p is exactly 0 for any p.
    x = np.array([[0.0, 0.0, 1.0], [1.0, 1.0, 0.0]])
    target = np.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    df = pl.DataFrame({"a": pl.Series(x).cast(pl.Array(pl.Float32, 3))})
    for p in (0.25, 0.5, 1.0, 2.0, 3.0, 40.0, "inf"):
        out = df.select(pc.normsim("a", target, p=p)).to_series().to_list()
        assert out[0] == 0.0, (p, out)
        want = ref.normsim(x[1:], target, math.inf if p == "inf" else float(p))[0]
        assert out[1] == pytest.approx(want, rel=1e-5), (p, out)


def test_neg_clip_loss_is_never_positive():
    x, t = clip_like(64, 8, seed=3)
    df = pl.DataFrame({"img": x, "txt": t}).cast(pl.Array(pl.Float32, 8))
    one = df.select(pc.neg_clip_loss("img", "txt", batch_size=1, num_batches=3)).to_series()
    assert (one == 0.0).all(), "a one-row batch is exactly 0 by the formula"
    assert not one.cast(pl.String).str.starts_with("-").any(), "no -0.0"
    many = df.select(pc.neg_clip_loss("img", "txt", batch_size=8)).to_series()
    assert (many <= 0).all()


@pytest.mark.parametrize(
    "make,msg",
    [
        (lambda: pc.neg_clip_loss("a", "b", temperature=1e-39), "`temperature` must be in"),
        (lambda: pc.neg_clip_loss("a", "b", temperature=1e25), "`temperature` must be in"),
        (lambda: pc.normsim("a", np.eye(2), p=0.001), "`p` must be a number >= 0.25"),
        (lambda: pc.neg_clip_loss("a", "b", num_batches=10**12), "`num_batches` must be in"),
        (lambda: pc.normsim2_dynamic("a", keep=1, steps=10**12), "`steps` must be in"),
        (lambda: pc.normsim2_dynamic("a", keep=1, steps=2**32 + 5), "`steps` must be in"),
        (lambda: pc.neg_clip_loss("a", "b", batch_size=2**63), "`batch_size` must be in"),
        (lambda: _internal.batch_assignment(2**40, 10, 0, 0), "`n` must be at most"),
        (lambda: _internal.batch_assignment(2**62, 10, 0, 0), "`n` must be at most"),
    ],
)
def test_absurd_arguments_are_refused_when_the_expression_is_built(make, msg):
    with pytest.raises(ValueError, match=msg):
        make()
