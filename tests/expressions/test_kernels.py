"""Every kernel this CPU runs, pinned with POLARS_CURATE_KERNEL in a subprocess, against the
float64 NumPy reference; kernels this machine lacks are skipped by name.

The kernel is read once per process, so each kernel runs in its own interpreter: the child
scores fixed data and saves the results, the parent compares them with ``reference.py``
(tolerance 1e-4 relative to max(|value|, 0.01)).
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from support import as_dtype, clip_like

from polars_curate import _internal

import reference as ref

HERE = Path(__file__).parent
SUPPORT = HERE.parent  # support.py, on the children's PYTHONPATH
KERNELS = ["portable", "avx2", "avx512", "amx"]
AVAILABLE = _internal.available_kernels()

# Shapes cross the tiles (256 rows and columns) and the micro-panels of every kernel.
N, D, M = 700, 96, 300
BATCH, NUM_BATCHES, SEED, TAU = 300, 2, 7, 0.01
POWERS = ["inf", 2.0, 2.5, 3.0]

JOB = f"""
import json, sys
import numpy as np
import polars_curate as pc
from polars_curate import _internal
from support import clip_like, frame

x, t = clip_like({N}, {D}, seed=31)
target, _ = clip_like({M}, {D}, seed=32)
df = frame("f32", img=x, txt=t)
exprs = dict(
    clip=pc.clip_score("img", "txt"),
    ncl=pc.neg_clip_loss(
        "img", "txt", batch_size={BATCH}, num_batches={NUM_BATCHES}, seed={SEED}, temperature={TAU}
    ),
    **{{f"ns_{{p}}": pc.normsim("img", target, p=p) for p in {POWERS!r}}},
)
out = df.select(**exprs)
np.savez(sys.argv[1], **{{k: out[k].to_numpy() for k in exprs}})
print(json.dumps({{"kernel": _internal.kernel()}}))
"""


def run_child(code: str, kernel: str, *args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, POLARS_CURATE_KERNEL=kernel, PYTHONPATH=str(SUPPORT))
    return subprocess.run(
        [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True
    )


def skip_unless_available(kernel: str) -> None:
    if kernel not in AVAILABLE:
        pytest.skip(f"kernel {kernel!r} is not available on this machine (runs: {AVAILABLE})")


def assert_close(ours: np.ndarray, want: np.ndarray, what: str, tol: float = 1e-4) -> None:
    """|ours - want| <= tol * max(|want|, 0.01)."""
    ours = np.asarray(ours, np.float64)
    err = np.abs(ours - want) / np.maximum(np.abs(want), 0.01)
    worst = int(np.argmax(err))
    assert err.max() <= tol, (
        f"{what}: error {err.max():.3g} at row {worst}: {ours[worst]} vs {want[worst]}"
    )


@pytest.fixture(scope="module")
def reference_scores() -> dict[str, np.ndarray]:
    x, t = clip_like(N, D, seed=31)
    target, _ = clip_like(M, D, seed=32)
    xs, ts = as_dtype(x, "f32"), as_dtype(t, "f32")
    parts = []
    for k in range(NUM_BATCHES):
        b = np.array(_internal.batch_assignment(N, BATCH, SEED, k))
        parts.append([np.flatnonzero(b == j) for j in range(b.max() + 1)])
    out = {
        "clip": ref.clip_score(xs, ts),
        "ncl": ref.neg_clip_loss(xs, ts, parts, tau=TAU)[0],
    }
    for p in POWERS:
        out[f"ns_{p}"] = ref.normsim(xs, target, math.inf if p == "inf" else p)
    return out


@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_matches_reference(kernel, reference_scores, tmp_path):
    skip_unless_available(kernel)
    r = run_child(JOB, kernel, str(tmp_path / "out.npz"))
    assert r.returncode == 0, r.stderr[-3000:]
    assert json.loads(r.stdout.strip().splitlines()[-1]) == {"kernel": kernel}
    got = np.load(tmp_path / "out.npz")
    for name, want in reference_scores.items():
        assert_close(got[name], want, f"{kernel} {name}")


@pytest.mark.parametrize("kernel", KERNELS)
def test_kernel_is_deterministic_across_threads_and_engines(kernel):
    skip_unless_available(kernel)
    job = (HERE / "_determinism_job.py").read_text()

    def hashes(threads: int) -> list[str]:
        env = dict(
            os.environ,
            POLARS_CURATE_KERNEL=kernel,
            POLARS_MAX_THREADS=str(threads),
            PYTHONPATH=str(SUPPORT),
        )
        r = subprocess.run(
            [sys.executable, "-c", job], env=env, capture_output=True, text=True, cwd=HERE
        )
        assert r.returncode == 0, r.stderr[-3000:]
        return [line for line in r.stdout.split("\n") if line]

    one = hashes(1)
    assert len(one) == 16  # 8 expressions x 2 engines
    assert one == hashes(3)
    per_name: dict[str, set[str]] = {}
    for line in one:
        name, digest = line.split()
        per_name.setdefault(name, set()).add(digest)
    assert all(len(v) == 1 for v in per_name.values()), per_name  # both engines agree


def test_fused_kernels_give_the_same_bits(tmp_path):
    """AVX2 and AVX-512 chain the same fused multiply-adds over the same tiles."""
    fused = [k for k in ("avx2", "avx512") if k in AVAILABLE]
    if len(fused) < 2:
        pytest.skip(f"needs avx2 and avx512; this machine runs {AVAILABLE}")
    outs = []
    for k in fused:
        r = run_child(JOB, k, str(tmp_path / f"{k}.npz"))
        assert r.returncode == 0, r.stderr[-3000:]
        outs.append(np.load(tmp_path / f"{k}.npz"))
    for name in outs[0].files:
        assert np.array_equal(outs[0][name], outs[1][name]), name


ERROR_JOB = """
import polars as pl
import polars_curate as pc
from polars_curate import _internal
from support import clip_like, frame

x, t = clip_like(10, 8, seed=1)
df = frame("f32", img=x, txt=t)
for what, run in [
    ("kernel", lambda: _internal.kernel()),
    ("clip_score", lambda: df.select(pc.clip_score("img", "txt"))),
    ("neg_clip_loss", lambda: df.select(pc.neg_clip_loss("img", "txt"))),
    ("normsim", lambda: df.select(pc.normsim("img", t, p="inf"))),
]:
    try:
        run()
        print(what, "OK")
    except Exception as e:
        print(what, type(e).__name__, str(e).splitlines()[0])
"""


@pytest.mark.parametrize(
    "value,message",
    [
        ("avx9", 'POLARS_CURATE_KERNEL="avx9" is not a kernel'),
        ("amx", "the amx kernel is not available in this build"),
    ],
)
def test_unusable_kernel_is_an_error_everywhere(value, message):
    r = run_child(ERROR_JOB, value)
    assert r.returncode == 0, r.stderr[-3000:]
    lines = r.stdout.strip().splitlines()
    assert len(lines) == 4, r.stdout
    for line in lines:
        kind = line.split()[1]
        assert kind in ("ValueError", "ComputeError"), line
        assert message in line, line


def test_kernel_this_cpu_lacks_is_an_error():
    lacking = [k for k in ("avx2", "avx512") if k not in AVAILABLE]
    if not lacking:
        pytest.skip(f"this CPU runs every built kernel: {AVAILABLE}")
    r = run_child(ERROR_JOB, lacking[-1])
    assert r.returncode == 0, r.stderr[-3000:]
    for line in r.stdout.strip().splitlines():
        assert "which this CPU lacks" in line, line
