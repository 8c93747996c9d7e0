"""Fixtures for every test, the `job` marker, and what pytest must not import."""

from __future__ import annotations

from pathlib import Path

import pytest

# A helper script run in subprocesses by the determinism tests, not a test module.
collect_ignore = ["expressions/_determinism_job.py"]

JOB = Path(__file__).parent / "job"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests under ``tests/job/`` (pools, the score directory, select, report, Ray, the CLI) are
    marked ``job``: ``pytest -m "not job"`` runs only the expressions' tests."""
    for item in items:
        if JOB in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.job)


@pytest.fixture(params=["f16", "f32", "f64"])
def dtype(request) -> str:
    return request.param
