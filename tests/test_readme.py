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
    assert subset.height == 600  # 30% of 3,000, then 2/3 of those: 20% of the pool
    assert pc.read_uids(tmp_path / "subset.npy")["uid"].sort().to_list() == sorted(
        subset["uid"].to_list()
    )
