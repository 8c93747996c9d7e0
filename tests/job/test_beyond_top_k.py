"""select beyond top-k: sampling with repetition as the last step (read back the way DataComp's
resharder reads a subset), mixed scores against NumPy, and DataComp's own threshold rule."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import polars as pl
from support import fake_scores, figures, values

import polars_curate as pc
from polars_curate import io
from polars_curate.report import write_report
from polars_curate.sample import Sample

CLI = [sys.executable, "-m", "polars_curate.cli"]


def uids(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"{a:016x}{b:016x}" for a, b in rng.integers(0, 2**64, (n, 2), dtype=np.uint64)]


def resharder_counts(subset, pool_uids: list[str]) -> np.ndarray:
    """How often DataComp's resharder writes each pool uid: ``searchsorted`` right minus left
    on the subset (``np.dtype("u8,u8")``, sorted), as ``resharder.py`` does."""
    sub = np.load(subset, mmap_mode="r")
    assert sub.dtype == np.dtype("u8,u8")
    out = []
    for u in pool_uids:
        key = np.array([divmod(int(u, 16), 2**64)], np.dtype("u8,u8"))[0]
        out.append(np.searchsorted(sub, key, "right") - np.searchsorted(sub, key, "left"))
    return np.array(out)


def test_soft_cap_subset_repeats_each_uid_as_often_as_drawn(tmp_path):
    n = 800
    u = uids(n, 1)
    rng = np.random.default_rng(0)
    ncl = rng.normal(size=n)
    d = fake_scores(tmp_path / "s", u, ncl=ncl, clip=rng.random(n))
    sample = Sample.parse("soft-cap:2500", by="ncl", batch=150, alpha=0.3, seed=4)
    log = pc.select(d, tmp_path / "sub.npy", ["clip:0.5"], sample=sample, log=lambda _: None)
    # The same draws as the expression on the candidates in uid order.
    frame = pc.scan_scores(d).collect()
    cand = frame.filter(pc.top_fraction("clip", 0.5, by=["uid_hi", "uid_lo"])).sort("uid")
    want = cand.select(pc.soft_cap_sample("ncl", 2500, batch=150, alpha=0.3, seed=4))["ncl"]
    got = resharder_counts(tmp_path / "sub.npy", cand["uid"].to_list())
    np.testing.assert_array_equal(got, want.to_numpy())
    assert got.sum() == 2500 == log.kept == len(io.read_uids(tmp_path / "sub.npy", repeats=True))
    assert len(io.read_uids(tmp_path / "sub.npy")) == (got > 0).sum()
    rec = json.loads((tmp_path / "sub.select.json").read_text())
    s = rec["sample"]
    assert (s["kind"], s["total"], s["batch"], s["alpha"], s["seed"]) == (
        "soft-cap",
        2500,
        150,
        0.3,
        4,
    )
    counts = np.bincount(got)
    assert s["rows_per_count"] == {str(c): int(k) for c, k in enumerate(counts) if k}
    c3 = cand["ncl"].to_numpy().astype(np.float64)[got == 3]
    assert abs(s["mean_score_per_count"]["3"] - c3.mean()) < 1e-9
    # The report draws the count distribution and the mean score per count.
    page = write_report(d, tmp_path / "r.html", subset=tmp_path / "sub.npy").read_text()
    traces, _ = figures(page)["fig-sampling"]
    assert list(values(traces[0]["x"])) == [c for c, k in enumerate(counts) if k]
    assert list(values(traces[0]["y"])) == [int(k) for k in counts if k]


def test_hard_cap_from_the_cli_is_the_same_bits_for_any_thread_count(tmp_path):
    u = uids(600, 2)
    d = fake_scores(tmp_path / "s", u, ncl=np.random.default_rng(1).normal(size=600))
    outs = []
    for threads in (1, 2):
        out = tmp_path / f"h{threads}.npy"
        env = dict(os.environ, POLARS_MAX_THREADS=str(threads))
        argv = [
            "select",
            d,
            "--out",
            out,
            "--sample",
            "hard-cap:1700",
            "--sample-by",
            "ncl",
            "--limit",
            "4",
            "--temperature",
            "0.5",
            "--seed",
            "9",
        ]
        r = subprocess.run([*CLI, *map(str, argv)], env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr
        outs.append(out.read_bytes())
    assert outs[0] == outs[1]
    got = resharder_counts(tmp_path / "h1.npy", u)
    assert got.sum() == 1700 and got.max() == 4


def test_mixed_rules_against_numpy(tmp_path):
    n = 1000
    u = uids(n, 3)
    rng = np.random.default_rng(2)
    ncl, clip, hype = rng.normal(size=n), rng.random(n), rng.random(n)
    ncl[::50] = np.nan
    d = fake_scores(tmp_path / "s", u, ncl=ncl, clip=clip)
    pl.DataFrame({"uid": u[::-1], "h": hype[::-1]}).write_parquet(tmp_path / "hype.parquet")
    mix = f"m=0.7*z(ncl),0.2*clip,-0.5*z({tmp_path}/hype.parquet#h)"
    log = pc.select(d, tmp_path / "x.npy", ["m:0.3"], mixes=[mix], log=lambda _: None)
    x = ncl.astype(np.float32).astype(np.float64)
    c = clip.astype(np.float32).astype(np.float64)
    ok = ~np.isnan(x)
    m = 0.7 * (x - x[ok].mean()) / x[ok].std() + 0.2 * c - 0.5 * (hype - hype.mean()) / hype.std()
    order = sorted(np.flatnonzero(ok), key=lambda i: (-m[i], u[i]))[: n * 3 // 10]
    assert set(io.read_uids(tmp_path / "x.npy")["uid"]) == {u[i] for i in order}
    terms = log.mixes["m"]["terms"]
    assert abs(terms[0]["mean"] - x[ok].mean()) < 1e-9 and abs(terms[2]["std"] - hype.std()) < 1e-9
    # In the report, the mix is a score like the others, its rule's cut drawn.
    page = write_report(d, tmp_path / "r.html", subset=tmp_path / "x.npy")
    assert "fig-hist-m" in page.read_text()


def test_datacomp_ties_against_numpy(tmp_path):
    n = 997
    u = uids(n, 4)
    rng = np.random.default_rng(3)
    clip = rng.integers(0, 12, n) / 10  # heavy ties
    clip[::31] = np.nan
    d = fake_scores(tmp_path / "s", u, clip=clip)
    v = clip.astype(np.float32)
    for f in (0.3, 0.25, 0.7):
        pc.select(d, tmp_path / "x.npy", [f"clip:{f}"], ties="datacomp", log=lambda _: None)
        threshold = -np.sort(-v)[int(len(v) * f)]  # DataComp's get_threshold
        want = {u[i] for i in np.flatnonzero(v >= threshold)}
        got = set(io.read_uids(tmp_path / "x.npy")["uid"])
        assert got == want and len(got) > int(n * f) + 1  # ties at the cut: all kept
        exact = pc.select(d, tmp_path / "y.npy", [f"clip:{f}"], log=lambda _: None)
        assert exact.kept == n * round(f * 100) // 100 < len(got)


def test_write_and_read_uids_with_repeats(tmp_path):
    u = uids(5, 5)
    io.write_uids([u[3], u[1], u[3], u[3]], tmp_path / "r.npy", repeats=True)
    np.testing.assert_array_equal(resharder_counts(tmp_path / "r.npy", u), [0, 1, 0, 3, 0])
    assert io.read_uids(tmp_path / "r.npy", repeats=True)["uid"].to_list() == sorted(
        [u[1], *[u[3]] * 3]
    )
    assert io.read_uids(tmp_path / "r.npy")["uid"].to_list() == sorted([u[1], u[3]])
