"""The main job on the built-in sample pool, through the command line (``make demo``).

1. writes a synthetic pool in DataComp's layout (shards of .parquet + .npz, float16 embeddings),
   a downstream-like target set and a DFN-like uid subset;
2. ``polars-curate score``  -> one score file per shard (negCLIPLoss, CLIPScore, NormSim_inf);
3. ``polars-curate select`` -> subsets by the recipes of docs/methods.md;
4. ``polars-curate report`` -> an HTML report;
5. prints how well each subset recovers the planted good pairs.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import polars as pl

from polars_curate import read_datacomp, read_uids
from polars_curate.datasets import synthetic_pool

OUT = Path(sys.argv[1] if len(sys.argv) > 1 else "demo-out")


def cli(*args: str) -> None:
    cmd = [sys.executable, "-m", "polars_curate.cli", *args]
    print("$ polars-curate " + " ".join(args), flush=True)
    subprocess.run(cmd, check=True)


def main() -> None:
    paths = synthetic_pool(OUT, n=40_000, d=256, seed=0, shards=4)
    pool, target, dfn = (str(paths[k]) for k in ("pool", "target", "dfn"))
    scores = str(OUT / "scores")
    cli(
        "score",
        pool,
        "--out",
        scores,
        "--target",
        target,
        "--scores",
        "ncl,clip,normsim-inf",
        "--batch-size",
        "4096",
    )
    subsets = {
        "CLIPScore top 30%": ["--keep", "clip:0.3"],
        "negCLIPLoss top 30%": ["--keep", "ncl:0.3"],
        "negCLIPLoss 30% -> NormSim_inf 20%": ["--keep", "ncl:0.3", "--keep", "normsim-inf:0.2"],
        "DFN-like base": ["--base", dfn, "--keep", "ncl:1.0"],
        "DFN-like -> negCLIPLoss 90% -> NormSim_inf 80%": [
            "--base",
            dfn,
            "--keep",
            "ncl:0.9",
            "--keep",
            "normsim-inf:0.8",
        ],
    }
    files = {}
    for i, (name, rule) in enumerate(subsets.items()):
        files[name] = OUT / f"subset_{i}.npy"
        cli("select", scores, "--out", str(files[name]), *rule)
    cli(
        "report",
        scores,
        "--out",
        str(OUT / "report.html"),
        "--base",
        dfn,
        "--subset",
        str(files["negCLIPLoss 30% -> NormSim_inf 20%"]),
        "--pool",
        pool,
    )

    truth = read_datacomp(pool, keys=[], shard_column=None).select("uid", "kind", "concept")
    rows = []
    for name, f in [("whole pool", None), *files.items()]:
        kept = truth if f is None else truth.join(read_uids(f).select("uid"), on="uid")
        rows.append(
            {
                "subset": name,
                "rows": kept.height,
                "precision (good pairs)": round((kept["kind"] == "good").mean(), 3),
                "generic captions": (kept["kind"] == "generic").sum(),
                "downstream concepts": round((kept["concept"] < 5).mean(), 3),
            }
        )
    print()
    with pl.Config(
        tbl_hide_dataframe_shape=True,
        fmt_str_lengths=50,
        tbl_width_chars=140,
        tbl_hide_column_data_types=True,
    ):
        print(pl.DataFrame(rows))
    print(f"\nreport: {OUT / 'report.html'}")


if __name__ == "__main__":
    main()
