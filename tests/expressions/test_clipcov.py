import numpy as np
import polars as pl
import pytest
from polars.exceptions import ComputeError
from support import as_dtype, clip_like, frame

import polars_curate as pc

import reference as ref


def data(n=60, d=12, seed=41, classes=3):
    x, t = clip_like(n, d, seed=seed)
    labels = np.random.default_rng(seed).integers(0, classes, n)
    return x, t, labels


@pytest.mark.parametrize("keep,lam,w", [(20, 1.0, 2.0), (7, 0.3, 0.0), (45, 2.0, 1.0)])
def test_exact_greedy_equals_brute_force(keep, lam, w, dtype):
    x, t, labels = data()
    df = frame(dtype, img=x, txt=t).with_columns(cls=pl.Series([f"c{v}" for v in labels]))
    out = df.select(
        pc.clipcov("img", "txt", classes="cls", keep=keep, lambda_=lam, easiness_weight=w)
    )["img"]
    assert out.dtype == pl.UInt32
    want = ref.clipcov_greedy(as_dtype(x, dtype), as_dtype(t, dtype), labels, keep, lam, w)
    np.testing.assert_array_equal(out.fill_null(-1).to_numpy(), want)
    sizes = np.bincount(labels)
    picked = np.bincount(labels[out.is_not_null().to_numpy()], minlength=3)
    assert picked.tolist() == ref.quotas(sizes.tolist(), keep)


def test_batched_picks_stay_close_to_exact():
    """pick_batch > 1 trades exactness for speed; on CLIP-like data its objective stays within
    1% of exact greedy's (the documented tolerance)."""
    x, t = clip_like(3000, 64, seed=42)
    labels = np.random.default_rng(0).integers(0, 5, 3000)
    df = frame(img=x, txt=t).with_columns(cls=pl.Series(labels))
    s = ref.unit(as_dtype(x, "f32")) @ ref.unit(as_dtype(t, "f32")).T
    for batch in (10, 50):
        exact, batched = (
            df.select(pc.clipcov("img", "txt", classes="cls", keep=0.3, pick_batch=b))["img"]
            for b in (1, batch)
        )
        for c in range(5):
            members = np.flatnonzero(labels == c)
            f = {
                name: ref.clipcov_objective(
                    s,
                    members,
                    list(np.flatnonzero(o.is_not_null().to_numpy() & (labels == c))),
                    1.0,
                    2.0,
                )
                for name, o in (("exact", exact), ("batched", batched))
            }
            assert f["exact"] > 0
            assert f["batched"] >= 0.99 * f["exact"], (batch, c, f)
            assert (exact.is_not_null() & (pl.Series(labels) == c)).sum() == (
                batched.is_not_null() & (pl.Series(labels) == c)
            ).sum()


def test_null_classes_and_rows_are_never_picked_and_determinism():
    x, t, labels = data(n=80, seed=43)
    cls = pl.Series([None if i % 9 == 0 else int(v) for i, v in enumerate(labels)])
    df = (
        frame(img=x, txt=t)
        .with_columns(cls=cls)
        .with_columns(img=pl.when(pl.int_range(pl.len()) == 4).then(None).otherwise(pl.col("img")))
    )
    e = pc.clipcov("img", "txt", classes="cls", keep=1.0)
    a = df.select(e)["img"]
    chunked = pl.concat([df[i : i + 7] for i in range(0, 80, 7)], rechunk=False)
    assert a.equals(chunked.select(e)["img"])
    assert a.filter(cls.is_null()).null_count() == cls.null_count()
    assert a[4] is None
    usable = (cls.is_not_null() & (pl.int_range(80, eager=True) != 4)).sum()
    assert a.is_not_null().sum() == usable  # keep=1.0 picks every usable row


def test_bad_arguments():
    x, t, labels = data(n=10)
    df = frame(img=x, txt=t).with_columns(cls=pl.Series(labels))
    with pytest.raises(ComputeError, match="`keep` = 11 is more than the 10 rows"):
        df.select(pc.clipcov("img", "txt", classes="cls", keep=11))
    for kwargs, err in [
        ({"keep": 1.2}, ValueError),
        ({"keep": 3, "lambda_": -1.0}, ValueError),
        ({"keep": 3, "easiness_weight": float("nan")}, ValueError),
        ({"keep": 3, "pick_batch": 0}, ValueError),
        ({"keep": True}, TypeError),
    ]:
        with pytest.raises(err):
            pc.clipcov("img", "txt", classes="cls", **kwargs)


def test_zero_shot_labels_is_argmax_of_cosine(dtype):
    x, _ = clip_like(500, 32, seed=44)
    classes = np.random.default_rng(1).normal(size=(10, 32))
    out = frame(dtype, img=x).select(pc.zero_shot_labels("img", classes))["img"]
    assert out.dtype == pl.UInt32
    want = np.argmax(ref.unit(as_dtype(x, dtype)) @ ref.unit(classes).T, axis=1)
    np.testing.assert_array_equal(out.to_numpy(), want)


def test_zero_shot_labels_feed_clipcov():
    x, t = clip_like(200, 16, seed=45)
    classes = np.random.default_rng(2).normal(size=(4, 16))
    df = frame(img=x, txt=t)
    out = df.with_columns(cls=pc.zero_shot_labels("img", classes)).with_columns(
        order=pc.clipcov("img", "txt", classes="cls", keep=50)
    )
    assert out["order"].is_not_null().sum() == 50
