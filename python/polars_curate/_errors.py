"""How errors become one line, in one place."""

from __future__ import annotations

__all__ = ["INTERRUPTED", "PoolError", "first_line", "is_interrupt"]

#: How the plugin reports a call stopped by Ctrl-C (Python raises KeyboardInterrupt next).
INTERRUPTED = "interrupted (KeyboardInterrupt)"


def first_line(e: BaseException) -> str:
    """The first line of ``e``'s message, or its type's name when it has none."""
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def is_interrupt(e: BaseException) -> bool:
    """Whether ``e`` is the plugin's report of a call stopped by Ctrl-C."""
    return INTERRUPTED in str(e)


class PoolError(ValueError):
    """A pool that cannot be read as asked; the message names the file."""
