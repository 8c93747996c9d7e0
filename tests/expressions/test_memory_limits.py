"""Arguments that would need more memory than the process can get are refused with an error
naming what needed how much, before anything is allocated. Each case runs in a subprocess under
an address-space limit (RLIMIT_AS), so a regression fails this test instead of waking the
machine's OOM killer or aborting the interpreter."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

LIMIT = 6 << 30  # bytes of address space for the child: enough for Python, Polars and NumPy

CHILD = textwrap.dedent(
    """
    import json, resource, sys
    resource.setrlimit(resource.RLIMIT_AS, ({limit}, {limit}))
    import numpy as np, polars as pl, polars_curate as pc
    from polars_curate import _internal
    try:
        {code}
        print(json.dumps({{"ok": True}}))
    except Exception as e:
        print(json.dumps({{"ok": False, "type": type(e).__name__, "error": str(e)}}))
    """
)


def run_limited(code: str) -> dict:
    src = CHILD.format(limit=LIMIT, code=code)
    r = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, f"the child died (rc {r.returncode}): {r.stderr[-2000:]}"
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "code,needle",
    [
        (
            # 3 rows, 100,000 wide: the input is 1.2 MB but NormSim_2-D's d x d matrices 37 GiB.
            "pl.DataFrame({'a': np.ones((3, 100_000), np.float32)})"
            ".with_columns(pl.col('a').cast(pl.Array(pl.Float32, 100_000)))"
            ".select(pc.normsim2_dynamic('a', keep=1, steps=1))",
            "NormSim_2-D's d x d matrices for 100000-wide embeddings",
        ),
        ("_internal.batch_assignment(3_000_000_000, 10, 0, 0)", "batch_assignment of"),
    ],
)
def test_a_huge_allocation_is_an_error_under_an_address_space_limit(code, needle):
    out = run_limited(code)
    assert not out["ok"], out
    assert needle in out["error"] and "needed" in out["error"], out


def test_a_large_allocation_within_the_limit_still_runs():
    out = run_limited(
        "x = np.random.default_rng(0).standard_normal((64, 1024)).astype(np.float32);"
        "pl.DataFrame({'a': x}).with_columns(pl.col('a').cast(pl.Array(pl.Float32, 1024)))"
        ".select(pc.normsim2_dynamic('a', keep=8, steps=4))"
    )
    assert out["ok"], out


PEAK = textwrap.dedent(
    """
    import json, re, resource
    import numpy as np, polars as pl, polars_curate as pc
    from polars_curate import _internal

    def status(key):
        line = next(l for l in open("/proc/self/status") if l.startswith(key + ":"))
        return int(line.split()[1]) * 1024

    def run(d):
        x = np.random.default_rng(0).standard_normal((10, d)).astype(np.float32)
        df = pl.DataFrame({{"a": x}}).with_columns(pl.col("a").cast(pl.Array(pl.Float32, d)))
        return df.select(pc.normsim2_dynamic("a", keep=1, steps=1))

    run(512)  # the pools' threads and arenas exist before anything is measured
    hard = resource.getrlimit(resource.RLIMIT_AS)[1]
    # 1. the estimate: what the check says it needs when the address space is nearly full
    resource.setrlimit(resource.RLIMIT_AS, (status("VmSize") + (64 << 20), hard))
    try:
        run({d})
        raise SystemExit("not refused")
    except Exception as e:
        m = re.search(r"([0-9.]+) (MiB|GiB) needed", str(e))
    estimate = float(m.group(1)) * (1 << (20 if m.group(2) == "MiB" else 30))
    # 2. it runs with that much room (and glibc's arenas: 64 MiB of address space per thread
    # that allocates, which the check leaves aside too), and what it really touched
    room = int(estimate) + (64 << 20) * (_internal.thread_count() + 2)
    resource.setrlimit(resource.RLIMIT_AS, (status("VmSize") + room, hard))
    open("/proc/self/clear_refs", "w").write("5")  # resets the peak RSS
    before = status("VmRSS")
    run({d})
    print(json.dumps({{"estimate": estimate, "peak": status("VmHWM") - before}}))
    """
)


def test_normsim2_dynamic_memory_check_estimates_the_real_peak():
    """Ten 6,000-wide rows: the check budgets what is allocated (the f64 total and one block
    product, then the f32 result, then its packed form), not 48 d^2 bytes; the run fits in that
    room, and its measured peak is within a factor 2 below the estimate."""
    d = 6000
    r = subprocess.run(
        [sys.executable, "-c", PEAK.format(d=d)], capture_output=True, text=True, timeout=300
    )
    assert r.returncode == 0, r.stderr[-2000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["estimate"] < 16 * d * d  # 48 d^2 before: 1.6 GiB refused for 10 rows
    assert out["peak"] <= out["estimate"] <= 2 * out["peak"], out
