"""Pools and score directories in a bucket: a real S3 API server (moto) on loopback; score,
select and report against it give the bytes of the same job on local files, on one machine
and on a two-node Ray cluster; a killed run resumes; two writers share a prefix; a bad
endpoint, missing credentials or a missing bucket is one line naming the URL, and nothing is
written."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from support import start_moto

import polars_curate as pc
from polars_curate.datasets import synthetic_pool
from polars_curate.storage import S3Path, s3_options

CLI = [sys.executable, "-m", "polars_curate.cli"]
BUCKET = "curate-test"
AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}


@pytest.fixture(scope="module")
def server():
    """``moto_server`` on a free loopback port, stopped at the end (only the process started)."""
    proc, url = start_moto()
    yield url
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


@pytest.fixture
def s3(server, monkeypatch):
    """A fresh bucket and the environment that reaches it (as a user's ``AWS_*``)."""
    urllib.request.urlopen(urllib.request.Request(f"{server}/moto-api/reset", method="POST"))
    urllib.request.urlopen(urllib.request.Request(f"{server}/{BUCKET}", method="PUT"))
    for k, v in {**AWS, "AWS_ENDPOINT_URL": server}.items():
        monkeypatch.setenv(k, v)
    return f"s3://{BUCKET}"


def upload(local: Path, url: str) -> None:
    """Every file under ``local`` to the prefix ``url``."""
    root = S3Path(url, s3_options())
    for f in sorted(local.rglob("*")):
        if f.is_file():
            (root / str(f.relative_to(local))).put(f.read_bytes())


def download(url: str, local: Path) -> dict[str, bytes]:
    root = S3Path(url, s3_options())
    return {p.name: p.read_bytes() for p in root.glob("*.parquet")}


def cli(*argv: object, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, *map(str, argv)], capture_output=True, text=True, timeout=600, env=env
    )


SCORE = [
    "--scores",
    "ncl,clip,normsim-inf",
    "--batch-size",
    "128",
    "--unit-rows",
    "200",
    "--no-progress",
]


@pytest.fixture(scope="module")
def pools(tmp_path_factory):
    root = tmp_path_factory.mktemp("pools")
    out = {}
    for layout in ("parquet", "npz"):
        out[layout] = synthetic_pool(
            root / layout, n=900, d=16, shards=3, layout=layout, row_group_size=300
        )
    return out


@pytest.mark.parametrize("layout", ["parquet", "npz"])
def test_score_select_report_in_a_bucket_give_the_local_bytes(s3, pools, tmp_path, layout):
    paths = pools[layout]
    upload(paths["pool"], f"{s3}/pool")
    upload(paths["target"].parent, f"{s3}/in")  # target.npy and dfn.npy
    local = tmp_path / "scores"  # named as in the bucket: the report's title
    assert (
        cli("score", paths["pool"], "--out", local, "--target", paths["target"], *SCORE).returncode
        == 0
    )
    r = cli(
        "score", f"{s3}/pool", "--out", f"{s3}/scores", "--target", f"{s3}/in/target.npy", *SCORE
    )
    assert r.returncode == 0, r.stderr
    remote = download(f"{s3}/scores", tmp_path)
    assert remote == {p.name: p.read_bytes() for p in sorted(local.glob("*.parquet"))}
    assert len(remote) == 6  # units of 200 rows in shards of 300
    # select with a base and an external score file in the bucket
    ext = pc.scan_scores(local).select("uid", h=pl.col("clip") * -1).collect()
    ext.write_parquet(tmp_path / "h.parquet")
    upload(tmp_path, f"{s3}/x")
    rules = ["--keep", "ncl:0.8", "--keep", "normsim-inf:0.5"]
    r1 = cli(
        "select",
        local,
        "--out",
        tmp_path / "sub.npy",
        "--base",
        paths["dfn"],
        *rules,
        "--keep",
        f"{tmp_path}/h.parquet:0.9",
    )
    r2 = cli(
        "select",
        f"{s3}/scores",
        "--out",
        f"{s3}/out/sub.npy",
        "--base",
        f"{s3}/in/dfn.npy",
        *rules,
        "--keep",
        f"{s3}/x/h.parquet:0.9",
    )
    assert r1.returncode == 0 and r2.returncode == 0, r2.stderr
    sub = S3Path(f"{s3}/out/sub.npy", s3_options())
    assert sub.read_bytes() == (tmp_path / "sub.npy").read_bytes()
    assert pc.read_uids(f"{s3}/out/sub.npy").equals(pc.read_uids(tmp_path / "sub.npy"))
    # report, with captions from the pool in the bucket
    r = cli(
        "report",
        f"{s3}/scores",
        "--out",
        f"{s3}/out/r.html",
        "--subset",
        f"{s3}/out/sub.npy",
        "--pool",
        f"{s3}/pool",
    )
    assert r.returncode == 0, r.stderr
    page = S3Path(f"{s3}/out/r.html", s3_options()).read_text()
    r = cli(
        "report",
        local,
        "--out",
        tmp_path / "r.html",
        "--subset",
        tmp_path / "sub.npy",
        "--pool",
        paths["pool"],
    )
    want = (tmp_path / "r.html").read_text()
    places = [
        (str(local), f"{s3}/scores"),
        (str(tmp_path / "sub.npy"), f"{s3}/out/sub.npy"),
        (str(paths["dfn"]), f"{s3}/in/dfn.npy"),
        (str(tmp_path / "h.parquet"), f"{s3}/x/h.parquet"),
    ]
    for a, b in places:  # the same page but for where the files are (also JSON-escaped)
        want = want.replace(a, b).replace(a.replace("/", "\\u002f"), b.replace("/", "\\u002f"))
    assert page == want


def test_the_python_api_takes_storage_options(server, pools, tmp_path, monkeypatch):
    for k in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        monkeypatch.delenv(k, raising=False)
    urllib.request.urlopen(urllib.request.Request(f"{server}/moto-api/reset", method="POST"))
    urllib.request.urlopen(urllib.request.Request(f"{server}/{BUCKET}", method="PUT"))
    so = {
        "aws_endpoint_url": server,
        "aws_access_key_id": "testing",
        "aws_secret_access_key": "testing",
        "aws_region": "us-east-1",
    }
    root = S3Path(f"s3://{BUCKET}/pool", s3_options(so))
    for f in sorted(pools["parquet"]["pool"].glob("*.parquet")):
        (root / f.name).put(f.read_bytes())
    lf = pc.scan_pool(f"s3://{BUCKET}/pool", storage_options=so)
    assert lf.select(pl.len()).collect().item() == 900
    S3Path(f"s3://{BUCKET}/t.npy", s3_options(so)).put(pools["parquet"]["target"].read_bytes())
    run = pc.score_pool(
        f"s3://{BUCKET}/pool",
        f"s3://{BUCKET}/s",
        scores="clip,normsim-inf",
        target=f"s3://{BUCKET}/t.npy",  # read with the same options
        progress=False,
        storage_options=so,
    )
    assert run.units == 3
    scores = pc.scan_scores(f"s3://{BUCKET}/s", storage_options=so).collect()
    pc.write_uids(scores["uid"][:10], f"s3://{BUCKET}/u.npy", storage_options=so)
    assert pc.read_uids(f"s3://{BUCKET}/u.npy", storage_options=so)["uid"].to_list() == sorted(
        scores["uid"][:10].to_list()
    )


def test_a_killed_run_resumes_to_the_same_bytes_and_two_writers_share_a_prefix(s3, pools, tmp_path):
    paths = pools["npz"]
    upload(paths["pool"], f"{s3}/pool")
    argv = [
        "score",
        f"{s3}/pool",
        "--out",
        f"{s3}/s",
        "--scores",
        "ncl,clip",
        "--batch-size",
        "64",
        "--unit-rows",
        "100",
        "--no-progress",
    ]
    proc = subprocess.Popen([*CLI, *argv], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 120
    while len(download(f"{s3}/s", tmp_path)) < 2 and time.monotonic() < deadline:
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert cli(*argv).returncode == 0
    whole = cli(*[a if a != f"{s3}/s" else f"{s3}/fresh" for a in argv])
    assert whole.returncode == 0
    assert download(f"{s3}/s", tmp_path) == download(f"{s3}/fresh", tmp_path)
    # Two processes, halves of the pool, one prefix: both succeed, the directory is complete.
    two = [
        subprocess.Popen(
            [*CLI, "score", f"{s3}/pool/0000000{g}.parquet", "--out", f"{s3}/two", *argv[4:]],
            stderr=subprocess.PIPE,
            text=True,
        )
        for g in (0, 1, 2)
    ]
    for p in two:
        _, err = p.communicate(timeout=300)
        assert p.returncode == 0, err
    assert download(f"{s3}/two", tmp_path) == download(f"{s3}/fresh", tmp_path)
    assert len(list(S3Path(f"{s3}/two/_runs", s3_options()).glob("*.json"))) == 3


def test_score_on_a_two_node_ray_cluster_reads_and_writes_the_bucket(s3, pools, tmp_path):
    """The nodes start without any AWS_* variable: the options travel with the units."""
    from polars_curate.distributed import LocalCluster

    paths = pools["parquet"]
    upload(paths["pool"], f"{s3}/pool")
    local = tmp_path / "local"
    argv = ["--scores", "ncl,clip", "--batch-size", "64", "--unit-rows", "100", "--no-progress"]
    assert cli("score", paths["pool"], "--out", local, *argv).returncode == 0
    clean = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    saved = os.environ.copy()
    os.environ.clear()
    os.environ.update(clean)
    try:
        cluster = LocalCluster(nodes=2, cpus=1)
    finally:
        os.environ.clear()
        os.environ.update(saved)
    with cluster:
        r = cli(
            "score",
            f"{s3}/pool",
            "--out",
            f"{s3}/s",
            *argv,
            "--ray",
            cluster.address,
            env={**os.environ, "RAY_USAGE_STATS_ENABLED": "0"},
        )
    assert r.returncode == 0, r.stderr[-3000:]
    assert download(f"{s3}/s", tmp_path) == {
        p.name: p.read_bytes() for p in local.glob("*.parquet")
    }


@pytest.mark.parametrize(
    "env,url,needle",
    [
        ({"AWS_ENDPOINT_URL": "http://127.0.0.1:1"}, "s3://b0/pool", "s3://b0/pool"),
        (
            {"AWS_ACCESS_KEY_ID": None, "AWS_SECRET_ACCESS_KEY": None},
            "s3://{bucket}/pool",
            "s3://{bucket}/pool",
        ),
        ({}, "s3://no-such-bucket/pool", "s3://no-such-bucket/pool"),
    ],
    ids=["bad-endpoint", "no-credentials", "missing-bucket"],
)
def test_unreachable_buckets_are_one_line_naming_the_url(s3, pools, tmp_path, env, url, needle):
    upload(pools["parquet"]["pool"], f"{s3}/pool")
    full = {
        **os.environ,
        "AWS_CONFIG_FILE": str(tmp_path / "none"),
        "AWS_SHARED_CREDENTIALS_FILE": str(tmp_path / "none"),
    }
    for k, v in env.items():
        if v is None:
            full.pop(k, None)
        else:
            full[k] = v
    url, needle = url.format(bucket=BUCKET), needle.format(bucket=BUCKET)
    t0 = time.monotonic()
    r = cli("score", url, "--out", f"{s3}/s", "--scores", "clip", "--no-progress", env=full)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 1 and len(lines) == 1 and needle in lines[0], r.stderr[-2000:]
    assert time.monotonic() - t0 < 120
    assert not S3Path(f"{s3}/s", s3_options()).exists()
    r = cli("select", url, "--out", tmp_path / "x.npy", "--keep", "clip:0.5", env=full)
    assert r.returncode == 1 and needle in r.stderr and not (tmp_path / "x.npy").exists()
    np.testing.assert_equal(len(r.stderr.strip().splitlines()), 1)
