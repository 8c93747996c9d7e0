"""The main job: score a DataComp pool shard by shard, then select a subset.

``score_pool`` writes one ``<shard>.parquet`` of ``uid`` + scores per pool shard. Each file is
written to a temporary name and renamed, a rerun skips finished shards, and scores are
deterministic, so a run killed at any moment and rerun gives exactly the output of an
uninterrupted run. ``select`` applies the rules of docs/methods.md#how-the-methods-combine.
"""

from __future__ import annotations

import json
import math
import os
import time
from collections.abc import Callable, Sequence
from fractions import Fraction
from pathlib import Path

import polars as pl

import polars_curate as pc
from polars_curate.io import _shard_pairs, atomic_write, read_datacomp, read_uids, write_uids

__all__ = ["SCORES", "score_pool", "select"]

#: Score names (as the CLI spells them) and the column each one writes.
SCORES = {
    "ncl": "ncl",
    "clip": "clip",
    "normsim-inf": "normsim_inf",
    "normsim-2": "normsim_2",
}
PARAMS_FILE = "_params.json"


def _expressions(
    scores: Sequence[str],
    model: str,
    normsim_model: str,
    target,
    batch_size: int,
    num_batches: int,
    seed: int,
) -> dict[str, pl.Expr]:
    img, txt = f"{model}_img", f"{model}_txt"
    out = {}
    for s in scores:
        if s not in SCORES:
            raise ValueError(f"unknown score {s!r}; choose from {', '.join(SCORES)}")
        if s.startswith("normsim") and target is None:
            raise ValueError(f"score {s!r} needs --target (downstream image embeddings)")
        if s == "ncl":
            e = pc.neg_clip_loss(
                img, txt, batch_size=batch_size, num_batches=num_batches, seed=seed
            )
        elif s == "clip":
            e = pc.clip_score(img, txt)
        else:
            e = pc.normsim(f"{normsim_model}_img", target, p="inf" if s == "normsim-inf" else 2.0)
        out[SCORES[s]] = e
    return out


def score_pool(
    pool: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    target: str | os.PathLike[str] | None = None,
    scores: Sequence[str] = ("ncl", "clip"),
    model: str = "l14",
    normsim_model: str | None = None,
    batch_size: int = 32768,
    num_batches: int = 10,
    seed: int = 0,
    progress: bool = True,
) -> list[Path]:
    """Score every shard of ``pool`` into ``out/<shard>.parquet`` (``uid`` + one column per score).

    ``model`` names the npz embeddings of the CLIP teacher (``l14`` -> ``l14_img``/``l14_txt``);
    ``normsim_model`` those NormSim uses (default: the same; docs/methods.md allows e.g. L/14 for
    negCLIPLoss and B/32 for NormSim). negCLIPLoss batches within each shard, like the reference
    implementation. Memory stays
    about one shard. Shards already scored (with the same parameters, recorded in
    ``out/_params.json``) are skipped; rerunning with other parameters is an error rather than
    a silent mix.
    """
    pairs = _shard_pairs(pool)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    normsim_model = normsim_model or model
    params = {
        "scores": list(scores),
        "model": model,
        "normsim_model": normsim_model,
        "target": None if target is None else str(Path(target).resolve()),
        "batch_size": batch_size,
        "num_batches": num_batches,
        "seed": seed,
    }
    pfile = out / PARAMS_FILE
    if pfile.exists():
        old = json.loads(pfile.read_text())
        if old != params:
            raise ValueError(
                f"{out} holds scores made with other parameters ({old}); use another --out"
            )
    else:
        atomic_write(pfile, lambda f: f.write(json.dumps(params, indent=1).encode()))
    for stale in out.glob(".*.tmp"):  # left by a killed run; never under a final name
        stale.unlink(missing_ok=True)
    exprs = _expressions(scores, model, normsim_model, target, batch_size, num_batches, seed)
    keys = list(dict.fromkeys([f"{model}_img", f"{model}_txt", f"{normsim_model}_img"]))
    bar = _progress(len(pairs), enabled=progress)
    written = []
    for pq, _npz in pairs:
        dest = out / f"{pq.stem}.parquet"
        if dest.exists():
            rows = pl.scan_parquet(dest).select(pl.len()).collect().item()
        else:
            df = read_datacomp(pq, keys=keys, shard_column=None)
            result = df.select("uid", **exprs)
            atomic_write(dest, result.write_parquet)
            rows = result.height
        written.append(dest)
        bar(pq.stem, rows)
    bar(None, 0)
    return written


def _progress(total: int, *, enabled: bool) -> Callable[[str | None, int], None]:
    """A tqdm bar over shards that also shows rows/s (no-op when disabled)."""
    if not enabled:
        return lambda name, rows: None
    from tqdm import tqdm

    bar = tqdm(total=total, unit="shard", dynamic_ncols=True)
    start, seen = time.perf_counter(), [0]

    def update(name: str | None, rows: int) -> None:
        if name is None:
            bar.close()
            return
        seen[0] += rows
        rate = seen[0] / max(time.perf_counter() - start, 1e-9)
        bar.set_postfix_str(f"{name}, {rate:,.0f} rows/s")
        bar.update(1)

    return update


def _parse_keep(rule: str) -> tuple[str, Fraction]:
    name, sep, frac = rule.partition(":")
    if not sep:
        raise ValueError(f"--keep {rule!r}: expected SCORE:FRACTION, e.g. ncl:0.3")
    try:
        f = float(frac)
    except ValueError:
        raise ValueError(f"--keep {rule!r}: {frac!r} is not a number") from None
    if not (0 <= f <= 1) or math.isnan(f):
        raise ValueError(f"--keep {rule!r}: the fraction must be in [0, 1]")
    return name.strip(), Fraction(f).limit_denominator(10**9)


def select(
    scores_dir: str | os.PathLike[str],
    out: str | os.PathLike[str],
    keep: Sequence[str],
    *,
    base: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] = print,
) -> int:
    """Sequential fraction rules (docs/methods.md#how-the-methods-combine); writes a subset.

    The start set is the whole pool (or, with ``base``, the pool rows whose uid is in that
    subset). Each rule ``SCORE:F`` keeps, of the rows still in, the ``floor(F * start)`` with
    the highest score (ties: the smaller uid; rows without the score are never kept). So
    ``ncl:0.3`` then ``normsim-inf:0.2`` keeps 30% then 20% of the pool. Returns the count.
    """
    scores_dir = Path(scores_dir)
    files = sorted(p for p in scores_dir.glob("*.parquet") if not p.name.startswith("."))
    if not files:
        raise FileNotFoundError(f"no score files (*.parquet) in {scores_dir}")
    rules = [_parse_keep(r) for r in keep]
    df = pl.read_parquet(files).sort("uid")
    what = "pool"
    if base is not None:
        base_uids = read_uids(base)["uid"]
        df = df.filter(pl.col("uid").is_in(base_uids.implode()))
        what = f"pool rows in {Path(base).name}"
    start = df.height
    log(f"start: {start:,} rows ({what})")
    for name, frac in rules:
        col = SCORES.get(name, name)
        if col not in df.columns:
            raise ValueError(f"--keep {name}: no such score in {scores_dir} (has {df.columns[1:]})")
        k = start * frac.numerator // frac.denominator
        rank = pl.col(col).fill_nan(None).rank("ordinal", descending=True)
        df = df.filter(rank <= k)
        log(f"{name} top {float(frac):.0%} of start: {df.height:,} rows kept")
    n = write_uids(df, out)
    log(f"wrote {n:,} uids to {out}")
    return n


def score_columns(scores_dir: str | os.PathLike[str]) -> pl.DataFrame:
    """All score files of a directory as one frame (for reports)."""
    files = sorted(p for p in Path(scores_dir).glob("*.parquet") if not p.name.startswith("."))
    if not files:
        raise FileNotFoundError(f"no score files (*.parquet) in {scores_dir}")
    return pl.read_parquet(files)
