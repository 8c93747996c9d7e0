"""Where the plugin's kernels run inside Polars: on the plugin's pool or on the calling thread.

    .venv/bin/python benches/bench_threads.py            # 300k rows, d = 768 (about 2 minutes)
    .venv/bin/python benches/bench_threads.py --quick    # 200k rows, 3 runs

Polars' streaming engine calls an elementwise plugin once per morsel, from each of its threads
at once, while its other threads read and decode Parquet. The plugin can run each call's tiles on
its own pool (``pool``: the calling Polars thread waits, so at most the pool's threads compute)
or sequentially on the calling thread (``caller``: Polars' threads are the only parallelism).
This script writes a pool of float16 embeddings once, then times
``scan_parquet(...).select(score).sink_parquet(...)`` for NormSim (p = inf) and CLIPScore in
both modes, interleaved, best of ``--repeat``, and checks that both give the same bytes. The
in-memory engine (one call for the whole column) is timed too: there ``caller`` runs on one
thread, which is why the plugin only uses it when Polars calls in parallel.

``POLARS_MAX_THREADS`` (Polars' threads and the plugin's pool) is set to the cores, or to
``--threads``; the script re-executes itself with it, since both read it once.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def restart_with_threads(threads: int) -> None:
    if os.environ.get("POLARS_MAX_THREADS") != str(threads):
        os.environ["POLARS_MAX_THREADS"] = str(threads)
        os.execv(sys.executable, [sys.executable, *sys.argv])


def write_pool(path: Path, rows: int, d: int) -> None:
    """`rows` random unit image and text embeddings (float16), written in row groups."""
    import polars as pl
    import pyarrow.parquet as pq

    rng = np.random.default_rng(0)
    writer = None
    for s in range(0, rows, 50_000):
        n = min(50_000, rows - s)
        cols = {}
        for name in ("img", "txt"):
            v = rng.standard_normal((n, d), dtype=np.float32)
            v /= np.linalg.norm(v, axis=1, keepdims=True)
            cols[name] = pl.Series(name, v.astype(np.float16)).cast(pl.Array(pl.Float16, d))
        table = pl.DataFrame([pl.Series("uid", np.arange(s, s + n)), *cols.values()]).to_arrow()
        writer = writer or pq.ParquetWriter(path, table.schema)
        writer.write_table(table)
    writer.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rows", type=int, default=300_000)
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--targets", type=int, default=1024, help="NormSim target rows")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per mode (best is kept)")
    ap.add_argument("--threads", type=int, default=os.cpu_count(), help="POLARS_MAX_THREADS")
    ap.add_argument("--quick", action="store_true", help="200k rows, 3 runs")
    a = ap.parse_args()
    restart_with_threads(a.threads)
    if a.quick:
        a.rows, a.repeat = 200_000, 3

    import polars as pl
    from bench import cpu_name  # benches/bench.py, next to this script

    import polars_curate as pc
    from polars_curate import _internal

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "pool.parquet"
        write_pool(src, a.rows, a.dim)
        target = np.random.default_rng(1).standard_normal((a.targets, a.dim), dtype=np.float32)
        exprs = {
            f"normsim p=inf m={a.targets}": pc.normsim("img", target, p="inf"),
            "clip_score": pc.clip_score("img", "txt"),
        }
        print(
            f"{cpu_name()} | {os.cpu_count()} cores | POLARS_MAX_THREADS={a.threads} | "
            f"kernel {_internal.kernel()} | polars {pl.__version__} | {a.rows} rows, d = {a.dim}, "
            f"float16 | best of {a.repeat}, modes interleaved\n"
        )
        header = (
            f"{'score':<22} {'engine':<22} {'pool s (cpu)':>15} {'caller s (cpu)':>15} "
            f"{'pool/caller':>11} {'calls':>6}"
        )
        print(header)
        print("-" * len(header))
        for name, expr in exprs.items():
            time_expr(name, expr, src, a.repeat)
        _internal.set_thread_mode("auto")
    print(
        "\npool: each call's tiles on the plugin's pool (the Polars thread waits); caller: on "
        "the calling Polars thread, sequential inside; (cpu): the process's CPU seconds in that "
        "run; calls: plugin calls per query. Same bytes in both modes (checked)."
    )


def time_expr(name: str, expr, src: Path, repeat: int) -> None:
    """Prints one row per engine: `expr` streamed from `src` into a Parquet file, and selected
    from the whole frame in memory (as read, a chunk per row group, and rechunked)."""
    import polars as pl

    out = src.with_name("out.parquet")
    chunked = pl.read_parquet(src)  # a chunk per row group
    whole = chunked.rechunk()

    sink = lambda: pl.scan_parquet(src).select("uid", s=expr).sink_parquet(out)  # noqa: E731
    sink()  # prepares the target, warms the page cache
    for engine, run, fetch in (
        ("streaming sink_parquet", sink, lambda: pl.read_parquet(out)["s"]),
        (f"in-memory, {chunked.n_chunks()} chunks", lambda: chunked.select(s=expr)["s"], None),
        ("in-memory, 1 chunk", lambda: whole.select(s=expr)["s"], None),
    ):
        (pool, pool_cpu), (caller, caller_cpu), outputs, calls = timed_modes(run, repeat, fetch)
        assert outputs["pool"].equals(outputs["caller"]), f"{name}: modes differ"
        print(
            f"{name:<22} {engine:<22} {pool:>7.3f} ({pool_cpu:>5.2f}) {caller:>7.3f} "
            f"({caller_cpu:>5.2f}) {pool / caller:>11.2f} {calls:>6}",
            flush=True,
        )


def timed_modes(run, repeat: int, fetch=None):
    """`(wall s, CPU s)` of the fastest run of `pool` and of `caller` (interleaved), each
    mode's output (what `fetch()` or else `run` returns, after the timing), and the plugin
    calls per run."""
    from polars_curate import _internal as internal

    times = {"pool": [], "caller": []}
    calls, outputs = 0, {}
    for _ in range(repeat):
        for mode, ts in times.items():
            internal.set_thread_mode(mode)
            gc.collect()
            before = sum(internal.thread_placements()[1:])
            t0, c0 = time.perf_counter(), time.process_time()
            out = run()
            ts.append((time.perf_counter() - t0, time.process_time() - c0))
            calls = sum(internal.thread_placements()[1:]) - before
            outputs[mode] = fetch() if fetch else out
    return min(times["pool"]), min(times["caller"]), outputs, calls


if __name__ == "__main__":
    main()
