"""The scoring job on a Ray cluster: one Ray task per unit, the same unit function as a local
run (:func:`polars_curate.unit.score_unit`), so the output is the same bytes.

* Each task reads its own unit from the pool, scores it with the same expressions and writes
  ``OUT/<unit>.parquet`` atomically; the driver only plans, shows progress and collects counts.
* A task whose worker process (or node) dies is retried by Ray (``max_retries``); a unit is
  written only complete and with deterministic content, so a retry or a duplicate gives the
  same file. A killed driver resumes like a local run: finished units are skipped.
* Each task gets ``cpus`` CPUs from Ray and uses exactly those: Polars' thread pool
  (``POLARS_MAX_THREADS`` in the task's runtime environment) and the plugin's (set in the
  task), so tasks sharing a node never oversubscribe it.
* NormSim's target travels through Ray's object store (put once, shared by the tasks of a node)
  and is prepared once per worker process, keyed by its content.

Storage: the pool and ``OUT`` must be paths every worker sees (a shared file system); see the
README's "On a cluster" section.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from polars_curate import _internal
from polars_curate._errors import first_line
from polars_curate.pool import Unit
from polars_curate.unit import Work

__all__ = ["LocalCluster", "RayRunner"]

INSTALL = 'Ray is not installed: pip install "polars-curate[ray]"'


def _score_unit_task(unit: Unit, work: Work, cpus: int) -> int:
    _internal.set_thread_count(cpus)
    return work.score(unit)


class RayRunner:
    """Runs units as Ray tasks. ``address``: ``True`` for ``ray.init()`` (``RAY_ADDRESS`` or a
    local instance), or a cluster address such as ``"127.0.0.1:6379"`` or ``"auto"``."""

    def __init__(self, address: str | bool, *, cpus: int = 1, max_retries: int = 4) -> None:
        try:
            import ray  # noqa: F401
        except ImportError:
            raise RuntimeError(INSTALL) from None
        self.address = None if address is True else str(address)
        self.cpus = cpus
        self.max_retries = max_retries
        self._check_reachable()

    def _check_reachable(self, timeout: float = 10.0) -> None:
        """``ConnectionError`` naming the address when nothing answers there: ``ray.init``
        would wait for it for minutes. (``True`` without ``RAY_ADDRESS`` starts a local
        instance, and ``"auto"`` finds a local one: nothing to probe.)"""
        address = self.address or os.environ.get("RAY_ADDRESS")
        if not address or address in ("auto", "local"):
            return
        hostport = address.split("://", 1)[-1]
        host, _, port = hostport.rpartition(":")
        try:
            with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout):
                pass
        except (OSError, ValueError) as e:
            raise ConnectionError(
                f"cannot reach the Ray cluster at {address} ({first_line(e)}); is it running? "
                f"(ray status --address={hostport})"
            ) from None

    def options(self) -> dict[str, Any]:
        """The Ray task options of a unit task: its CPUs, retries, and a runtime environment
        that sizes Polars' thread pool to those CPUs (the plugin's is set in the task)."""
        env = {
            "POLARS_MAX_THREADS": str(self.cpus),
            "OMP_NUM_THREADS": str(self.cpus),
            "OPENBLAS_NUM_THREADS": str(self.cpus),
        }
        return {
            "num_cpus": self.cpus,
            "max_retries": self.max_retries,
            "retry_exceptions": False,
            "runtime_env": {"env_vars": env},
        }

    def run(self, units: Sequence[Unit], work: Work) -> Iterator[tuple[Unit, int]]:
        """Yields ``(unit, rows scored)`` as tasks finish (in completion order)."""
        import ray

        started_here = not ray.is_initialized()
        if started_here:
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            ray.init(
                address=self.address,
                include_dashboard=False,
                log_to_driver=False,
                configure_logging=False,
            )
        task = ray.remote(_score_unit_task).options(**self.options())
        # Once in the object store (the target with it); absolute: workers run elsewhere.
        work_ref = ray.put(replace(work, out=work.out.absolute()))
        refs = {task.remote(u, work_ref, self.cpus): u for u in units}
        pending = list(refs)
        try:
            while pending:
                done, pending = ray.wait(pending, num_returns=1)
                for r in done:
                    try:
                        n = ray.get(r)
                    except ray.exceptions.RayTaskError as e:
                        cause = getattr(e, "cause", None)
                        raise (cause if isinstance(cause, Exception) else e) from None
                    yield refs[r], n
        finally:
            for r in pending:
                ray.cancel(r)
            if started_here:
                ray.shutdown()


class LocalCluster:
    """A Ray cluster of ``nodes`` node processes on this machine (``ray start --block``, one
    process group each, ``cpus`` CPUs each): to try ``--ray`` locally, and for the tests and
    ``make bench-ray``. :meth:`stop` stops exactly the processes it started (never
    ``ray stop``, which would stop every Ray process of the machine). Its nodes listen on
    127.0.0.1 only, with Ray's token authentication off (``RAY_AUTH_MODE=disabled``): Ray 2.60
    turns it on for a new cluster but its own ``ray status`` and a driver without the variable
    then cannot connect.

    Examples
    --------
    >>> with LocalCluster(nodes=2, cpus=1) as c:  # doctest: +SKIP
    ...     pc.score_pool("pool/", "scores/", ray=c.address)
    """

    def __init__(self, nodes: int = 2, cpus: int = 1, temp_dir: str | None = None) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.address = f"127.0.0.1:{self.port}"
        self.env = dict(os.environ, RAY_USAGE_STATS_ENABLED="0", RAY_AUTH_MODE="disabled")
        self.ray = str(Path(sys.executable).with_name("ray"))
        head = ["--head", f"--port={self.port}", "--include-dashboard=false"]
        if temp_dir is not None:
            head.append(f"--temp-dir={temp_dir}")
        self.procs = [self._start(head, cpus)]
        self.wait_for(1)
        for _ in range(nodes - 1):
            self.procs.append(self._start([f"--address={self.address}"], cpus))
        self.wait_for(nodes)

    def _start(self, args: list[str], cpus: int) -> subprocess.Popen:
        cmd = [
            self.ray,
            "start",
            "--block",
            "--node-ip-address=127.0.0.1",
            f"--num-cpus={cpus}",
            *args,
        ]
        return subprocess.Popen(
            cmd,
            env=self.env,
            start_new_session=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def wait_for(self, nodes: int, timeout: float = 120) -> None:
        """Wait until ``nodes`` nodes are alive."""
        deadline = time.time() + timeout
        while time.time() < deadline:
            r = subprocess.run(
                [self.ray, "status", f"--address={self.address}"],
                env=self.env,
                capture_output=True,
                text=True,
            )
            active = r.stdout.split("Pending")[0] if r.returncode == 0 else ""
            if active.count("node_") >= nodes:
                return
            time.sleep(0.5)
        raise RuntimeError(f"the local Ray cluster did not reach {nodes} nodes")

    def kill_node(self, i: int) -> None:
        """SIGKILL node ``i`` (0 is the head) and everything it started."""
        os.killpg(self.procs[i].pid, signal.SIGKILL)
        self.procs[i].wait()

    def stop(self) -> None:
        for p in reversed(self.procs):
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
                try:
                    p.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(p.pid, signal.SIGKILL)
                    p.wait()

    def __enter__(self) -> LocalCluster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()
