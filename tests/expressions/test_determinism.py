"""Same input and seed: bit-identical output for any thread count, chunking and engine."""

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from support import clip_like, frame

import polars_curate as pc

HERE = Path(__file__).parent
SUPPORT = HERE.parent  # support.py, on the children's PYTHONPATH


def hashes(threads: int) -> list[str]:
    env = dict(os.environ, POLARS_MAX_THREADS=str(threads), PYTHONPATH=str(SUPPORT))
    r = subprocess.run(
        [sys.executable, str(HERE / "_determinism_job.py")], env=env, capture_output=True, text=True
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout.split("\n")


def test_threads_and_engines():
    one = hashes(1)
    assert len([x for x in one if x]) == 16  # 8 expressions x 2 engines
    assert one == hashes(2) == hashes(3)
    lines = [x.split() for x in one if x]
    by_engine = {name: set() for name, _ in lines}
    for name, digest in lines:
        by_engine[name].add(digest)
    assert all(len(v) == 1 for v in by_engine.values()), by_engine


def test_chunking_and_row_batches():
    x, t = clip_like(2000, 32, seed=5)
    target, _ = clip_like(50, 32, seed=6)
    whole = frame("f32", img=x, txt=t)
    chunked = pl.concat([whole[i : i + 77] for i in range(0, 2000, 77)], rechunk=False)
    assert chunked.n_chunks() > 20
    exprs = dict(
        c=pc.clip_score("img", "txt"),
        n=pc.neg_clip_loss("img", "txt", batch_size=512, num_batches=2, seed=3),
        s=pc.normsim("img", target, p="inf"),
        s2=pc.normsim("img", target, p=2),
    )
    a = whole.select(**exprs)
    b = chunked.select(**exprs)
    assert a.equals(b)
    # Elementwise scores of a slice equal the slice of the scores.
    part = whole[300:1234].select(c=exprs["c"], s=exprs["s"], s2=exprs["s2"])
    assert part.equals(a[300:1234].select("c", "s", "s2"))


def test_same_seed_same_bits_different_seed_different():
    x, t = clip_like(500, 16, seed=7)
    df = frame(img=x, txt=t)
    e = lambda s: pc.neg_clip_loss("img", "txt", batch_size=100, seed=s)  # noqa: E731
    a, b, c = (df.select(e(s))["img"].to_numpy() for s in (1, 1, 2))
    assert np.array_equal(a, b) and not np.array_equal(a, c)


def test_kernels_on_the_pool_or_the_calling_thread_give_the_same_bits():
    """The elementwise scores, streamed per morsel and selected per chunk, with every call on the
    plugin's pool, on the calling Polars thread, or as Polars' caller context says (auto)."""
    from polars_curate import _internal

    x, t = clip_like(6000, 40, seed=8)
    target, _ = clip_like(300, 40, seed=9)
    df = pl.concat(
        [frame("f16", img=x[i : i + 500], txt=t[i : i + 500]) for i in range(0, 6000, 500)],
        rechunk=False,
    )
    exprs = dict(
        c=pc.clip_score("img", "txt"),
        s=pc.normsim("img", target, p="inf"),
        s3=pc.normsim("img", target, p=3),
        z=pc.zero_shot_labels("img", target),
    )
    outputs, placed = {}, {}
    try:
        for mode in ("pool", "caller", "auto"):
            _internal.set_thread_mode(mode)
            _, caller0, pool0 = _internal.thread_placements()
            for engine in ("in-memory", "streaming"):
                outputs[mode, engine] = df.lazy().select(**exprs).collect(engine=engine)
            _, caller1, pool1 = _internal.thread_placements()
            placed[mode] = (caller1 - caller0, pool1 - pool0)
    finally:
        _internal.set_thread_mode("auto")
    first = outputs["pool", "in-memory"]
    assert all(o.equals(first) for o in outputs.values())
    assert placed["pool"][0] == 0 and placed["pool"][1] > 0
    assert placed["caller"][0] > 0 and placed["caller"][1] == 0
    assert sum(placed["auto"]) == sum(placed["pool"])
    with pytest.raises(ValueError, match="auto, pool or caller"):
        _internal.set_thread_mode("threads")
