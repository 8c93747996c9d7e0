"""NormSim targets and class embeddings on the Python side: reading them, checking every row,
their content key, and how an expression carries them (the Python half of ``src/targets.rs``).

A target travels inside the expression, so the expression stays a self-contained value: inline
float32 bytes up to ``_internal.INLINE_TARGET_MAX``, else the path of a ``.npy`` holding exactly
those values (the user's own file when it is one, or a content-addressed copy in
``POLARS_CURATE_CACHE_DIR``), always with the content key the plugin checks before using it.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import numpy as np
import polars as pl

from polars_curate import _internal
from polars_curate._errors import first_line
from polars_curate._types import TargetLike
from polars_curate.atomic import write_atomic
from polars_curate.storage import Loc, S3Path, location, read_parquet

__all__ = ["read_target", "series_to_numpy", "target_array", "target_key", "target_spec"]


def series_to_numpy(s: pl.Series, arg: str, where: str) -> np.ndarray:
    if isinstance(s.dtype, pl.List):
        raise ValueError(
            f"`{arg}` {where} is a List column; cast it to a fixed-width Array, "
            f"e.g. .cast(pl.Array(pl.Float32, width))"
        )
    if not isinstance(s.dtype, pl.Array) or s.dtype.inner not in (
        pl.Float16,
        pl.Float32,
        pl.Float64,
    ):
        raise ValueError(
            f"`{arg}` {where} must be an Array of Float16, Float32 or Float64, got {s.dtype}"
        )
    if s.null_count():
        first = s.is_null().arg_max()
        raise ValueError(f"`{arg}` {where} has a null row (row {first})")
    if s.len() == 0:
        return np.zeros((0, s.dtype.size), dtype=np.float32)
    if s.dtype.inner == pl.Float16:
        s = s.cast(pl.Array(pl.Float32, s.dtype.size))
    return s.to_numpy()


def _read_target_file(path: Loc, arg: str) -> tuple[np.ndarray, Path | None]:
    """A target file's values (``.npy``, or ``.parquet`` with one embedding column; local or in
    a bucket) and its path when it is a local ``.npy``."""
    if not path.is_file():
        raise FileNotFoundError(f"`{arg}` file not found: {path}")
    suffix = path.suffix.lower()
    if suffix == ".npy":
        try:
            data = io.BytesIO(path.read_bytes()) if isinstance(path, S3Path) else path
            arr = np.load(data, allow_pickle=False)
        except Exception as e:
            raise ValueError(f"`{arg}` file {path} is not a readable .npy file ({e})") from None
        return arr, path if isinstance(path, Path) else None
    if suffix != ".parquet":
        raise ValueError(f"`{arg}` file must be .npy or .parquet, got {path}")
    try:
        df = read_parquet(path)
    except Exception as e:
        raise ValueError(
            f"`{arg}` file {path} is not a readable Parquet file ({first_line(e)})"
        ) from None
    cols = [c for c, t in df.schema.items() if isinstance(t, (pl.Array, pl.List))]
    if len(cols) != 1:
        raise ValueError(
            f"`{arg}` file {path} must hold exactly one embedding column, found "
            f"{cols or 'none'}; pass the column itself: pl.read_parquet(path)['name']"
        )
    return series_to_numpy(df[cols[0]], arg, f"column {cols[0]!r} of {path}"), None


def read_target(target: TargetLike, arg: str) -> tuple[np.ndarray, Path | None]:
    """The target as a 2-D array of numbers and, when it came from a ``.npy`` file, its path.
    Every problem is a ``ValueError``/``TypeError``/``FileNotFoundError`` naming ``arg``."""
    source: Path | None = None
    if isinstance(target, (str, os.PathLike, S3Path)):
        arr, source = _read_target_file(location(target), arg)
    elif isinstance(target, pl.Series):
        arr = series_to_numpy(target, arg, f"Series {target.name!r}")
    elif isinstance(target, (pl.Expr, str)):
        raise TypeError(f"`{arg}` must be data (an array, a Series or a file path), not a column")
    else:
        try:
            arr = np.asarray(target)
        except (ValueError, TypeError) as e:
            raise ValueError(
                f"`{arg}` must be a rectangular array of numbers (m, d): {str(e).splitlines()[0]}"
            ) from None
    if arr.ndim == 1 and arr.size:
        arr = arr.reshape(1, -1)
    if arr.ndim != 2:
        raise ValueError(f"`{arg}` must be a 2-D array (m, d), got shape {arr.shape}")
    if arr.dtype.kind not in "fiu":
        raise ValueError(f"`{arg}` must hold numbers, got dtype {arr.dtype}")
    if arr.shape[0] == 0:
        raise ValueError(f"`{arg}` is empty: it needs at least one embedding")
    if arr.shape[1] == 0:
        raise ValueError(f"`{arg}` has width 0")
    return arr, source


def target_array(
    target: TargetLike, arg: str = "target", *, normalize: bool = True
) -> tuple[np.ndarray, Path | None]:
    """The float32 values (C order) an expression computes with, and the ``.npy`` they came
    from when they are that file's values unchanged. Every row is checked, so a bad target
    fails here, when the expression is built, with an error naming ``arg`` and the row."""
    arr, source = read_target(target, arg)
    finite = np.isfinite(arr).all(axis=1)
    if not finite.all():
        raise ValueError(f"`{arg}` row {int(np.argmin(finite))} holds a NaN or infinity")
    big = np.abs(arr).max(axis=1).astype(np.float64)
    if normalize:
        if (big == 0).any():
            raise ValueError(f"`{arg}` row {int(np.argmax(big == 0))} is a zero vector")
        # Rows beyond what float32 holds (or so small that it would lose them) are scaled to
        # unit length in float64 first: any finite vector is a direction. (A copy: the
        # caller's array is never modified.)
        extreme = (big > 1e30) | (big < 1e-30)
        if extreme.any():
            arr = arr.astype(np.float64)
            rows = arr[extreme] / big[extreme, None]
            arr[extreme] = rows / np.linalg.norm(rows, axis=1, keepdims=True)
            source = None
    elif (big > np.finfo(np.float32).max).any():
        row = int(np.argmax(big > np.finfo(np.float32).max))
        raise ValueError(
            f"`{arg}` row {row} holds {big[row]:.3g}, beyond float32; "
            "products run in float32 (pass normalize=True to use its direction)"
        )
    f32 = np.ascontiguousarray(arr, dtype="<f4")
    if source is not None and not is_plain_f32_npy(source, *f32.shape):
        source = None
    return f32, source


def target_key(f32: np.ndarray) -> int:
    """The content key of a float32 target (what the plugin checks before using it)."""
    m, d = f32.shape
    hasher = _internal.TargetHasher(m, d)
    step = max(1, _internal.INLINE_TARGET_MAX // (4 * d))
    for r in range(0, m, step):
        hasher.update(np.ascontiguousarray(f32[r : r + step]).tobytes())
    return hasher.digest()


def target_spec(target: TargetLike, arg: str, normalize: bool) -> dict[str, Any]:
    """What an expression carries: the target's float32 values (inline, or the path of a
    ``.npy`` holding them when larger than ``_internal.INLINE_TARGET_MAX``) and their content
    key."""
    f32, source = target_array(target, arg, normalize=normalize)
    m, d = f32.shape
    spec: dict[str, Any] = {"rows": m, "dim": d}
    if f32.nbytes <= _internal.INLINE_TARGET_MAX:
        spec["data"] = f32.tobytes()
        spec["key"] = _internal.target_key(spec["data"], m, d)
        return spec
    spec["key"] = key = target_key(f32)
    spec["path"] = (
        str(source.resolve()) if source is not None else str(cached_target_file(f32, key))
    )
    return spec


def is_plain_f32_npy(path: Path, m: int, d: int) -> bool:
    try:
        a = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception:
        return False
    return a.dtype == np.dtype("<f4") and a.shape == (m, d) and a.flags.c_contiguous


def cached_target_file(f32: np.ndarray, key: int) -> Path:
    """A content-addressed ``.npy`` of a large target (``POLARS_CURATE_CACHE_DIR``, default
    ``~/.cache/polars-curate/targets``), written once, atomically."""
    root = Path(
        os.environ.get("POLARS_CURATE_CACHE_DIR")
        or Path.home() / ".cache" / "polars-curate" / "targets"
    )
    path = root / f"{key:016x}-{f32.shape[0]}x{f32.shape[1]}.npy"
    if not path.exists():
        write_atomic(path, lambda f: np.save(f, f32, allow_pickle=False))
    return path
