"""Progress of a long job over units: a tqdm bar on a terminal, plain lines in a pipe or log.

Rate and ETA count only the rows scored in this run: units found already done (a resume) move
the count but not the clock, so a resumed run does not report millions of rows per second.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

__all__ = ["Progress"]


class Progress:
    """``Progress(total_units, total_rows)``; call :meth:`done` per unit, :meth:`close` at the
    end. ``enabled=False`` prints nothing. Lines (not a terminal) come at most every
    ``every`` seconds, and always for the last unit."""

    def __init__(
        self,
        total_units: int,
        total_rows: int,
        *,
        enabled: bool = True,
        label: str = "score",
        stream: TextIO | None = None,
        every: float = 10.0,
    ) -> None:
        self.total_units, self.total_rows = total_units, total_rows
        self.units = self.rows = self.scored = 0
        self.enabled, self.label, self.every = enabled, label, every
        self.stream = stream if stream is not None else sys.stderr
        self.start = time.monotonic()
        self.last = 0.0
        self.bar = None
        if enabled and self.stream.isatty():
            from tqdm import tqdm

            self.bar = tqdm(
                total=total_rows,
                unit="row",
                unit_scale=True,
                desc=label,
                file=self.stream,
                dynamic_ncols=True,
            )

    def done(self, name: str, rows: int, *, skipped: bool = False) -> None:
        """Unit ``name`` of ``rows`` rows is finished (``skipped``: found done before)."""
        self.units += 1
        self.rows += rows
        if not skipped:
            self.scored += rows
        if not self.enabled:
            return
        if self.bar is not None:
            if skipped:  # counts towards the total without moving the rate
                self.bar.total -= rows
                self.bar.refresh()
            else:
                self.bar.update(rows)
            self.bar.set_postfix_str(f"{self.units}/{self.total_units} units, {name}")
            return
        now = time.monotonic() - self.start
        if now - self.last >= self.every or self.units == self.total_units:
            self.last = now
            print(self.line(now), file=self.stream, flush=True)

    def line(self, elapsed: float) -> str:
        rate = self.scored / elapsed if elapsed > 0 else 0.0
        left = self.total_rows - self.rows
        eta = f", ETA {_duration(left / rate)}" if rate > 0 and left > 0 else ""
        pct = 100 * self.units / max(self.total_units, 1)
        return (
            f"{self.label}: {self.units}/{self.total_units} units ({pct:.0f}%), "
            f"{self.scored:,} rows scored in {_duration(elapsed)} ({rate:,.0f} rows/s){eta}"
        )

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _duration(s: float) -> str:
    s = round(s)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"
