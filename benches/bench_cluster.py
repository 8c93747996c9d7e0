"""Clusters on CPU against faiss-cpu, measured in one run on this machine (``make bench-cluster``).

    make bench-cluster                              # k = 1,000 on 200k x 768, 1M assigned
    .venv/bin/python benches/bench_cluster.py --quick

* **fit**: spherical k-means, ``k`` clusters, ``iters`` iterations, on the same ``n x d`` float32
  sample (unit rows around planted directions), ours (``_internal.kmeans_fit``, as ``cluster``
  runs it) and ``faiss.Kmeans(d, k, niter=iters, spherical=True)`` (every row used: its
  ``max_points_per_centroid`` raised; its early stop, on by default in faiss 1.15, off: the
  same iterations). Each in a fresh subprocess: wall time, peak RSS over the
  loaded sample, and the final objective ``sum_i max_j <x_i, c_j>`` of the returned centroids,
  computed here the same way for both (higher is better; the ratio should be within 1%).
* **assign**: ``assign_clusters`` over ``rows`` Float16 rows (in frames of 100k rows, as a
  streaming query calls it) against the fitted centroids, and faiss's ``IndexFlatIP.search(x,
  1)`` on the same rows as float32: rows/s.
* **SemDeDup**: ``semdedup`` on one cluster of ``m`` rows (1k to 50k): rows/s (the work grows
  as ``m^2 d / 2``).

faiss-cpu is a bench-only peer (the ``bench`` extra, which the make target installs). The
header names the CPU and our kernel.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")

import argparse
import json
import subprocess
import sys
import time

import numpy as np
import polars as pl

import polars_curate as pc
from polars_curate import _internal

try:
    import faiss
except ImportError:
    faiss = None

sys.path.insert(0, os.path.dirname(__file__))
from bench import _status_kib, cpu_name


def sample(n: int, d: int, seed: int = 0, planted: int = 2000) -> np.ndarray:
    """Unit float32 rows scattered around ``planted`` random directions (CLIP-like clusters)."""
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((planted, d)).astype(np.float32)
    x = centers[rng.integers(0, planted, n)] + 1.2 * rng.standard_normal((n, d)).astype(
        np.float32
    ) / np.float32(np.sqrt(d) / 4)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    return x


def objective(x: np.ndarray, c: np.ndarray) -> float:
    """sum_i max_j <x_i, c_j / |c_j|> in float64, 20k rows at a time."""
    c = c / np.linalg.norm(c, axis=1, keepdims=True)
    return float(sum((x[i : i + 20000] @ c.T).max(axis=1).astype(np.float64).sum()
                     for i in range(0, len(x), 20000)))  # fmt: skip


def fit_child(kind: str, n: int, d: int, k: int, iters: int) -> None:
    """In a subprocess: fit, and print time, peak RSS growth and the centroids' path."""
    x = sample(n, d)
    series = pl.Series("x", x).cast(pl.Array(pl.Float32, d)) if kind == "ours" else None
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
    before = _status_kib("VmRSS")
    t0 = time.perf_counter()
    if kind == "ours":
        data = _internal.kmeans_fit(series, k, iters, 0, lambda *a: True)
        c = np.frombuffer(data, dtype="<f4").reshape(k, d)
    else:
        km = faiss.Kmeans(d, k, niter=iters, spherical=True, seed=1, max_points_per_centroid=n)
        km.cp.early_stop_threshold = -1.0  # every iteration, as ours (faiss 1.15 stops early)
        km.train(x)
        c = km.centroids
        assert len(km.iteration_stats) == iters, len(km.iteration_stats)
    secs = time.perf_counter() - t0
    peak = (_status_kib("VmHWM") - before) / 1024
    out = f"/tmp/bench-cluster-{kind}.npy"
    np.save(out, c)
    print(json.dumps({"secs": secs, "peak_mib": peak, "centroids": out}))


def fit(kind: str, n: int, d: int, k: int, iters: int) -> dict:
    args = [sys.executable, __file__, "--fit-child", kind, str(n), str(d), str(k), str(iters)]
    r = subprocess.run(args, capture_output=True, text=True, check=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def best(f, repeat: int = 2) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return min(times)


def assign_rates(rows: int, d: int, c: np.ndarray) -> tuple[float, float | None]:
    chunk = 100_000
    x = sample(chunk, d, seed=5)
    frame = pl.DataFrame({"x": pl.Series(x).cast(pl.Array(pl.Float16, d))})
    expr = pc.assign_clusters("x", c)
    ours = best(lambda: [frame.select(expr) for _ in range(rows // chunk)])
    if faiss is None:
        return rows / ours, None
    index = faiss.IndexFlatIP(d)
    index.add(c)
    theirs = best(lambda: [index.search(x, 1) for _ in range(rows // chunk)])
    return rows / ours, rows / theirs


def semdedup_rate(m: int, d: int) -> float:
    x = sample(m, d, seed=m, planted=4)
    frame = pl.DataFrame({"x": pl.Series(x).cast(pl.Array(pl.Float16, d))})
    expr = pc.semdedup("x", by=pl.int_range(pl.len()))
    return m / best(lambda: frame.select(expr), repeat=1 if m > 20_000 else 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="k = 100 on 20k rows, 100k assigned")
    ap.add_argument("--fit-child", nargs=5, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.fit_child:
        kind, *nums = args.fit_child
        fit_child(kind, *map(int, nums))
        return
    n, d, k, iters, rows = (20_000, 768, 100, 20, 100_000) if args.quick else (
        200_000, 768, 1000, 20, 1_000_000)  # fmt: skip
    sizes = [1_000, 5_000] if args.quick else [1_000, 10_000, 50_000]
    print(
        f"polars-curate {pc.__version__} | {cpu_name()} | {os.cpu_count()} cores, "
        f"kernel {_internal.kernel()} | "
        + (f"faiss-cpu {faiss.__version__}" if faiss else "faiss not importable: ours only")
    )
    x = sample(n, d)
    print(f"\nfit: k = {k}, {iters} iterations, {n:,} x {d} float32 sample")
    print(f"{'':8} {'time':>9} {'peak RSS':>10} {'objective':>14} {'vs faiss':>9}")
    results = {}
    for kind in ("ours", "faiss") if faiss else ("ours",):
        r = fit(kind, n, d, k, iters)
        r["objective"] = objective(x, np.load(r["centroids"]))
        results[kind] = r
    for kind, r in results.items():
        ratio = r["objective"] / results["faiss"]["objective"] if faiss else float("nan")
        print(
            f"{kind:8} {r['secs']:>8.1f}s {r['peak_mib']:>7.0f} MiB "
            f"{r['objective']:>14,.1f} {ratio:>9.4f}"
        )
    c = np.load(results["ours"]["centroids"])
    ours, theirs = assign_rates(rows, d, c)
    print(f"\nassign {rows:,} rows to {k} centroids (d = {d}): ours {ours:,.0f} rows/s", end="")
    print(f", faiss IndexFlatIP {theirs:,.0f} rows/s" if theirs else "")
    print("\nSemDeDup, one cluster of m rows (d = 768):")
    for m in sizes:
        print(f"  m = {m:>6,}: {semdedup_rate(m, d):>10,.0f} rows/s")


if __name__ == "__main__":
    main()
