"""The command line on a pool in DataComp's exact layout: exit codes, messages, resume after a
real kill -9, identical reruns, and the selection rules against a hand-computed expectation."""

import os
import signal
import subprocess
import sys
import time

import numpy as np
import polars as pl
import pytest
from support import fake_scores

from polars_curate import io
from polars_curate.cli import main
from polars_curate.datasets import synthetic_pool

CLI = [sys.executable, "-m", "polars_curate.cli"]


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    return synthetic_pool(tmp_path_factory.mktemp("pool"), n=3000, d=32, seed=1, shards=3)


def score(pool, out, *extra):
    return main(
        [
            "score",
            str(pool["pool"]),
            "--out",
            str(out),
            "--target",
            str(pool["target"]),
            "--scores",
            "ncl,clip,normsim-inf",
            "--batch-size",
            "256",
            "--no-progress",
            *extra,
        ]
    )


def test_score_writes_one_file_per_shard_and_reruns_are_identical(pool, tmp_path):
    assert score(pool, tmp_path / "a") == 0
    files = sorted((tmp_path / "a").glob("*.parquet"))
    assert [f.stem for f in files] == ["00000000", "00000001", "00000002"]
    first = pl.read_parquet(files[0])
    assert first.columns == ["uid", "uid_hi", "uid_lo", "ncl", "clip", "normsim_inf"]
    shard = pl.read_parquet(pool["pool"] / "00000000.parquet")
    assert first["uid"].to_list() == shard["uid"].to_list()
    mtimes = [f.stat().st_mtime_ns for f in files]
    assert score(pool, tmp_path / "a") == 0  # resume: nothing to do
    assert [f.stat().st_mtime_ns for f in files] == mtimes
    assert score(pool, tmp_path / "b") == 0
    for f in files:
        assert pl.read_parquet(f).equals(pl.read_parquet(tmp_path / "b" / f.name))
    assert score(pool, tmp_path / "a", "--seed", "7") == 1  # other parameters: refuse to mix
    assert [f.stat().st_mtime_ns for f in files] == mtimes


def test_teacher_and_normsim_embeddings_may_differ(pool, tmp_path):
    target_b32 = tmp_path / "t_b32.npy"
    np.save(target_b32, np.random.default_rng(0).normal(size=(20, 16)).astype(np.float32))
    argv = [
        "score",
        str(pool["pool"]),
        "--out",
        str(tmp_path / "o"),
        "--target",
        str(target_b32),
        "--scores",
        "ncl,normsim-inf",
        "--normsim-model",
        "b32",
        "--no-progress",
    ]
    assert main(argv) == 0
    assert pl.read_parquet(tmp_path / "o" / "00000000.parquet")["normsim_inf"].null_count() == 0
    # The L/14 target (32 wide) against B/32 embeddings (16 wide): a clear error.
    argv[3], argv[5] = str(tmp_path / "o2"), str(pool["target"])
    assert main(argv) == 1


def test_kill_9_then_rerun_gives_the_uninterrupted_output(tmp_path):
    big = synthetic_pool(tmp_path / "pool", n=24_000, d=64, seed=2, shards=12)
    args = [
        "score",
        str(big["pool"]),
        "--scores",
        "ncl,clip",
        "--batch-size",
        "2000",
        "--num-batches",
        "4",
        "--no-progress",
    ]
    out = tmp_path / "killed"
    proc = subprocess.Popen([*CLI, *args, "--out", str(out)])
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("0*.parquet"))) < 3:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = list(out.glob("0*.parquet"))
    assert 0 < len(done) < 12, "the kill should land mid-run"
    for f in done:  # whatever exists under a final name is complete
        assert pl.read_parquet(f).height == 2000
    assert subprocess.run([*CLI, *args, "--out", str(out)]).returncode == 0
    assert subprocess.run([*CLI, *args, "--out", str(tmp_path / "clean")]).returncode == 0
    names = sorted(p.name for p in out.glob("*.parquet"))
    assert names == sorted(p.name for p in (tmp_path / "clean").glob("*.parquet"))
    assert not list(out.glob(".*.tmp")), "no temporary file is left once the rerun finished"
    for name in names:
        assert (out / name).read_bytes() == (tmp_path / "clean" / name).read_bytes()


def test_select_matches_a_hand_computed_expectation(tmp_path, capsys):
    uids = [f"{i:032x}" for i in range(10)]
    ncl = [0.9, 0.1, 0.8, 0.7, 0.2, 0.6, 0.5, 0.3, 0.4, np.nan]
    ns = [0.1, 0.9, 0.2, 0.9, 0.3, 0.8, 0.4, 0.5, 0.7, 0.6]
    d = fake_scores(tmp_path / "scores", uids, ncl=ncl, normsim_inf=ns)
    out = tmp_path / "subset.npy"
    # Pool of 10: ncl top 50% -> rows 0, 2, 3, 5, 6 (NaN never kept);
    # then normsim-inf top 30% of the pool (3 rows) of those -> rows 3 (0.9), 5 (0.8), 6 (0.4).
    assert (
        main(
            ["select", str(d), "--out", str(out), "--keep", "ncl:0.5", "--keep", "normsim-inf:0.3"]
        )
        == 0
    )
    assert io.read_uids(out)["uid"].to_list() == [uids[3], uids[5], uids[6]]
    printed = capsys.readouterr().out
    assert "start: 10 rows (pool)" in printed and "ncl:0.5 keeps 5 of 10 rows" in printed
    # With a base subset of rows 0-7 and two uids the pool does not have: start 8; ncl 50%
    # -> 4: rows 0, 2, 3, 5; normsim 25% -> 2: rows 3 (0.9) and 5 (0.8).
    io.write_uids(pl.Series("uid", [*uids[:8], "f" * 32, "e" * 32]), tmp_path / "base.npy")
    argv = ["select", str(d), "--out", str(out), "--base", str(tmp_path / "base.npy")]
    assert main([*argv, "--keep", "ncl:0.5", "--keep", "normsim-inf:0.25"]) == 0
    assert io.read_uids(out)["uid"].to_list() == [uids[3], uids[5]]
    printed = capsys.readouterr().out
    assert "start: 8 rows (pool rows in base.npy); 2 of its 10 uids have no scores" in printed
    # Extra columns in the directory do not matter; thresholds keep rows past the value.
    assert main([*argv, "--keep", "ncl>=0.5", "--keep", "normsim-inf<0.85"]) == 0
    assert io.read_uids(out)["uid"].to_list() == [uids[0], uids[2], uids[5], uids[6]]


def test_report_shows_scores_overlap_and_captions(pool, tmp_path):
    assert score(pool, tmp_path / "s") == 0
    assert (
        main(
            ["select", str(tmp_path / "s"), "--out", str(tmp_path / "sub.npy"), "--keep", "ncl:0.3"]
        )
        == 0
    )
    out = tmp_path / "r.html"
    assert (
        main(
            [
                "report",
                str(tmp_path / "s"),
                "--out",
                str(out),
                "--base",
                str(pool["dfn"]),
                "--subset",
                str(tmp_path / "sub.npy"),
                "--pool",
                str(pool["pool"]),
            ]
        )
        == 0
    )
    page = out.read_text()
    for fig in ("hist-ncl", "hist-clip", "hist-normsim_inf", "rules", "overlap", "density"):
        assert f'id="fig-{fig}"' in page
    assert "Captions around the cuts" in page and "ncl:0.3" in page


@pytest.mark.parametrize(
    "argv,needle",
    [
        (["score", "/nonexistent/pool", "--out", "{tmp}/o"], "no pool shards"),
        (["score", "{tmp}", "--out", "{tmp}/o"], "no pool shards"),
        (["score", "{pool}", "--out", "{tmp}/o", "--scores", "normsim-inf"], "needs --target"),
        (["score", "{pool}", "--out", "{tmp}/o", "--scores", "bogus"], "unknown score"),
        (["score", "{pool}", "--out", "{tmp}/o", "--batch-size", "0"], "`batch_size` must be"),
        (["score", "{pool}", "--out", "{tmp}/o", "--model", "zz"], "no embedding column 'zz_img'"),
        (
            ["score", "{pool}", "--out", "{tmp}/o", "--scores", "normsim-2", "--target", "{tmp}/t"],
            "`target` file not found",
        ),
        (["select", "{tmp}", "--out", "{tmp}/s.npy", "--keep", "ncl:0.3"], "not a score directory"),
        (
            ["select", "{scores}", "--out", "{tmp}/s.npy", "--keep", "ncl"],
            "expected SCORE:FRACTION",
        ),
        (["select", "{scores}", "--out", "{tmp}/s.npy", "--keep", "ncl:2"], "in [0, 1]"),
        (["select", "{scores}", "--out", "{tmp}/s.npy", "--keep", "zzz:0.1"], "has no score 'zzz'"),
        (["report", "{corrupt}", "--out", "{tmp}/r.html"], "error"),
    ],
)
def test_bad_input_one_line_nonzero_exit_nothing_written(tmp_path, pool, argv, needle):
    scores = fake_scores(tmp_path / "scores", ["0" * 32], ncl=[0.5])
    corrupt = tmp_path / "corrupt"
    corrupt.mkdir()
    (corrupt / "0.parquet").write_bytes(b"PAR1 not really")
    sub = {
        "tmp": str(tmp_path),
        "pool": str(pool["pool"]),
        "scores": str(scores),
        "corrupt": str(corrupt),
    }
    r = subprocess.run([*CLI, *[a.format(**sub) for a in argv]], capture_output=True, text=True)
    assert r.returncode == 1
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and needle in lines[0], r.stderr
    assert not (tmp_path / "s.npy").exists() and not (tmp_path / "r.html").exists()
    assert not (tmp_path / "o").exists(), "a failed first run writes nothing"


def test_help_on_every_command():
    for cmd in ([], ["score"], ["select"], ["report"]):
        r = subprocess.run([*CLI, *cmd, "--help"], capture_output=True, text=True)
        assert r.returncode == 0 and "usage: polars-curate" in r.stdout


def test_outputs_have_normal_permissions(tmp_path):
    old = os.umask(0o022)
    try:
        io.write_uids(pl.Series("uid", ["0" * 32]), tmp_path / "s.npy")
    finally:
        os.umask(old)
    assert os.stat(tmp_path / "s.npy").st_mode & 0o777 == 0o644
