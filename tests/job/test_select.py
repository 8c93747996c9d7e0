"""`select` streams to the same subset as a brute-force sort, for every rule kind, with ties,
with and without a base, and with refinement passes forced by a tiny in-memory cap."""

from __future__ import annotations

import json
from fractions import Fraction

import numpy as np
import polars as pl
import pytest
from support import fake_scores

import polars_curate as pc
from polars_curate import io, kth
from polars_curate import rules as sel
from polars_curate._validate import as_fraction
from polars_curate.partitions import DEFAULT_BUDGET


def uids(n, seed):
    rng = np.random.default_rng(seed)
    return [f"{a:016x}{b:016x}" for a, b in rng.integers(0, 2**63, size=(n, 2), dtype=np.uint64)]


def brute(df: pl.DataFrame, rules, start: int) -> set[str]:
    """The rule list applied by sorting everything (the reference): fraction rules keep
    floor(F * start) rows by score descending, ties to the smaller uid; thresholds filter."""
    df = df.with_columns(io.uid_key_exprs("uid"))
    for r in rules:
        col = r["col"]
        valid = pl.col(col).is_not_null() & pl.col(col).is_not_nan()
        if "op" in r:
            ops = {">=": pl.col(col) >= r["v"], "<": pl.col(col) < r["v"]}
            df = df.filter(valid & ops[r["op"]])
        else:
            k = start * r["f"].numerator // r["f"].denominator
            df = df.filter(valid).sort([col, "uid_hi", "uid_lo"], descending=[True, False, False])
            df = df.head(k)
    return set(df["uid"].to_list())


@pytest.fixture(params=[True, False], ids=["refined", "in-memory"])
def tiny_cap(request, monkeypatch):
    if request.param:  # force histogram passes and the tie-refinement on the uid
        monkeypatch.setattr(kth, "SORT_CAP", 40)
        monkeypatch.setattr(kth, "BUCKETS", 4)
    return request.param


@pytest.fixture(params=[DEFAULT_BUDGET, 1000], ids=["one-part", "key-parts"])
def budget(request):
    """The default budget, and one so small that every key set is cut into many parts."""
    return request.param


def test_fractions_thresholds_ties_and_base_match_a_brute_force_sort(tmp_path, tiny_cap, budget):
    n = 1500
    rng = np.random.default_rng(0)
    u = uids(n, 1)
    ncl = rng.normal(size=n).round(1)  # heavy ties
    ncl[rng.integers(0, n, 40)] = np.nan
    ns = rng.random(n)
    ns[:300] = 0.5  # one huge tie block
    ns[rng.integers(0, n, 30)] = np.nan
    d = fake_scores(tmp_path / "s", u, ncl=ncl, normsim_inf=ns)
    df = pl.DataFrame({"uid": u, "ncl": ncl, "normsim_inf": ns}).with_columns(
        pl.col("ncl", "normsim_inf").cast(pl.Float32)
    )
    base = u[::2] + uids(17, 9)  # half the pool, plus uids without scores
    io.write_uids(pl.Series("uid", base), tmp_path / "base.npy")
    cases = [
        (
            ["ncl:0.3", "normsim-inf:0.2"],
            [dict(col="ncl", f=Fraction(3, 10)), dict(col="normsim_inf", f=Fraction(1, 5))],
            None,
        ),
        (["normsim-inf:0.5"], [dict(col="normsim_inf", f=Fraction(1, 2))], None),
        (
            ["ncl>=0.5", "normsim-inf:0.1"],
            [dict(col="ncl", op=">=", v=0.5), dict(col="normsim_inf", f=Fraction(1, 10))],
            None,
        ),
        (
            ["ncl:0.9", "normsim-inf:0.7"],
            [dict(col="ncl", f=Fraction(9, 10)), dict(col="normsim_inf", f=Fraction(7, 10))],
            "base",
        ),
        (
            ["normsim-inf<0.3", "ncl:1"],
            [dict(col="normsim_inf", op="<", v=0.3), dict(col="ncl", f=Fraction(1))],
            "base",
        ),
    ]
    for rules, ref_rules, with_base in cases:
        out = tmp_path / "sub.npy"
        frame = df
        if with_base:
            frame = df.filter(pl.col("uid").is_in(pl.Series(base).implode()))
        want = brute(frame, ref_rules, frame.height)
        res = pc.select(
            d,
            out,
            rules,
            base=tmp_path / "base.npy" if with_base else None,
            memory_budget=budget,
            log=lambda s: None,
        )
        got = set(io.read_uids(out)["uid"].to_list())
        assert got == want, (rules, with_base, len(got), len(want))
        assert res.kept == len(want)
        if with_base:
            assert res.base_without_scores == 17
        log = json.loads((tmp_path / "sub.select.json").read_text())
        assert [s["rule"] for s in log["steps"]] == rules
        assert log["steps"][-1]["kept"] == len(want)


def test_the_same_rule_as_top_fraction(tmp_path, tiny_cap):
    u = uids(400, 2)
    s = np.random.default_rng(3).integers(0, 5, 400).astype(float)  # all ties
    d = fake_scores(tmp_path / "s", u, ncl=s)
    pc.select(d, tmp_path / "sub.npy", ["ncl:0.35"], log=lambda s: None)
    df = pl.DataFrame({"uid": u, "ncl": s}).with_columns(io.uid_key_exprs("uid"))
    want = df.filter(pc.top_fraction("ncl", 0.35, by=["uid_hi", "uid_lo"]))["uid"]
    assert set(io.read_uids(tmp_path / "sub.npy")["uid"]) == set(want)
    assert len(want) == 140


def test_external_score_files(tmp_path, tiny_cap):
    u = uids(600, 4)
    rng = np.random.default_rng(5)
    d = fake_scores(tmp_path / "s", u, ncl=rng.normal(size=600))
    # DFN-like scores for 500 of the pool's uids (plus 50 others), as uid strings.
    ext_uids = u[:500] + uids(50, 6)
    dfn = rng.random(550).round(2)
    pl.DataFrame({"uid": ext_uids, "dfn_score": dfn, "note": ["x"] * 550}).write_parquet(
        tmp_path / "dfn.parquet"
    )
    out = tmp_path / "sub.npy"
    pc.select(d, out, [f"{tmp_path}/dfn.parquet#dfn_score:0.4", "ncl:0.1"], log=lambda s: None)
    pool = (
        pl.DataFrame({"uid": u})
        .join(pl.DataFrame({"uid": ext_uids, "dfn_score": dfn}), on="uid", how="left")
        .join(
            pl.read_parquet(sorted((tmp_path / "s").glob("*.parquet"))).select("uid", "ncl"),
            on="uid",
        )
    )
    want = brute(
        pool, [dict(col="dfn_score", f=Fraction(2, 5)), dict(col="ncl", f=Fraction(1, 10))], 600
    )
    assert set(io.read_uids(out)["uid"]) == want
    # One numeric column beside the uid: no need to name it; keys instead of strings work too.
    keyed = (
        pl.DataFrame({"uid": ext_uids, "s": dfn}).with_columns(io.uid_key_exprs("uid")).drop("uid")
    )
    keyed.write_parquet(tmp_path / "keyed.parquet")
    pc.select(d, out, [f"{tmp_path}/keyed.parquet>=0.5"], log=lambda s: None)
    assert set(io.read_uids(out)["uid"]) == {x for x, v in zip(ext_uids[:500], dfn) if v >= 0.5}


def test_rule_syntax():
    r = sel.parse_rule("clip>=0.28")
    assert (r.score, r.op, r.value) == ("clip", ">=", 0.28)
    r = sel.parse_rule("normsim-inf:0.2")
    assert (r.score, r.fraction) == ("normsim_inf", Fraction(1, 5))
    assert sel.parse_rule("ncl < -1e-3").value == -1e-3
    for bad in ("ncl", "ncl:x", "ncl:1.5", ":0.3", "ncl>=abc"):
        with pytest.raises(ValueError, match="--keep"):
            sel.parse_rule(bad)
    with pytest.raises(ValueError, match="not found"):
        sel.parse_rule("/nonexistent/x.parquet:0.3")
    # floor(F * n) exactly: where the float product int(n * 0.7) keeps one row fewer (the
    # paper's code), the rule keeps the exact count.
    n = next(m for m in range(1, 10_000) if int(m * 0.7) != m * 7 // 10)
    assert sel.keep_count(n, as_fraction(0.7, "f")) == n * 7 // 10 == int(n * 0.7) + 1


def full_range_uids(n, seed):
    rng = np.random.default_rng(seed)
    return [f"{a:016x}{b:016x}" for a, b in rng.integers(0, 2**64, (n, 2), dtype=np.uint64)]


def test_key_partitions_give_the_same_subset_log_and_report(tmp_path):
    """A budget that cuts every key set (base, external scores, subset) into parts changes
    nothing: the subset file and the select log are the same bytes, the report the same page."""
    from polars_curate.report import write_report

    n = 3000
    rng = np.random.default_rng(4)
    u = full_range_uids(n, 5)
    d = fake_scores(tmp_path / "s", u, ncl=rng.normal(size=n).round(2), clip=rng.random(n))
    io.write_uids(pl.Series("uid", u[::3] + full_range_uids(50, 6)), tmp_path / "base.npy")
    ext = pl.DataFrame({"uid": u[::-1], "hype": rng.random(n)})
    ext.write_parquet(tmp_path / "hype.parquet")
    rules = ["ncl:0.6", f"{tmp_path}/hype.parquet:0.4", "clip>=0.2"]
    pages = {}
    for name, budget in (("one", DEFAULT_BUDGET), ("parts", 40_000)):  # 8 parts
        out = tmp_path / name / "sub.npy"
        out.parent.mkdir()
        pc.select(
            d, out, rules, base=tmp_path / "base.npy", memory_budget=budget, log=lambda s: None
        )
        page = write_report(d, tmp_path / name / "r.html", subset=out, memory_budget=budget)
        log = out.with_name("sub.select.json").read_bytes()
        pages[name] = (out.read_bytes(), log, page.read_text())
    assert pages["one"][0] == pages["parts"][0]
    assert pages["one"][1] == pages["parts"][1]
    assert pages["one"][2].replace("/one/", "/parts/") == pages["parts"][2]
    assert len(io.read_uids(tmp_path / "one" / "sub.npy")) > 100
