"""The scoring job on a local Ray cluster against the same job run locally (`make bench-ray`).

A local cluster of two node processes with one CPU each has the machine's two cores, as the
local run does (the plugin's pool of two threads), so the ratio of the two wall times is the
efficiency of the Ray path: task scheduling, one worker process per task environment, the
target through the object store, reading and writing per unit. Prints both times, the
efficiency, and checks that the outputs are the same bytes.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import polars_curate as pc
from polars_curate.datasets import synthetic_pool


def files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.glob("*.parquet"))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--units", type=int, default=16)
    ap.add_argument("--rows", type=int, default=4096, help="rows per unit")
    ap.add_argument("--d", type=int, default=768)
    ap.add_argument("--num-batches", type=int, default=4)
    args = ap.parse_args()
    try:
        import ray  # noqa: F401
    except ImportError:
        sys.exit('Ray is not installed: pip install "polars-curate[ray]"')
    from polars_curate.distributed import LocalCluster

    root = Path(tempfile.mkdtemp(prefix="bench-ray-"))
    try:
        pool = synthetic_pool(root / "p", n=args.units * args.rows, d=args.d, shards=args.units)
        opts = dict(
            target=pool["target"],
            scores=["ncl", "clip", "normsim-inf"],
            batch_size=args.rows,
            num_batches=args.num_batches,
            progress=False,
        )
        flops = 2.0 * args.units * args.rows**2 * args.d * args.num_batches
        print(
            f"{args.units} units of {args.rows} rows x {args.d} float16, negCLIPLoss K = "
            f"{args.num_batches} (B = {args.rows}) + CLIPScore + NormSim_inf; "
            f"{os.cpu_count()} cores"
        )
        t0 = time.perf_counter()
        pc.score_pool(pool["pool"], root / "local", **opts)
        local = time.perf_counter() - t0
        t0 = time.perf_counter()
        with LocalCluster(nodes=2, cpus=1, temp_dir=str(root / "ray")) as cluster:
            started = time.perf_counter() - t0
            t0 = time.perf_counter()
            pc.score_pool(pool["pool"], root / "ray-out", ray=cluster.address, **opts)
            on_ray = time.perf_counter() - t0
        same = files(root / "local") == files(root / "ray-out")
        print(
            f"local (2 threads):               {local:7.1f} s  ({flops / local / 1e9:.0f} GFLOP/s)"
        )
        print(f"Ray, 2 nodes x 1 CPU:            {on_ray:7.1f} s  (cluster start {started:.1f} s)")
        print(f"efficiency (local / Ray):        {local / on_ray:7.2f}")
        print(f"identical output:                {same}")
        result = dict(
            local_s=local,
            ray_s=on_ray,
            cluster_start_s=started,
            efficiency=local / on_ray,
            identical=same,
        )
        out = Path(__file__).resolve().parent.parent / "bench-results"
        out.mkdir(exist_ok=True)
        (out / "ray.json").write_text(json.dumps(result, indent=1))
        if not same:
            sys.exit("outputs differ")
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
