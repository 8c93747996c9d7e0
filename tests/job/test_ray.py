"""The scoring job on a real Ray cluster started here (a head node and a second node, one CPU
each): the same bytes as the local run, also when a task's worker process or a whole node is
killed mid-run, and when the driver is killed and the command rerun."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from polars_curate.cli import main
from polars_curate.datasets import synthetic_pool

CLI = [sys.executable, "-m", "polars_curate.cli"]


def test_without_ray_the_flag_says_how_to_install_it(tmp_path):
    pool = synthetic_pool(tmp_path / "p", n=200, d=8, shards=2)
    code = (
        "import sys; sys.modules['ray'] = None\n"
        "from polars_curate.cli import main\n"
        f"sys.exit(main(['score', {str(pool['pool'])!r}, '--out', {str(tmp_path / 's')!r}, "
        "'--ray']))"
    )
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 1
    assert 'pip install "polars-curate[ray]"' in r.stderr and len(r.stderr.splitlines()) == 1
    assert not (tmp_path / "s").exists()


ray = pytest.importorskip("ray", reason='Ray is not installed (pip install "polars-curate[ray]")')


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    from polars_curate.distributed import LocalCluster

    c = LocalCluster(nodes=2, cpus=1, temp_dir=str(tmp_path_factory.mktemp("ray")))
    yield c
    c.stop()


@pytest.fixture(scope="module")
def pool(tmp_path_factory):
    # 12 units that take about a second each: long enough to kill something mid-run.
    return synthetic_pool(tmp_path_factory.mktemp("pool"), n=12 * 3000, d=128, seed=7, shards=12)


ARGS = [
    "--scores",
    "ncl,clip,normsim-inf",
    "--batch-size",
    "1000",
    "--num-batches",
    "6",
    "--no-progress",
]


def run_cli(pool, out, *extra):
    return [
        *CLI,
        "score",
        str(pool["pool"]),
        "--out",
        str(out),
        "--target",
        str(pool["target"]),
        *ARGS,
        *extra,
    ]


def files(d: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(d.glob("*.parquet"))}


@pytest.fixture(scope="module")
def local(pool, tmp_path_factory):
    out = tmp_path_factory.mktemp("local") / "s"
    assert subprocess.run(run_cli(pool, out)).returncode == 0
    return files(out)


def test_ray_run_equals_the_local_run(cluster, pool, local, tmp_path):
    out = tmp_path / "s"
    r = subprocess.run(
        run_cli(pool, out, "--ray", cluster.address),
        capture_output=True,
        text=True,
        env=cluster.env,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert files(out) == local


def test_semdedup_groups_run_as_ray_tasks_with_the_local_bytes(cluster, tmp_path):
    """The second pass (one task per group of clusters) on the cluster: the same files."""
    pool = synthetic_pool(tmp_path / "p", n=3000, d=32, seed=2, shards=3)
    cents = tmp_path / "c.npy"
    fit = [str(pool["pool"]), "--out", str(cents), "--k", "8", "--sample", "0.5", "--iters", "3"]
    assert main(["cluster", *fit, "--no-progress"]) == 0
    args = ["--scores", "clip,cluster,semdedup", "--centroids", str(cents), "--groups", "3"]
    runs = {}
    for name, extra in (("local", []), ("ray", ["--ray", cluster.address])):
        out = tmp_path / name
        cmd = [*CLI, "score", str(pool["pool"]), "--out", str(out), *args, "--no-progress", *extra]
        r = subprocess.run(cmd, capture_output=True, text=True, env=cluster.env)
        assert r.returncode == 0, r.stderr[-3000:]
        runs[name] = {**files(out), **{f"g/{k}": v for k, v in files(out / "_semdedup").items()}}
    assert len(runs["local"]) == 3 + 3 and runs["ray"] == runs["local"]


def _kill_a_task_worker(deadline: float) -> int:
    """SIGKILL one Ray worker process while it runs a unit task; its pid."""
    while time.time() < deadline:
        ps = subprocess.run(["ps", "-eo", "pid,args"], capture_output=True, text=True).stdout
        for line in ps.splitlines():
            if "ray::_score_unit_task" in line and "IDLE" not in line:
                pid = int(line.split()[0])
                os.kill(pid, signal.SIGKILL)
                return pid
        time.sleep(0.05)
    raise AssertionError("no unit task was seen running")


def test_a_killed_task_worker_is_retried_with_identical_output(cluster, pool, local, tmp_path):
    out = tmp_path / "s"
    proc = subprocess.Popen(
        run_cli(pool, out, "--ray", cluster.address),
        env=cluster.env,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(1)
    _kill_a_task_worker(time.time() + 60)
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err[-3000:]
    assert files(out) == local


def test_threads_follow_the_cpus_ray_gives_a_task(cluster):
    import polars_curate as pc
    from polars_curate.distributed import RayRunner

    def probe():
        import polars as pl

        import polars_curate as pc

        pc.set_thread_count(1)
        return os.environ["POLARS_MAX_THREADS"], pl.thread_pool_size(), pc.thread_count()

    ray.init(address=cluster.address, include_dashboard=False, log_to_driver=False)
    try:
        opts = RayRunner(cluster.address, cpus=1).options()
        got = ray.get([ray.remote(probe).options(**opts).remote() for _ in range(4)])
    finally:
        ray.shutdown()
    assert all(g == ("1", 1, 1) for g in got), got
    assert pc.thread_count() >= 1


def test_a_killed_driver_resumes_and_a_killed_node_is_survived(cluster, pool, local, tmp_path):
    out = tmp_path / "s"
    proc = subprocess.Popen(
        run_cli(pool, out, "--ray", cluster.address), env=cluster.env, stderr=subprocess.DEVNULL
    )
    deadline = time.time() + 120
    while time.time() < deadline and len(list(out.glob("0*.parquet"))) < 3:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done = len(list(out.glob("0*.parquet")))
    assert 0 < done < 12, done
    # Rerun; while it runs, the second node dies with its tasks: Ray retries them on the head.
    proc = subprocess.Popen(
        run_cli(pool, out, "--ray", cluster.address),
        env=cluster.env,
        stderr=subprocess.PIPE,
        text=True,
    )
    time.sleep(2)
    cluster.kill_node(1)
    _, err = proc.communicate(timeout=600)
    assert proc.returncode == 0, err[-3000:]
    assert files(out) == local
    assert main(["select", str(out), "--out", str(tmp_path / "x.npy"), "--keep", "ncl:0.5"]) == 0
