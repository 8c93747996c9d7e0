"""What Python users do to a process: fork it after the plugin ran, press Ctrl-C during a long
call. Each case runs in a subprocess: a hang or an abort must not take pytest with it."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent

FORK = r"""
import multiprocessing as mp
import numpy as np, polars as pl, polars_curate as pc
from polars_curate import _internal

_internal.set_thread_count(2)  # our pool: 2 threads, built in the parent
rng = np.random.default_rng(0)
emb = pl.Array(pl.Float32, 8)
df = pl.DataFrame({"a": rng.random((300, 8), dtype=np.float32),
                   "b": rng.random((300, 8), dtype=np.float32)}).cast({"a": emb, "b": emb})
t = rng.random((5, 8))

exprs = [pc.clip_score("a", "b"), pc.neg_clip_loss("a", "b", batch_size=100),
         pc.normsim("a", t, p="inf")]

def run(_=None):
    # One expression per select: Polars runs several in parallel on its own pool.
    return [df.select(e).to_series().to_list() for e in exprs], _internal.thread_count()

parent = run()
with mp.get_context("fork").Pool(2) as pool:
    children = pool.map_async(run, [1, 2]).get(timeout=60)
assert all(c == parent for c in children), "children must compute what the parent does"
print("ok", parent[1])
"""


def test_plugin_works_in_a_forked_child():
    # Polars' own thread pool is not fork-safe (a child cannot run a query that needs it once
    # the parent has used it); with POLARS_MAX_THREADS=1 Polars does not need it for these
    # eager selects, so what is tested is the plugin's pool, which has 2 threads here and
    # must be rebuilt in each child.
    env = dict(os.environ, POLARS_MAX_THREADS="1")
    r = subprocess.run(
        [sys.executable, "-c", FORK], env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["ok", "2"]


LONG_CALL = r"""
import sys, time
import numpy as np, polars as pl, polars_curate as pc
n, d = 65536, 256
rng = np.random.default_rng(0)
x = rng.standard_normal((n, d), dtype=np.float32)
df = pl.DataFrame({"a": x, "b": x}).cast(pl.Array(pl.Float32, d))
expr = pc.neg_clip_loss("a", "b", batch_size=n, num_batches=50)  # minutes of work
print("start", flush=True)
try:
    try:
        df.select(expr)
    except Exception as e:  # the plugin's error; Python's KeyboardInterrupt may follow
        print(f"{type(e).__name__}: {e}", flush=True)
        sys.exit(4)
except KeyboardInterrupt:
    print("KeyboardInterrupt", flush=True)
    sys.exit(3)
print("finished: not interrupted", flush=True)
"""


def test_ctrl_c_stops_a_long_plugin_call():
    proc = subprocess.Popen(
        [sys.executable, "-c", LONG_CALL],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=dict(os.environ, POLARS_MAX_THREADS="2"),
    )
    assert proc.stdout.readline().strip() == "start"
    time.sleep(2.0)  # well inside the first batch
    t0 = time.perf_counter()
    proc.send_signal(signal.SIGINT)
    try:
        out, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        raise AssertionError("the call did not stop within 30 s of Ctrl-C") from None
    stopped = time.perf_counter() - t0
    assert stopped < 5, f"took {stopped:.1f} s to stop"
    # Either Python's KeyboardInterrupt or the plugin's interruption error, never a result.
    assert proc.returncode in (3, 4), out + err[-2000:]
    assert "KeyboardInterrupt" in out or "interrupted" in out, out
