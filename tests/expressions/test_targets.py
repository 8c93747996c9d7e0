"""NormSim targets travel inside the expression: a serialised plan runs in another process,
large targets travel as a path checked against their content, prepared targets are released."""

from __future__ import annotations

import io
import math
import os
import subprocess
import sys
import textwrap

import numpy as np
import polars as pl
import pytest
from support import assert_rel, clip_like, frame

import polars_curate as pc
from polars_curate import _internal

import reference as ref


def test_a_serialised_plan_runs_in_another_process(tmp_path):
    x, _ = clip_like(500, 16, seed=1)
    target, _ = clip_like(30, 16, seed=2)
    path = tmp_path / "pool.parquet"
    frame("f16", img=x).write_parquet(path)
    q = pl.scan_parquet(path).select(
        inf=pc.normsim("img", target, p="inf"),
        two=pc.normsim("img", target, p=2),
        lab=pc.zero_shot_labels("img", target[:5]),
    )
    plan = tmp_path / "plan.bin"
    plan.write_bytes(q.serialize())
    code = (
        "import sys, polars as pl, polars_curate\n"
        "q = pl.LazyFrame.deserialize(open(sys.argv[1], 'rb'))\n"
        "q.collect().write_parquet(sys.argv[2])\n"
    )
    out = tmp_path / "out.parquet"
    r = subprocess.run([sys.executable, "-c", code, str(plan), str(out)], capture_output=True)
    assert r.returncode == 0, r.stderr.decode()[-2000:]
    there = pl.read_parquet(out)
    assert there.equals(q.collect())
    assert_rel(there["inf"], ref.normsim(x.astype(np.float16), target, math.inf))


def test_a_large_target_travels_as_a_checked_path(tmp_path, monkeypatch):
    monkeypatch.setenv("POLARS_CURATE_CACHE_DIR", str(tmp_path / "cache"))
    d = 64
    m = _internal.INLINE_TARGET_MAX // (4 * d) + 10  # just over the inline limit
    target = np.random.default_rng(3).standard_normal((m, d)).astype(np.float32)
    x, _ = clip_like(50, d, seed=4)
    expr = pc.normsim("img", target, p="inf")
    cached = list((tmp_path / "cache").glob("*.npy"))
    assert len(cached) == 1, "written once to a content-addressed file"
    # The plan is small: it holds the path, not the 16 MiB of values.
    assert (
        len(pl.LazyFrame(schema={"img": pl.Array(pl.Float32, d)}).select(expr).serialize())
        < 1 << 20
    )
    got = frame(img=x).select(expr).to_series()
    assert_rel(got, ref.normsim(x.astype(np.float32), target, math.inf))
    # The user's own float32 .npy is read in place, and a change to it is caught.
    own = tmp_path / "t.npy"
    np.save(own, target)
    expr2 = pc.normsim("img", own, p=3)
    _internal.target_cache_clear()
    np.save(own, target[::-1].copy())
    with pytest.raises(pl.exceptions.ComputeError, match="changed since the expression was built"):
        frame(img=x).select(expr2)


RELEASE = r"""
import time, numpy as np, polars as pl, polars_curate as pc
from polars_curate import _internal
df = pl.DataFrame({"img": np.ones((10, 64), dtype=np.float32)}).cast(pl.Array(pl.Float32, 64))
rng = np.random.default_rng(0)
for i in range(200):
    df.select(pc.normsim("img", rng.standard_normal((1000, 64)), p="inf"))
entries, nbytes, hits, misses = _internal.target_cache_info()
print(entries, nbytes, misses)
time.sleep(1.0)
df.select(pc.normsim("img", rng.standard_normal((10, 64)), p="inf"))
print(_internal.target_cache_info()[0])
"""


def test_prepared_targets_are_released():
    env = dict(os.environ, POLARS_CURATE_TARGET_CACHE_MB="1", POLARS_CURATE_TARGET_IDLE_S="0.5")
    r = subprocess.run([sys.executable, "-c", RELEASE], env=env, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    first, second = r.stdout.splitlines()
    entries, nbytes, misses = map(int, first.split())
    assert misses == 200
    assert entries <= 4 and nbytes <= 1 << 20, "at most the budget stays prepared"
    assert int(second) == 1, "targets idle longer than the limit are released"


def test_expression_is_cheap_to_build_and_prepares_on_use():
    target = np.random.default_rng(5).standard_normal((300, 8))
    _internal.target_cache_clear()
    before = _internal.target_cache_info()
    expr = pc.normsim("img", target, p=2)
    assert _internal.target_cache_info() == before, "nothing is prepared until a query runs"
    buf = io.BytesIO(pl.LazyFrame(schema={"img": pl.Array(pl.Float32, 8)}).select(expr).serialize())
    assert buf.getbuffer().nbytes > 300 * 8 * 4, "the values travel inside the plan"


def test_concurrent_morsels_preparing_a_target_never_deadlock():
    """Many morsels ask for a target that is still being prepared (in parallel, on the plugin's
    pool). They used to wait for it inside the pool, where a waiting worker could hold work of
    the preparation itself: about one run in six of the quickstart hung forever."""
    code = textwrap.dedent(
        """
        import numpy as np, polars as pl, polars_curate as pc
        rng = np.random.default_rng(0)
        x = rng.standard_normal((40_000, 64)).astype(np.float32)
        df = pl.DataFrame({"a": x}).with_columns(pl.col("a").cast(pl.Array(pl.Float32, 64)))
        for i in range(40):  # a new target each time: prepared while the morsels wait
            t = rng.standard_normal((6_000, 64)).astype(np.float32)
            df.lazy().select(pc.normsim("a", t, p="inf")).collect(engine="streaming")
            df.select(pc.normsim("a", t[:3000], p=3)).to_series()
        print("ok")
        """
    )
    env = {**os.environ, "POLARS_MAX_THREADS": "4", "POLARS_IDEAL_MORSEL_SIZE": "1000"}
    r = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=300, env=env
    )
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
