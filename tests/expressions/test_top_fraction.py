import numpy as np
import polars as pl
import pytest

import polars_curate as pc


def expected_mask(score: np.ndarray, fraction: float) -> np.ndarray:
    """Hand rule: k = floor(fraction * n); highest scores first, earlier row on ties; no NaN."""
    n = len(score)
    k = int(np.floor(round(fraction * n, 9)))
    order = sorted((i for i in range(n) if not np.isnan(score[i])), key=lambda i: (-score[i], i))
    mask = np.zeros(n, dtype=bool)
    mask[order[:k]] = True
    return mask


@pytest.mark.parametrize("fraction", [0.0, 0.1, 0.29, 0.3, 0.5, 0.7, 1.0])
def test_exact_count_with_ties_and_nulls(fraction):
    rng = np.random.default_rng(0)
    s = rng.integers(0, 5, 100).astype(float)  # many ties
    s[[3, 50, 77]] = np.nan
    df = pl.DataFrame({"s": s}).with_columns(
        pl.when(pl.int_range(pl.len()) == 10).then(None).otherwise(pl.col("s")).alias("s")
    )
    s_seen = s.copy()
    s_seen[10] = np.nan
    got = df.select(pc.top_fraction("s", fraction))["s"].to_numpy()
    valid = int((~np.isnan(s_seen)).sum())
    assert got.sum() == min(int(np.floor(round(fraction * 100, 9))), valid)
    np.testing.assert_array_equal(got, expected_mask(s_seen, fraction))


def test_fractions_are_exact_decimals():
    df = pl.DataFrame({"s": np.arange(100.0)})
    assert df.select(pc.top_fraction("s", 0.29))["s"].sum() == 29  # 0.29 * 100 = 28.999...
    assert pl.DataFrame({"s": np.arange(10.0)}).select(pc.top_fraction("s", 0.3))["s"].sum() == 3


def test_per_group_and_fewer_valid_than_k():
    df = pl.DataFrame(
        {"g": [0] * 4 + [1] * 6, "s": [1.0, 2, 3, 4, None, None, None, None, None, 5]}
    )
    got = df.select(pc.top_fraction("s", 0.5).over("g"))["s"].to_list()
    assert got == [False, False, True, True, False, False, False, False, False, True]


def test_integer_scores_and_lazy_filter():
    lf = pl.LazyFrame({"s": [5, 1, 4, 2, 3]})
    assert lf.filter(pc.top_fraction("s", 0.4)).collect()["s"].to_list() == [5, 4]


@pytest.mark.parametrize("bad", [-0.1, 1.5, float("nan")])
def test_bad_fraction(bad):
    with pytest.raises(ValueError, match="fraction"):
        pc.top_fraction("s", bad)
    with pytest.raises(TypeError, match="fraction"):
        pc.top_fraction("s", "0.3")
