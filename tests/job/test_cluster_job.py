"""Clusters and near-duplicates in the job, on a pool with planted exact duplicates across
shards and near duplicates inside one: `cluster` (the CLI and the API, the same centroids for
any file names, listing order and thread count), `score --scores cluster,semdedup` (against a
NumPy/float64 reference of the definitions), `select` on `semdedup<=...` and DataComp's
image-based filter (`--keep-clusters`), the report's cluster sizes and removal curve, a rerun
and a lost group file resumed to the same bytes, and the errors."""

from __future__ import annotations

import shutil

import numpy as np
import polars as pl
import pytest
from support import figures, values

import polars_curate as pc
from polars_curate import _internal, io
from polars_curate.cli import main
from polars_curate.datasets import synthetic_pool
from polars_curate.report import write_report

import reference as ref

K = 12


def _plant(files: list) -> dict[str, list[str]]:
    """Copy 15 rows' embeddings of shard 0 into shard 2 (exact duplicates, other uids), and
    make 10 rows of shard 1 near duplicates (tiny noise) of 10 others of shard 1."""
    a, b, c = (pl.read_parquet(f) for f in files)
    dtype = a.schema["l14_img"]
    emb_c = c["l14_img"].to_numpy().copy()
    emb_c[:15] = a["l14_img"].to_numpy()[:15]
    emb_b = b["l14_img"].to_numpy().astype(np.float64)
    rng = np.random.default_rng(0)
    emb_b[100:110] = emb_b[200:210] + 0.003 * rng.normal(size=(10, emb_b.shape[1]))
    c.with_columns(pl.Series("l14_img", emb_c).cast(dtype)).write_parquet(files[2])
    b.with_columns(pl.Series("l14_img", emb_b).cast(dtype)).write_parquet(files[1])
    return {
        "exact": list(zip(a["uid"][:15], c["uid"][:15], strict=True)),
        "near": list(zip(b["uid"][200:210], b["uid"][100:110], strict=True)),
    }


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("clusters")
    paths = synthetic_pool(tmp, n=3000, d=32, seed=4, shards=3, layout="parquet")
    files = sorted(paths["pool"].glob("*.parquet"))
    planted = _plant(files)
    cents = tmp / "c.npy"
    argv = ["cluster", str(paths["pool"]), "--out", str(cents), "--k", str(K)]
    assert main([*argv, "--sample", "0.6", "--iters", "6", "--seed", "3", "--no-progress"]) == 0
    out = tmp / "scores"
    argv = ["score", str(paths["pool"]), "--out", str(out), "--scores", "clip,cluster,semdedup"]
    assert main([*argv, "--centroids", str(cents), "--groups", "4", "--no-progress"]) == 0
    pool = pl.concat([pl.read_parquet(f) for f in files])
    scores = pc.scan_scores(out).collect().join(pool.select("uid", "l14_img"), on="uid")
    return {**paths, "tmp": tmp, "centroids": cents, "out": out, "scores": scores, **planted}


def test_cluster_writes_unit_centroids_the_api_gives_for_any_names_order_and_threads(job):
    c = np.load(job["centroids"])
    assert c.shape == (K, 32) and c.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(c, axis=1), 1.0, atol=1e-6)
    # The same sample and centroids from files renamed in the reverse order, on one thread.
    other = job["tmp"] / "renamed"
    other.mkdir()
    files = sorted(job["pool"].glob("*.parquet"))
    for i, f in enumerate(reversed(files)):
        shutil.copy(f, other / f"{i:08d}.parquet")
    _internal.set_thread_count(1)
    try:
        fit = pc.clusters.fit_centroids(
            other, None, k=K, sample=0.6, iters=6, seed=3, progress=False
        )
    finally:
        _internal.set_thread_count(0)
    assert fit.centroids.tobytes() == c.tobytes()
    assert len(fit.objectives) == 6 and fit.moved[0] == fit.sample_rows
    assert 0.45 * 3000 < fit.sample_rows < 0.75 * 3000
    rows = pc.clusters.sample_pool(job["pool"], "l14_img", rows=500, seed=3)
    assert rows.len() == 500


def test_cluster_and_semdedup_columns_are_the_definitions(job):
    s = job["scores"]
    x = s["l14_img"].cast(pl.Array(pl.Float64, 32)).to_numpy()
    c = np.load(job["centroids"]).astype(np.float64)
    labels, _ = ref.nearest(x, c, normalize=False)  # DataComp's: raw inner product
    ip = np.sort(x @ c.T, axis=1)
    clear = (ip[:, -1] - ip[:, -2]) > 1e-5 * np.linalg.norm(x, axis=1)
    assert clear.mean() > 0.98
    np.testing.assert_array_equal(s["cluster"].to_numpy()[clear], labels[clear])
    got = s["semdedup"].to_numpy().astype(np.float64)
    want = np.full(len(s), np.nan)
    ambiguous = np.zeros(len(s), bool)
    cos = ref.unit(x) @ c.T
    for j in np.unique(s["cluster"].to_numpy()):
        rows = np.flatnonzero(s["cluster"].to_numpy() == j)
        sim = cos[rows, j]
        key = sorted(range(len(rows)), key=lambda i: (sim[i], s["uid"][int(rows[i])]))
        order = np.empty(len(rows), int)
        order[key] = np.arange(len(rows))
        want[rows] = ref.semdedup(x[rows], order)
        # float32 may order rows closer than 1e-6 either way (equal ones go by uid in both)
        gaps = np.diff(sim[key])
        close = (gaps > 0) & (gaps < 1e-6)
        ambiguous[rows[np.array(key)[1:][close]]] = True
        ambiguous[rows[np.array(key)[:-1][close]]] = True
    ok = ~ambiguous
    assert ok.mean() > 0.99
    assert (np.isneginf(got) == np.isneginf(want))[ok].all()
    fin = ok & np.isfinite(want)
    np.testing.assert_allclose(got[fin], want[fin], atol=2e-3)  # Float16 embeddings
    by_uid = dict(zip(s["uid"], got, strict=True))
    for pair in job["exact"] + job["near"]:
        first, second = sorted(pair)
        assert max(by_uid[first], by_uid[second]) > 0.999  # the later in the order is flagged


def test_select_on_semdedup_and_the_image_based_filter(job, tmp_path):
    s, cents = job["scores"], job["centroids"]
    argv = ["select", str(job["out"]), "--out", str(tmp_path / "a.npy"), "--keep"]
    assert main([*argv, "semdedup<=0.99"]) == 0
    want = s.filter(pl.col("semdedup") <= 0.99)["uid"].sort().to_list()
    assert io.read_uids(tmp_path / "a.npy")["uid"].to_list() == want
    assert len(want) <= len(s) - len(job["exact"]) - len(job["near"])
    # DataComp's image-based filter: clusters picked by the target's raw inner products.
    target = np.load(job["target"])[:2]  # two downstream images: a few clusters
    np.save(tmp_path / "t.npy", target)
    x = s["l14_img"].cast(pl.Array(pl.Float64, 32)).to_numpy()
    want_keep = ref.image_based_keep(x, np.load(cents).astype(np.float64), target)
    picked, _ = ref.nearest(target, np.load(cents).astype(np.float64), normalize=False)
    keep = np.isin(s["cluster"].to_numpy(), picked)  # on our labels: near ties aside, the same
    assert (keep == want_keep).mean() > 0.98
    argv = ["select", str(job["out"]), "--out", str(tmp_path / "b.npy"), "--keep"]
    extra = ["--keep-clusters", str(tmp_path / "t.npy"), "--centroids", str(cents)]
    assert main([*argv, "semdedup<=0.99", *extra]) == 0
    both = s.filter(pl.Series(keep) & (pl.col("semdedup") <= 0.99))["uid"].sort().to_list()
    assert io.read_uids(tmp_path / "b.npy")["uid"].to_list() == both
    assert 0 < len(both) < len(want)


def test_report_draws_cluster_sizes_and_the_removal_curve(job, tmp_path):
    page = write_report(job["out"], tmp_path / "r.html").read_text()
    figs = figures(page)
    sizes = job["scores"].group_by("cluster").len()["len"].to_numpy()
    (hist,), _ = figs["fig-cluster-sizes"]
    np.testing.assert_allclose(np.sort(values(hist["x"])), np.sort(np.log10(sizes)))
    (curve,), _ = figs["fig-semdedup-eps"]
    eps, removed = values(curve["x"]), values(curve["y"])
    sem = job["scores"]["semdedup"].to_numpy().astype(np.float64)
    for e, r in zip(eps[::10], removed[::10], strict=True):
        assert r == pytest.approx((sem > 1 - e).mean(), abs=1.5 / len(sem))
    assert removed[0] == 0 and removed[-1] > removed[1]


def test_rerun_and_a_lost_group_give_the_same_bytes(job, tmp_path):
    out = tmp_path / "copy"
    shutil.copytree(job["out"], out)
    groups = sorted((out / "_semdedup").glob("*.parquet"))
    assert len(groups) == 4
    before = {g.name: g.read_bytes() for g in groups}
    groups[1].unlink()
    argv = ["score", str(job["pool"]), "--out", str(out), "--scores", "clip,cluster,semdedup"]
    extra = ["--centroids", str(job["centroids"]), "--groups", "4", "--no-progress"]
    assert main([*argv, *extra]) == 0
    after = {g.name: g.read_bytes() for g in sorted((out / "_semdedup").glob("*.parquet"))}
    assert after == before


def test_errors_are_one_line_naming_the_argument(job, tmp_path, capsys):
    bad = tmp_path / "bad.npy"
    np.save(bad, np.ones((4, 7), np.float32))
    argv = ["score", str(job["pool"]), "--out", str(tmp_path / "s"), "--scores", "semdedup"]
    assert main([*argv, "--centroids", str(bad), "--no-progress"]) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "centroids" in err
    assert main([*argv, "--no-progress"]) == 1
    assert "--centroids" in capsys.readouterr().err
    other = tmp_path / "other.npy"
    np.save(other, np.load(job["centroids"])[::-1].copy())
    argv = ["select", str(job["out"]), "--out", str(tmp_path / "x.npy"), "--keep", "clip:0.5"]
    assert main([*argv, "--keep-clusters", str(job["target"]), "--centroids", str(other)]) == 1
    assert "--keep-clusters" in capsys.readouterr().err
    assert not (tmp_path / "x.npy").exists()
    argv = ["cluster", str(job["pool"]), "--out", str(tmp_path / "c.npy"), "--k", "5000"]
    assert main([*argv, "--sample", "0.1", "--no-progress"]) == 1
    assert "needs at least 5000 usable rows" in capsys.readouterr().err
    assert not (tmp_path / "c.npy").exists()


def _score(pool, out, cents, *extra):
    argv = ["score", str(pool), "--out", str(out), "--scores", "clip,cluster,semdedup"]
    return main([*argv, "--centroids", str(cents), "--groups", "4", "--no-progress", *extra])


def test_an_added_shard_makes_every_group_stale_and_a_lost_spill_is_spilled_again(job, tmp_path):
    files = sorted(job["pool"].glob("*.parquet"))
    pool = tmp_path / "pool"
    pool.mkdir()
    for f in files[:2]:
        shutil.copy(f, pool / f.name)
    out = tmp_path / "s"
    assert _score(pool, out, job["centroids"]) == 0
    shutil.copy(files[2], pool / files[2].name)  # a shard added to the pool
    assert _score(pool, out, job["centroids"]) == 0
    got = pc.scan_scores(out).collect()
    assert got.height == 3000 and got["semdedup"].null_count() == 0
    want = {g.name: g.read_bytes() for g in sorted((job["out"] / "_semdedup").glob("*"))}
    assert {g.name: g.read_bytes() for g in sorted((out / "_semdedup").glob("*"))} == want
    # _spill/ deleted after the run (as the README allows), then a group lost: spilled again.
    shutil.rmtree(out / "_spill")
    sorted((out / "_semdedup").glob("*.parquet"))[2].unlink()
    assert _score(pool, out, job["centroids"]) == 0
    assert {g.name: g.read_bytes() for g in sorted((out / "_semdedup").glob("*"))} == want


def test_repeated_uids_are_refused_by_semdedup_naming_one(job, tmp_path, capsys):
    pool = tmp_path / "pool"
    shutil.copytree(job["pool"], pool)
    first = sorted(pool.glob("*.parquet"))[0]
    shutil.copy(first, pool / "99999999.parquet")  # the same uids in a second file
    assert _score(pool, tmp_path / "s", job["centroids"]) == 1
    err = capsys.readouterr().err.strip()
    uid = pl.read_parquet(first)["uid"]
    assert len(err.splitlines()) == 1 and "is in several rows of the pool" in err
    assert any(u in err for u in uid)


def test_report_of_clusters_alone_and_of_the_image_based_step(job, tmp_path):
    out = tmp_path / "s"
    argv = ["score", str(job["pool"]), "--out", str(out), "--scores", "cluster"]
    assert main([*argv, "--centroids", str(job["centroids"]), "--no-progress"]) == 0
    page = write_report(out, tmp_path / "r.html").read_text()
    assert "fig-cluster-sizes" in page
    np.save(tmp_path / "t.npy", np.load(job["target"])[:2])
    sub = tmp_path / "k.npy"
    extra = ["--keep-clusters", str(tmp_path / "t.npy"), "--centroids", str(job["centroids"])]
    assert main(["select", str(job["out"]), "--out", str(sub), *extra]) == 0
    page = write_report(job["out"], tmp_path / "r2.html", subset=sub).read_text()
    assert "has no score" not in page


def test_keep_clusters_with_a_target_of_another_width_names_both(job, tmp_path, capsys):
    np.save(tmp_path / "t.npy", np.ones((3, 7), np.float32))
    argv = ["select", str(job["out"]), "--out", str(tmp_path / "x.npy"), "--keep", "clip:0.5"]
    extra = ["--keep-clusters", str(tmp_path / "t.npy"), "--centroids", str(job["centroids"])]
    assert main([*argv, *extra]) == 1
    err = capsys.readouterr().err
    assert "--keep-clusters" in err and "7 wide" in err and "32 wide" in err
