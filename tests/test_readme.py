"""The README's first example runs as written, on a pool laid out as it says."""

from __future__ import annotations

import re
from pathlib import Path

import polars as pl

import polars_curate as pc
from polars_curate.datasets import synthetic_pool

README = Path(__file__).resolve().parents[1] / "README.md"


def test_first_example_runs_as_written(tmp_path, monkeypatch):
    code = re.search(r"```python\n(.*?)```", README.read_text(), re.S).group(1)
    synthetic_pool(tmp_path, n=3000, d=32, shards=3, layout="parquet")
    monkeypatch.chdir(tmp_path)
    scope: dict = {}
    exec(compile(code, str(README), "exec"), scope)
    subset = scope["subset"]
    assert isinstance(subset, pl.DataFrame) and subset.columns == ["uid"]
    pool = pc.scan_pool(tmp_path / "pool").select("uid", "original_width").collect()
    scored = pool.filter(pl.col("original_width") >= 200).height
    assert pl.read_parquet(tmp_path / "scores.parquet")["uid"].equals(
        pool.filter(pl.col("original_width") >= 200)["uid"]
    )
    # 30% of what was scored, then 2/3 of those: 20% of it.
    assert 2000 < scored < 3000 and subset.height == scored * 3 // 10 * 2 // 3
    assert pc.read_uids(tmp_path / "subset.npy")["uid"].sort().to_list() == sorted(
        subset["uid"].to_list()
    )
