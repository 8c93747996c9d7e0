"""The score directory says exactly what it holds: each class of silent mix-up is refused, a
failed run writes nothing, concurrent writers and Ctrl-C are safe, every CLI error is one line
naming its file."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile

import numpy as np
import polars as pl
import pytest

import polars_curate as pc
from polars_curate import unit
from polars_curate.cli import main
from polars_curate.datasets import synthetic_pool

CLI = [sys.executable, "-m", "polars_curate.cli"]


@pytest.fixture(scope="module")
def pools(tmp_path_factory):
    root = tmp_path_factory.mktemp("pools")
    a = synthetic_pool(root / "a", n=2000, d=16, seed=1, shards=4)
    b = synthetic_pool(root / "b", n=2000, d=16, seed=2, shards=4)  # same shard names
    return a, b


def score(pool, out, *extra, scores="ncl,clip,normsim-inf", target=None):
    argv = ["score", str(pool["pool"]), "--out", str(out), "--scores", scores]
    argv += ["--target", str(target or pool["target"]), "--batch-size", "256", "--no-progress"]
    return main([*argv, *extra])


def files(d):
    return {p.name: p.read_bytes() for p in sorted(d.glob("*.parquet"))}


def test_scoring_another_pool_into_a_directory_is_refused(pools, tmp_path, capsys):
    a, b = pools
    assert score(a, tmp_path / "s") == 0
    before = files(tmp_path / "s")
    capsys.readouterr()
    assert score(b, tmp_path / "s", target=a["target"]) == 1
    err = capsys.readouterr().err
    assert "holds scores of other data" in err and "00000000" in err, err
    assert files(tmp_path / "s") == before


def test_a_changed_target_between_runs_is_refused(pools, tmp_path, capsys):
    a, _ = pools
    target = tmp_path / "t.npy"
    shutil.copy(a["target"], target)
    assert score(a, tmp_path / "s", target=target, scores="normsim-inf") == 0
    np.save(target, np.load(target)[::-1].copy())  # same file name, other content
    capsys.readouterr()
    assert score(a, tmp_path / "s", target=target, scores="normsim-inf") == 1
    err = capsys.readouterr().err
    assert "score normsim-inf: `target.key` differs: recorded '" in err, err


def test_a_refused_rerun_names_the_parameter_with_old_and_new_value(pools, tmp_path, capsys):
    a, _ = pools
    assert score(a, tmp_path / "s", scores="ncl") == 0
    capsys.readouterr()
    assert score(a, tmp_path / "s", "--seed", "7", scores="ncl") == 1
    assert "score ncl: `seed` differs: recorded 0, now 7" in capsys.readouterr().err
    assert score(a, tmp_path / "s", "--unit-rows", "100", scores="ncl") == 1
    assert "--unit-rows differs: recorded 262144, now 100" in capsys.readouterr().err


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--scores", "ncl,bogus"], "unknown score 'bogus'"),
        (["--target", "/nonexistent.npy"], "`target` file not found"),
        (["--model", "vit"], "no embedding column 'vit_img'"),
        (["--batch-size", "0"], "`batch_size` must be in"),
        (["--num-batches", "100000"], "`num_batches` must be in"),
    ],
)
def test_a_failed_first_run_writes_nothing_and_the_corrected_one_runs(
    pools, tmp_path, capsys, extra, needle
):
    a, _ = pools
    out = tmp_path / "s"
    argv = ["score", str(a["pool"]), "--out", str(out), "--target", str(a["target"])]
    argv += ["--scores", "ncl,normsim-inf", "--no-progress"]
    assert main([*argv, *extra]) == 1
    assert needle in capsys.readouterr().err
    assert not out.exists()
    assert main(argv) == 0


def test_adding_a_score_does_not_recompute_the_others(pools, tmp_path, monkeypatch):
    a, _ = pools
    out = tmp_path / "s"
    assert score(a, out, scores="ncl,clip") == 0
    first = pl.concat([pl.read_parquet(p) for p in sorted(out.glob("*.parquet"))])
    read = []
    real = unit.read_unit
    monkeypatch.setattr(unit, "read_unit", lambda u, c, e: read.append(e) or real(u, c, e))
    # Reordered, plus NormSim on the B/32 embeddings: only b32_img is read.
    assert (
        score(
            a,
            out,
            "--normsim-model",
            "b32",
            scores="normsim-inf,clip,ncl",
            target=_b32_target(tmp_path),
        )
        == 0
    )
    assert read and all(e == ["b32_img"] for e in read), read
    read.clear()
    assert score(a, out, scores="clip,ncl") == 0  # reordering --scores is the same run
    assert read == []
    both = pl.concat([pl.read_parquet(p) for p in sorted(out.glob("*.parquet"))])
    assert both.columns == ["uid", "uid_hi", "uid_lo", "ncl", "clip", "normsim_inf"]
    assert both.select(first.columns).equals(first)


def _b32_target(tmp_path):
    t = tmp_path / "b32.npy"
    np.save(t, np.random.default_rng(0).normal(size=(30, 8)).astype(np.float32))
    return t


def test_select_and_report_refuse_an_incomplete_directory(pools, tmp_path, capsys):
    a, _ = pools
    out = tmp_path / "s"
    assert score(a, out, scores="ncl") == 0
    (out / "00000002.parquet").unlink()  # as if killed before this unit
    capsys.readouterr()
    assert main(["select", str(out), "--out", str(tmp_path / "x.npy"), "--keep", "ncl:0.5"]) == 1
    err = capsys.readouterr().err
    assert "is incomplete: 1 of 4 units lack scores, e.g. 00000002 (no file)" in err, err
    assert main(["report", str(out), "--out", str(tmp_path / "r.html")]) == 1
    assert "is incomplete" in capsys.readouterr().err
    assert not (tmp_path / "x.npy").exists() and not (tmp_path / "r.html").exists()
    assert score(a, out, scores="ncl") == 0  # the rerun finishes it
    assert main(["select", str(out), "--out", str(tmp_path / "x.npy"), "--keep", "ncl:0.5"]) == 0


def test_out_equal_to_the_pool_directory_is_refused(pools, tmp_path, capsys):
    a, _ = pools
    pool = tmp_path / "pool"
    shutil.copytree(a["pool"], pool)
    before = files(pool)
    assert main(["score", str(pool), "--out", str(pool), "--no-progress"]) == 1
    assert "is the pool's own directory" in capsys.readouterr().err
    assert files(pool) == before and not (pool / "_polars_curate.json").exists()


def test_two_processes_on_one_directory_both_succeed(pools, tmp_path):
    a, _ = pools
    out = tmp_path / "s"
    # A live writer's temporary file (this process is alive) must survive the start-up of
    # another; a dead writer's is cleaned up.
    out.mkdir()
    live = out / f".00000009.parquet.{pc.atomic.HOST}.{os.getpid()}.abcdefgh.tmp"
    live.write_bytes(b"in flight")
    dead = out / f".00000009.parquet.{pc.atomic.HOST}.999999999.abcdefgh.tmp"
    dead.write_bytes(b"left by a killed run")
    opts = ["--out", str(out), "--scores", "ncl,clip", "--batch-size", "256", "--no-progress"]
    procs = [
        subprocess.Popen(
            [*CLI, "score", str(a["pool"] / pat), *opts], stderr=subprocess.PIPE, text=True
        )
        for pat in ("0000000[01].*", "0000000[23].*")
    ]
    for p in procs:
        _, err = p.communicate(timeout=120)
        assert p.returncode == 0, err
    assert live.exists() and not dead.exists()
    assert len(list((out / "_runs").glob("*.json"))) == 2
    clean = tmp_path / "clean"
    assert (
        main(
            [
                "score",
                str(a["pool"]),
                "--out",
                str(clean),
                "--scores",
                "ncl,clip",
                "--batch-size",
                "256",
                "--no-progress",
            ]
        )
        == 0
    )
    live.unlink()
    assert files(out) == files(clean)
    assert main(["select", str(out), "--out", str(tmp_path / "x.npy"), "--keep", "ncl:0.5"]) == 0


def test_ctrl_c_stops_the_cli_with_one_line_and_the_rerun_resumes(tmp_path):
    big = synthetic_pool(tmp_path / "pool", n=16_000, d=256, seed=3, shards=8)
    args = [
        "score",
        str(big["pool"]),
        "--scores",
        "ncl",
        "--batch-size",
        "2000",
        "--num-batches",
        "40",
        "--no-progress",
    ]
    out = tmp_path / "s"
    proc = subprocess.Popen([*CLI, *args, "--out", str(out)], stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(out.glob("0*.parquet")):
        time.sleep(0.02)
    time.sleep(0.3)  # inside the next unit's kernel
    t0 = time.time()
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert time.time() - t0 < 3, "stops within about a second"
    assert proc.returncode == 130
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "interrupted; run the same command again to resume" in lines[0]
    done = len(list(out.glob("0*.parquet")))
    assert 0 < done < 8
    assert main([*args, "--out", str(out)]) == 0
    assert main([*args, "--out", str(tmp_path / "clean")]) == 0
    assert files(out) == files(tmp_path / "clean")


def _broken_pools(tmp_path, a):
    """One broken pool per class of data error, each a copy of pool `a` with one flaw."""
    cases = {}

    def copy(name):
        d = tmp_path / name
        shutil.copytree(a["pool"], d)
        return d

    d = copy("corrupt_npz")
    with zipfile.ZipFile(d / "00000001.npz", "w") as z:
        z.writestr("l14_img.npy", b"\x93NUMPY garbage")
        z.writestr("l14_txt.npy", b"\x93NUMPY garbage")
    cases["corrupt_npz"] = (d, "00000001.npz")
    d = copy("no_uid")
    pl.read_parquet(d / "00000002.parquet").drop("uid").write_parquet(d / "00000002.parquet")
    cases["no_uid"] = (d, "00000002.parquet")
    d = copy("null_uid")
    df = pl.read_parquet(d / "00000003.parquet")
    df.with_columns(
        uid=pl.when(pl.int_range(pl.len()) == 7).then(None).otherwise("uid")
    ).write_parquet(d / "00000003.parquet")
    cases["null_uid"] = (d, "00000003.parquet")
    d = copy("bad_parquet")
    (d / "00000000.parquet").write_bytes(b"PAR1 not really PAR1")
    cases["bad_parquet"] = (d, "00000000.parquet")
    d = copy("missing_twin")
    (d / "00000002.parquet").unlink()
    cases["missing_twin"] = (d, "00000002.parquet")
    d = copy("short_npz")
    arrays = dict(np.load(d / "00000001.npz"))
    arrays["l14_img"] = arrays["l14_img"][:-3]
    np.savez(d / "00000001.npz", **arrays)
    cases["short_npz"] = (d, "00000001.npz")
    return cases


def test_every_cli_error_is_one_line_naming_the_file(pools, tmp_path):
    a, _ = pools
    for name, (pool, culprit) in _broken_pools(tmp_path, a).items():
        out = tmp_path / f"out_{name}"
        r = subprocess.run(
            [
                *CLI,
                "score",
                str(pool),
                "--out",
                str(out),
                "--scores",
                "ncl,normsim-inf",
                "--target",
                str(a["target"]),
                "--no-progress",
            ],
            capture_output=True,
            text=True,
        )
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 1, (name, r.stderr)
        assert len(lines) == 1 and culprit in lines[0], (name, r.stderr)
        assert "Traceback" not in r.stderr
    # A target whose width differs from the embeddings: the shard and the column are named.
    wide = tmp_path / "wide.npy"
    np.save(wide, np.ones((3, 32), dtype=np.float32))
    r = subprocess.run(
        [
            *CLI,
            "score",
            str(a["pool"]),
            "--out",
            str(tmp_path / "w"),
            "--scores",
            "normsim-2",
            "--target",
            str(wide),
            "--no-progress",
        ],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 1
    assert (
        "00000000.parquet + 00000000.npz: column 'l14_img' is 16 wide but the target is 32"
        in r.stderr
    )


def test_no_normalize_uses_the_embeddings_as_stored(pools, tmp_path):
    a, _ = pools
    assert score(a, tmp_path / "n", "--no-normalize", scores="clip") == 0
    raw = pl.concat([pl.read_parquet(p) for p in sorted((tmp_path / "n").glob("*.parquet"))])
    lf = pc.scan_pool(a["pool"]).select(
        "uid",
        dot=(
            pl.col("l14_img").cast(pl.Array(pl.Float64, 16))
            * pl.col("l14_txt").cast(pl.Array(pl.Float64, 16))
        ).arr.sum(),
    )
    want = lf.collect()
    np.testing.assert_allclose(raw["clip"].to_numpy(), want["dot"].to_numpy(), rtol=1e-5, atol=1e-6)
    assert score(a, tmp_path / "n", scores="clip") == 1  # normalize is a recorded parameter
