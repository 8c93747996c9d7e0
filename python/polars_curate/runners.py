"""Where units run: one small interface, a local runner and a Ray runner.

A runner takes the units to score and yields ``(unit, rows scored)`` as they finish (0 for a
unit found finished); every runner calls the same :meth:`~polars_curate.unit.Work.score`, so the
output does not depend on where it ran.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import Protocol

from polars_curate.distributed import RayRunner
from polars_curate.pool import Unit
from polars_curate.scores import ScoreOptions
from polars_curate.unit import Work

__all__ = ["LocalRunner", "RayRunner", "Runner", "Work", "runner_for"]


class Runner(Protocol):
    """Runs units; yields ``(unit, rows scored)`` in completion order."""

    def run(self, units: Sequence[Unit], work: Work) -> Iterator[tuple[Unit, int]]: ...


class LocalRunner:
    """Units one after the other in this process (each on all of the plugin's threads)."""

    def run(self, units: Sequence[Unit], work: Work) -> Iterator[tuple[Unit, int]]:
        for u in units:
            yield u, work.score(u)


def runner_for(options: ScoreOptions) -> Runner:
    """The runner ``options`` asks for: Ray when ``ray`` is set, else local."""
    if options.ray in (None, False):
        return LocalRunner()
    return RayRunner(options.ray, cpus=options.ray_cpus)
