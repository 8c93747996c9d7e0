import numpy as np
import polars as pl
import pytest
from polars.exceptions import ComputeError
from support import as_dtype, clip_like, frame, random_pairs

import polars_curate as pc

import reference as ref


@pytest.mark.parametrize("keep,steps", [(30, 5), (1, 20), (150, 1), (0, 3), (299, 7)])
def test_full_sample_equals_reference(keep, steps, dtype):
    x, _ = random_pairs(300, 16, seed=31)
    out = frame(dtype, img=x).select(
        pc.normsim2_dynamic("img", keep=keep, steps=steps, sample_fraction=1.0)
    )["img"]
    assert out.dtype == pl.UInt32
    np.testing.assert_array_equal(
        out.to_numpy(), ref.normsim2_dynamic(as_dtype(x, dtype), keep, steps)
    )


def test_survivor_counts_fall_linearly_with_sampling():
    x, _ = clip_like(1000, 32, seed=32)
    keep, steps = 123, 40
    out = frame(img=x).select(pc.normsim2_dynamic("img", keep=keep, steps=steps))["img"].to_numpy()
    chunk = -(-(1000 - keep) // steps)
    for r in range(steps + 1):
        assert (out >= r).sum() == max(keep, 1000 - r * chunk)
    assert (out == steps).sum() == keep


def test_seed_fraction_groups_and_nulls():
    x, _ = clip_like(400, 16, seed=33)
    df = (
        frame(img=x)
        .with_columns(g=pl.int_range(400) % 2)
        .with_columns(img=pl.when(pl.int_range(pl.len()) == 5).then(None).otherwise(pl.col("img")))
    )
    e = lambda s: pc.normsim2_dynamic("img", keep=0.25, steps=10, seed=s)  # noqa: E731
    a, b, c = (df.select(e(s))["img"] for s in (1, 1, 2))
    assert a.equals(b) and not a.equals(c)
    assert a[5] is None
    assert (a == 10).sum() == int(0.25 * 399)  # fraction of the 399 usable rows
    per_group = df.select(e(1).over("g"), "g")
    counts = per_group.filter(pl.col("img") == 10).group_by("g").len().sort("g")["len"]
    assert counts.to_list() == [
        50,
        49,
    ]  # row 5 (null) is in group 1: floor(0.25 * 200), floor(0.25 * 199)


def test_keep_larger_than_rows_and_bad_arguments():
    df = frame(img=np.eye(4))
    with pytest.raises(ComputeError, match="`keep` = 5 is more than the 4 rows"):
        df.select(pc.normsim2_dynamic("img", keep=5))
    for kwargs, err in [
        ({"keep": -1}, ValueError),
        ({"keep": 1.5}, ValueError),
        ({"keep": "3"}, TypeError),
        ({"keep": 2, "steps": 0}, ValueError),
        ({"keep": 2, "sample_fraction": 0.0}, ValueError),
        ({"keep": 2, "sample_fraction": 1.5}, ValueError),
        ({"keep": 2, "seed": -3}, ValueError),
    ]:
        with pytest.raises(err):
            pc.normsim2_dynamic("img", **kwargs)
