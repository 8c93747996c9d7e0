import numpy as np
import polars as pl
import pytest
from support import as_dtype, assert_rel, clip_like, frame, random_pairs, series

import polars_curate as pc

import reference as ref


@pytest.mark.parametrize("make", [random_pairs, clip_like])
def test_matches_reference(make, dtype):
    x, t = make(500, 64, seed=1)
    out = frame(dtype, img=x, txt=t).select(pc.clip_score("img", "txt"))
    assert out.schema == {"img": pl.Float32}
    want = ref.clip_score(as_dtype(x, dtype), as_dtype(t, dtype))
    # Relative to the size of the cosine's terms (1 for unit vectors): a cosine near 0 is a
    # difference of O(1) sums, known to ~1e-7 in float32 whatever its own size.
    assert_rel(out["img"].to_numpy(), want, np.maximum(np.abs(want), 1e-2), tol=1e-4)


def test_clip_like_data_looks_like_clip():
    x, t = clip_like(2000, 512, seed=0)
    s = ref.clip_score(x, t)
    off = ref.clip_score(x, np.roll(t, 1, axis=0))
    assert 0.25 < s.mean() < 0.35
    assert 0.0 < off.mean() < 0.05


def test_without_normalize_is_dot_product():
    x, t = random_pairs(50, 16, seed=2)
    out = frame(img=x, txt=t).select(pc.clip_score("img", "txt", normalize=False))
    assert_rel(out["img"].to_numpy(), ref.clip_score(as_dtype(x, "f32"), as_dtype(t, "f32"), False))


def test_nulls_nans_and_zero_vectors_give_null():
    x, t = random_pairs(5, 4, seed=3)
    x[1] = np.nan
    t[2] = 0.0
    df = frame(img=x, txt=t).with_columns(
        pl.when(pl.int_range(pl.len()) == 3).then(None).otherwise(pl.col("img")).alias("img")
    )
    out = df.select(pc.clip_score("img", "txt"))["img"]
    assert out.is_null().to_list() == [False, True, True, True, False]
    raw = df.select(pc.clip_score("img", "txt", normalize=False))["img"]
    assert raw.is_null().to_list() == [False, True, False, True, False]  # zero is fine unnormalised


def test_null_element_inside_a_vector_gives_null():
    df = pl.DataFrame(
        {"img": [[1.0, None], [1.0, 0.0]], "txt": [[1.0, 0.0], [1.0, 0.0]]},
        schema={"img": pl.Array(pl.Float32, 2), "txt": pl.Array(pl.Float32, 2)},
    )
    assert df.select(pc.clip_score("img", "txt"))["img"].to_list() == [None, 1.0]


def test_one_row_broadcasts():
    x, t = random_pairs(6, 8, seed=4)
    df = frame(img=x)
    q = series("q", t[:1])
    out = df.select(pc.clip_score("img", pl.lit(q)))["img"].to_numpy()
    assert_rel(out, ref.clip_score(as_dtype(x, "f32"), np.repeat(as_dtype(t[:1], "f32"), 6, 0)))


def test_mixed_dtypes():
    x, t = random_pairs(40, 32, seed=5)
    df = pl.DataFrame([series("img", x, "f16"), series("txt", t, "f64")])
    out = df.select(pc.clip_score("img", "txt"))["img"].to_numpy()
    assert_rel(out, ref.clip_score(as_dtype(x, "f16"), t))


def test_empty_frame():
    df = frame(img=np.zeros((0, 4)), txt=np.zeros((0, 4)))
    out = df.select(pc.clip_score("img", "txt"))
    assert out.shape == (0, 1) and out.schema == {"img": pl.Float32}
