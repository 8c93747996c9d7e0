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
