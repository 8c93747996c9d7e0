"""Argument coercion shared by the expressions and the job: each check raises ``TypeError`` or
``ValueError`` naming the argument."""

from __future__ import annotations

import os
from collections.abc import Iterable
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from polars_curate._types import IntoExpr

__all__ = [
    "as_bool",
    "as_expr",
    "as_fraction",
    "as_int",
    "as_keep",
    "as_number",
    "as_seed",
    "check_output",
]

_NUMBERS = (int, float, np.integer, np.floating, Fraction)


def as_expr(x: IntoExpr, arg: str) -> pl.Expr:
    """A column name or an expression, as an expression."""
    if isinstance(x, str):
        return pl.col(x)
    if isinstance(x, pl.Expr):
        return x
    raise TypeError(f"`{arg}` must be a column name or a Polars expression, got {type(x).__name__}")


def as_bool(x: Any, arg: str) -> bool:
    if not isinstance(x, (bool, np.bool_)):
        raise TypeError(f"`{arg}` must be True or False, got {x!r}")
    return bool(x)


def as_int(x: Any, arg: str, lo: int = 1, hi: int = 2**63 - 1) -> int:
    """An integer in ``[lo, hi]`` (the kwargs travel to Rust as pickled 64-bit integers)."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"`{arg}` must be an integer, got {x!r}")
    if not lo <= x <= hi:
        raise ValueError(f"`{arg}` must be in [{lo}, {hi}], got {x}")
    return int(x)


def as_number(x: Any, arg: str) -> float:
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, _NUMBERS):
        raise TypeError(f"`{arg}` must be a number, got {x!r}")
    return float(x)


def as_seed(seed: Any) -> int:
    return as_int(seed, "seed", 0)


def as_fraction(x: Any, arg: str) -> Fraction:
    """``x`` in ``[0, 1]`` as the nearest fraction with denominator at most 10**9 (``0.3`` is
    exactly 3/10). Accepts Python and NumPy numbers and ``Fraction``."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, _NUMBERS):
        raise TypeError(f"`{arg}` must be a number in [0, 1], got {x!r}")
    v = float(x)
    if not 0 <= v <= 1:  # also rejects NaN
        raise ValueError(f"`{arg}` must be in [0, 1], got {x}")
    f = x if isinstance(x, Fraction) else Fraction(v)
    return f.limit_denominator(10**9)


def as_keep(keep: Any) -> tuple[int, int]:
    """``(num, den)``: a count as ``(keep, 0)``, a fraction as an exact ratio."""
    if isinstance(keep, (bool, np.bool_)):
        raise TypeError(f"`keep` must be a row count (int) or a fraction (float), got {keep!r}")
    if isinstance(keep, (int, np.integer)):
        return as_int(keep, "keep", 0), 0
    if isinstance(keep, (float, np.floating, Fraction)):
        f = as_fraction(keep, "keep")
        return f.numerator, f.denominator
    raise TypeError(f"`keep` must be a row count (int) or a fraction (float), got {keep!r}")


def _same(a: Any, b: Any) -> bool:
    """Whether two local paths or bucket keys are one file (links and hard links resolved)."""
    a, b = (Path(x) if isinstance(x, str) else x for x in (a, b))
    if str(a.resolve()) == str(b.resolve()):
        return True
    try:
        return os.path.samefile(a, b)  # hard links
    except (OSError, TypeError):  # TypeError: a key of a bucket
        return False


def check_output(out: Any, inputs: Iterable[Any], arg: str = "--out") -> None:
    """``ValueError`` when writing ``out`` would replace one of a command's ``inputs`` (the
    same file after resolving links, or a hard link to it)."""
    for f in inputs:
        if f is not None and _same(out, f):
            raise ValueError(f"{arg} {out} is one of the command's inputs; choose another path")
