"""Pools in both layouts, units inside large files, and memory that does not grow with the
pool."""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import polars as pl
import pytest

import polars_curate as pc
from polars_curate.datasets import synthetic_pool
from polars_curate.pool import list_pool, plan_units


def scored(out):
    return pl.concat([pl.read_parquet(p) for p in sorted(out.glob("*.parquet"))])


OPTS = dict(scores=["ncl", "clip", "normsim-inf"], batch_size=300, num_batches=2, progress=False)


def test_both_layouts_give_identical_scores(tmp_path):
    npz = synthetic_pool(tmp_path / "npz", n=3000, d=32, seed=4, shards=3)
    pq = synthetic_pool(tmp_path / "pq", n=3000, d=32, seed=4, shards=3, layout="parquet")
    a = pc.score_pool(npz["pool"], tmp_path / "a", target=npz["target"], **OPTS)
    b = pc.score_pool(pq["pool"], tmp_path / "b", target=pq["target"], **OPTS)
    assert a.units == b.units == 3
    assert scored(tmp_path / "a").equals(scored(tmp_path / "b"))
    x = pc.scan_pool(npz["pool"]).collect()
    y = pc.scan_pool(pq["pool"]).collect()
    assert x.select(y.columns).equals(y)
    assert x["shard"].unique().sort().to_list() == ["00000000", "00000001", "00000002"]


def test_units_cut_large_files_at_row_groups(tmp_path):
    p = synthetic_pool(
        tmp_path / "p", n=2500, d=8, seed=5, shards=1, layout="parquet", row_group_size=400
    )
    (shard,) = list_pool(p["pool"])
    assert shard.row_groups == (400,) * 6 + (100,)
    units = plan_units([shard], 1000)
    # Consecutive row groups fill a unit up to 1000 rows: 400 + 400, 400 + 400, 400 + 400 + 100.
    assert [(u.name, u.start, u.rows) for u in units] == [
        ("00000000.00000", 0, 800),
        ("00000000.00001", 800, 800),
        ("00000000.00002", 1600, 900),
    ]
    # A row group larger than a unit is cut inside.
    assert [(u.start, u.rows) for u in plan_units([shard], 300)][:3] == [
        (0, 300),
        (300, 100),
        (400, 300),
    ]
    assert [u.rows for u in plan_units([shard], None)] == [2500]


def test_one_big_file_or_many_small_ones_give_the_same_output(tmp_path):
    big = synthetic_pool(
        tmp_path / "big", n=3000, d=16, seed=6, shards=1, layout="parquet", row_group_size=500
    )
    small = synthetic_pool(tmp_path / "small", n=3000, d=16, seed=6, shards=6, layout="parquet")
    a = pc.score_pool(big["pool"], tmp_path / "a", target=big["target"], unit_rows=500, **OPTS)
    b = pc.score_pool(small["pool"], tmp_path / "b", target=small["target"], unit_rows=500, **OPTS)
    assert a.units == b.units == 6
    assert scored(tmp_path / "a").equals(scored(tmp_path / "b"))
    # The units are recorded: the run says which rows of which file each one holds.
    (run,) = (json.loads(p.read_text()) for p in (tmp_path / "a" / "_runs").glob("*.json"))
    assert [(u["unit"], u["start"], u["rows"]) for u in run["units"]][:2] == [
        ("00000000.00000", 0, 500),
        ("00000000.00001", 500, 500),
    ]


def test_scan_pool_projects_filters_and_limits(tmp_path):
    p = synthetic_pool(tmp_path / "p", n=600, d=8, seed=7, shards=3)
    lf = pc.scan_pool(p["pool"], embeddings=["l14_img"])
    assert lf.collect_schema()["l14_img"] == pl.Array(pl.Float16, 8)
    assert "b32_img" not in lf.collect_schema()
    got = lf.filter(pl.col("shard") == "00000001").select("uid", "shard").collect()
    assert got.height == 200 and got["shard"].unique().to_list() == ["00000001"]
    assert lf.head(250).collect().height == 250
    full = pc.scan_pool(p["pool"]).with_columns(
        ns=pc.normsim("l14_img", np.load(p["target"]), p="inf")
    )
    assert full.collect(engine="streaming")["ns"].null_count() == 0


MEMORY = r"""
import resource, sys, time
import polars_curate as pc
from polars_curate.datasets import synthetic_pool
root, n, layout = sys.argv[1], int(sys.argv[2]), sys.argv[3]
shards = 1 if layout == "one" else n // 20_000
p = synthetic_pool(root + "/p", n=n, d=256, seed=1, shards=shards,
                   layout="parquet" if layout != "npz" else "npz", row_group_size=10_000)
import gc; gc.collect()
with open("/proc/self/clear_refs", "w") as f:
    f.write("5")
base = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
pc.score_pool(p["pool"], root + "/s", scores=["ncl", "clip"], batch_size=4096,
              num_batches=1, unit_rows=20_000, progress=False)
peak = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
print((peak - base) // 1024)
"""


def _growth_mib(tmp_path, n, layout):
    r = subprocess.run(
        [sys.executable, "-c", MEMORY, str(tmp_path / f"{layout}{n}"), str(n), layout],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return int(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("layout", ["npz", "parquet", "one"])
def test_memory_is_flat_when_the_pool_doubles(tmp_path, layout):
    # Units of 20,000 rows x 256 float16 image + text embeddings (20 MB): the peak RSS growth of
    # a run over 80,000 rows and one over 160,000 rows must be about the same (one unit plus
    # working memory), also when all rows sit in one file.
    small = _growth_mib(tmp_path, 80_000, layout)
    large = _growth_mib(tmp_path, 160_000, layout)
    assert large <= small + 40, f"{layout}: {small} MiB for 80k rows, {large} MiB for 160k"
