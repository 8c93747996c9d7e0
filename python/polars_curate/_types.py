"""Type aliases shared by the package (one definition each)."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Union

import numpy as np
import polars as pl

__all__ = ["IntoExpr", "PathLike", "TargetLike"]

#: A file path: ``str`` or ``os.PathLike``.
PathLike = Union[str, "os.PathLike[str]"]
#: A column: its name or a Polars expression.
IntoExpr = Union[str, pl.Expr]
#: Embeddings given as data: an array ``(m, d)``, a Series of arrays, a ``.npy``/``.parquet`` path.
TargetLike = Union[np.ndarray, pl.Series, str, "os.PathLike[str]", Sequence[Sequence[float]]]
