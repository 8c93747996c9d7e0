"""Bad input: a clear Python exception naming the argument, and the process survives."""

import math
import subprocess
import sys

import numpy as np
import polars as pl
import pytest
from polars.exceptions import ComputeError
from support import frame, random_pairs

import polars_curate as pc

X, T = random_pairs(8, 4, seed=0)
GOOD = frame(img=X, txt=T)


def run(expr, df=GOOD):
    return df.select(expr)


@pytest.mark.parametrize(
    "make",
    [
        lambda c: pc.clip_score(c, "txt"),
        lambda c: pc.neg_clip_loss(c, "txt"),
        lambda c: pc.normsim(c, T),
    ],
)
def test_list_column_suggests_cast(make):
    df = GOOD.with_columns(pl.col("img").cast(pl.List(pl.Float32)))
    with pytest.raises(ComputeError, match=r"is a List column.*cast\(pl\.Array"):
        run(make("img"), df)


@pytest.mark.parametrize("inner", [pl.Int64, pl.Int8, pl.UInt32, pl.Boolean, pl.String])
def test_non_float_inner_type(inner):
    df = pl.DataFrame({"img": pl.Series([[1, 2], [3, 4]]).cast(pl.Array(inner, 2))})
    df = df.with_columns(txt=pl.col("img"))
    with pytest.raises(
        ComputeError, match=r"`image`.*must be an Array of Float16, Float32 or Float64"
    ):
        run(pc.clip_score("img", "txt"), df)


@pytest.mark.parametrize("col", [pl.Series([1.0, 2.0]), pl.Series(["a", "b"]), pl.Series([1, 2])])
def test_non_array_column(col):
    df = pl.DataFrame({"img": col, "txt": col})
    with pytest.raises(ComputeError, match=r"`image`.*must be an Array"):
        run(pc.neg_clip_loss("img", "txt"), df)


def test_width_mismatch():
    df = GOOD.with_columns(txt=pl.Series(np.ones((8, 5))).cast(pl.Array(pl.Float32, 5)))
    for expr in (pc.clip_score("img", "txt"), pc.neg_clip_loss("img", "txt")):
        with pytest.raises(
            ComputeError, match=r"`image` and `text`.*same embedding width, got 4 and 5"
        ):
            run(expr, df)
    with pytest.raises(ComputeError, match=r"`embedding` and `target`.*got 4 and 3"):
        run(pc.normsim("img", np.ones((2, 3))))


def test_row_count_mismatch():
    other = pl.Series(np.ones((3, 4))).cast(pl.Array(pl.Float32, 4))
    with pytest.raises(ComputeError, match="same number of rows, got 8 and 3"):
        run(pc.neg_clip_loss("img", pl.lit(other)))


@pytest.mark.parametrize(
    "kwargs,err,msg",
    [
        ({"batch_size": 0}, ValueError, "batch_size"),
        ({"batch_size": 1.5}, TypeError, "batch_size"),
        ({"num_batches": 0}, ValueError, "num_batches"),
        ({"temperature": 0.0}, ValueError, "temperature"),
        ({"temperature": -1}, ValueError, "temperature"),
        ({"temperature": float("nan")}, ValueError, "temperature"),
        ({"temperature": math.inf}, ValueError, "temperature"),
        ({"seed": -1}, ValueError, "seed"),
        ({"seed": 2**63}, ValueError, "seed"),
        ({"seed": 1.0}, TypeError, "seed"),
        ({"normalize": "yes"}, TypeError, "normalize"),
    ],
)
def test_neg_clip_loss_kwargs(kwargs, err, msg):
    with pytest.raises(err, match=msg):
        pc.neg_clip_loss("img", "txt", **kwargs)


@pytest.mark.parametrize("p", [0, -1.0, float("nan"), "two", None, True])
def test_bad_p(p):
    with pytest.raises((ValueError, TypeError), match="`p`"):
        pc.normsim("img", T, p=p)


def test_bad_targets(tmp_path):
    with pytest.raises(ValueError, match="empty"):
        pc.normsim("img", np.zeros((0, 4)))
    with pytest.raises(FileNotFoundError, match="not found"):
        pc.normsim("img", tmp_path / "missing.npy")
    with pytest.raises(ValueError, match="row 1"):
        pc.normsim("img", np.array([[1.0, 0, 0, 0], [np.nan, 0, 0, 0]]))
    with pytest.raises(ValueError, match="row 0"):
        pc.normsim("img", np.zeros((1, 4)))
    with pytest.raises(ValueError, match="2-D"):
        pc.normsim("img", np.zeros((2, 2, 2)))
    with pytest.raises(ValueError, match="List column"):
        pc.normsim("img", pl.Series([[1.0, 2.0]]))
    with pytest.raises(ValueError, match="null row"):
        pc.normsim("img", pl.Series([[1.0, 2.0], None]).cast(pl.Array(pl.Float32, 2)))
    with pytest.raises(ValueError, match=r".npy or .parquet"):
        (tmp_path / "t.csv").write_text("1,2")
        pc.normsim("img", tmp_path / "t.csv")
    with pytest.raises(TypeError, match="not a column"):
        pc.normsim("img", pl.col("txt"))


def test_bad_column_argument_type():
    with pytest.raises(TypeError, match="`image`"):
        pc.clip_score(3, "txt")


BAD_INPUTS = r"""
import polars as pl, numpy as np, polars_curate as pc
cases = [
    pl.DataFrame({"img": pl.Series([[1.0]], dtype=pl.List(pl.Float16))}),
    pl.DataFrame({"img": pl.Series([[1, 2]]).cast(pl.Array(pl.Int16, 2))}),
    pl.DataFrame({"img": pl.Series([{"a": 1}])}),
    pl.DataFrame({"img": pl.Series([1]).cast(pl.Datetime)}),
    pl.DataFrame({"img": pl.Series([1]).cast(pl.Date)}),
    pl.DataFrame({"img": pl.Series(["a"]).cast(pl.Categorical)}),
    pl.DataFrame({"img": pl.Series([b"x"])}),
    pl.DataFrame({"img": pl.Series([None])}),
    pl.DataFrame({"img": pl.Series([[[1.0]]]).cast(pl.Array(pl.Array(pl.Float32, 1), 1))}),
    pl.DataFrame({"img": pl.Series([1.5]).cast(pl.Decimal(10, 2))}),
]
n = 0
for df in cases:
    for expr in (pc.clip_score("img", "img"), pc.neg_clip_loss("img", "img"),
                 pc.normsim("img", np.ones((1, 2)))):
        for engine in ("in-memory", "streaming"):
            try:
                df.lazy().select(expr).collect(engine=engine)
            except Exception as e:
                assert "img" in str(e), str(e)
                n += 1
print("survived", n)
"""


def test_process_survives_every_bad_dtype():
    """Run in a subprocess: an abort would kill pytest itself."""
    r = subprocess.run([sys.executable, "-c", BAD_INPUTS], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "survived 60" in r.stdout, r.stdout + r.stderr[-2000:]


def test_width_zero_array_is_an_error_not_a_panic():
    df = pl.DataFrame({"img": pl.Series([[], []], dtype=pl.Array(pl.Float32, 0))})
    for expr in (pc.clip_score("img", "img"), pc.neg_clip_loss("img", "img")):
        for engine in ("in-memory", "streaming"):
            with pytest.raises(ComputeError, match=r"`image` \(column \"img\"\) has width 0"):
                df.lazy().select(expr).collect(engine=engine)


def test_target_errors_name_the_argument(tmp_path):
    with pytest.raises(ValueError, match="`class_embeddings` is empty"):
        pc.zero_shot_labels("img", np.zeros((0, 4)))
    with pytest.raises(ValueError, match="`target` must be a rectangular array"):
        pc.normsim("img", [[1.0, 2.0], [3.0]])
    with pytest.raises(ValueError, match="`target` must hold numbers"):
        pc.normsim("img", np.array([[1.0, "a"]], dtype=object))
    truncated = tmp_path / "t.npy"
    np.save(truncated, np.ones((10, 4), dtype=np.float32))
    truncated.write_bytes(truncated.read_bytes()[:-20])
    with pytest.raises(ValueError, match=r"`target` file .*t\.npy is not a readable \.npy"):
        pc.normsim("img", truncated)
    with pytest.raises(ValueError, match="`class_embeddings` row 1 holds a NaN"):
        pc.zero_shot_labels("img", np.array([[1.0, 0, 0, 0], [np.nan, 0, 0, 0]]))


def test_finite_target_values_beyond_float32():
    target = np.array([[1e300, 0.0, 0.0, 0.0], [0.0, 1e-300, 0.0, 0.0]])
    out = GOOD.select(pc.normsim("img", target, p="inf")).to_series().to_numpy()
    want = np.abs(X / np.linalg.norm(X, axis=1, keepdims=True))[:, :2].max(axis=1)
    np.testing.assert_allclose(out, want, rtol=1e-5)
    with pytest.raises(ValueError, match=r"`target` row 0 holds 1e\+300, beyond float32"):
        pc.normsim("img", target, normalize=False)


def test_numpy_numbers_are_numbers():
    df = pl.DataFrame({"s": [0.1, 0.5, 0.9, 0.3]})
    assert df.select(pc.top_fraction("s", np.float32(0.5))).to_series().sum() == 2
    assert df.select(pc.top_fraction("s", np.float64(0.5))).to_series().sum() == 2
    pc.neg_clip_loss("img", "txt", batch_size=np.int64(64), temperature=np.float32(0.02))
    pc.normsim2_dynamic("img", keep=np.float32(0.5), sample_fraction=np.float16(0.5))


def test_one_row_classes_broadcast_like_a_polars_literal():
    e = dict(keep=4, pick_batch=1)
    lit = GOOD.select(pc.clipcov("img", "txt", classes=pl.lit(0), **e)).to_series()
    col = GOOD.with_columns(c=pl.lit(0)).select(pc.clipcov("img", "txt", classes="c", **e))
    assert lit.to_list() == col.to_series().to_list()
    assert lit.is_not_null().sum() == 4


@pytest.mark.parametrize(
    "arr",
    [
        np.array([(1.5, 2.0)], dtype=[("a", "f8"), ("b", "f8")]),
        np.array([(-1, 2)], dtype=[("a", "i8"), ("b", "i8")]),
        np.array([(1, 2)], dtype=[("a", "u4"), ("b", "u4")]),
        np.array([[1, 2]], dtype=np.int64),
    ],
)
def test_read_uids_refuses_anything_but_two_uint64_fields(tmp_path, arr):
    path = tmp_path / "u.npy"
    np.save(path, arr)
    with pytest.raises(ValueError, match=r"u\.npy: expected a DataComp uid array"):
        pc.read_uids(path)
