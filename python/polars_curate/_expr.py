"""The expressions: thin wrappers that validate arguments and register plugin calls.

Argument problems raise ``ValueError``/``TypeError`` here, when the expression is built; problems
that depend on the data (dtypes, widths, row counts) are raised by the plugin when the query
runs, as ``polars.exceptions.ComputeError`` naming the argument.
"""

from __future__ import annotations

import math
import os
import pickle
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any, Union

import numpy as np
import polars as pl
from polars.plugins import register_plugin_function

from polars_curate import _internal

if TYPE_CHECKING:
    from collections.abc import Sequence

IntoExpr = Union[str, pl.Expr]
TargetLike = Union[np.ndarray, pl.Series, "str", "os.PathLike[str]", "Sequence[Sequence[float]]"]

_LIB = Path(__file__).parent

__all__ = [
    "clip_score",
    "clipcov",
    "neg_clip_loss",
    "normsim",
    "normsim2_dynamic",
    "top_fraction",
    "zero_shot_labels",
]


def _expr(x: IntoExpr, arg: str) -> pl.Expr:
    if isinstance(x, str):
        return pl.col(x)
    if isinstance(x, pl.Expr):
        return x
    raise TypeError(f"`{arg}` must be a column name or a Polars expression, got {type(x).__name__}")


def _bool(x: Any, arg: str) -> bool:
    if not isinstance(x, (bool, np.bool_)):
        raise TypeError(f"`{arg}` must be True or False, got {x!r}")
    return bool(x)


def _int(x: Any, arg: str, lo: int = 1, hi: int = 2**63 - 1) -> int:
    """An integer in ``[lo, hi]`` (the kwargs travel to Rust as pickled 64-bit integers)."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(x, (int, np.integer)):
        raise TypeError(f"`{arg}` must be an integer, got {x!r}")
    if not lo <= x <= hi:
        raise ValueError(f"`{arg}` must be in [{lo}, {hi}], got {x}")
    return int(x)


def _number(x: Any, arg: str) -> float:
    if isinstance(x, (bool, np.bool_)) or not isinstance(
        x, (int, float, np.integer, np.floating, Fraction)
    ):
        raise TypeError(f"`{arg}` must be a number, got {x!r}")
    return float(x)


def _seed(seed: Any) -> int:
    return _int(seed, "seed", 0)


def _fraction(x: Any, arg: str) -> Fraction:
    """``x`` in ``[0, 1]`` as the nearest fraction with denominator at most 10**9 (``0.3`` is
    exactly 3/10). Accepts Python and NumPy numbers and ``Fraction``."""
    if isinstance(x, (bool, np.bool_)) or not isinstance(
        x, (int, float, np.integer, np.floating, Fraction)
    ):
        raise TypeError(f"`{arg}` must be a number in [0, 1], got {x!r}")
    v = float(x)
    if not 0 <= v <= 1:  # also rejects NaN
        raise ValueError(f"`{arg}` must be in [0, 1], got {x}")
    f = x if isinstance(x, Fraction) else Fraction(v)
    return f.limit_denominator(10**9)


def _keep(keep: Any) -> tuple[int, int]:
    """``(num, den)``: a count as ``(keep, 0)``, a fraction as an exact ratio."""
    if isinstance(keep, (bool, np.bool_)):
        raise TypeError(f"`keep` must be a row count (int) or a fraction (float), got {keep!r}")
    if isinstance(keep, (int, np.integer)):
        return _int(keep, "keep", 0), 0
    if isinstance(keep, (float, np.floating, Fraction)):
        f = _fraction(keep, "keep")
        return f.numerator, f.denominator
    raise TypeError(f"`keep` must be a row count (int) or a fraction (float), got {keep!r}")


def _checked(name: str, kwargs: dict[str, Any]) -> dict[str, Any]:
    """``kwargs``, after the plugin's own range checks (``ValueError`` naming the argument)."""
    _internal.validate(name, pickle.dumps(kwargs, protocol=5))
    return kwargs


def _call(name: str, args: list[pl.Expr], kwargs: dict[str, Any], *, elementwise: bool) -> pl.Expr:
    return register_plugin_function(
        plugin_path=_LIB,
        function_name=name,
        args=args,
        kwargs=kwargs,
        is_elementwise=elementwise,
    )


def clip_score(image: IntoExpr, text: IntoExpr, *, normalize: bool = True) -> pl.Expr:
    """CLIPScore: the cosine similarity of each row's image and text embeddings.

    Parameters
    ----------
    image, text
        Columns (names or expressions) of dtype ``Array(Float16|Float32|Float64, d)`` with the
        same width ``d``. One of them may be a single row, which is compared with every row of
        the other.
    normalize
        L2-normalise both vectors first (the default). With ``False`` the result is the plain dot
        product, which equals the cosine only for unit vectors.

    Returns
    -------
    pl.Expr
        ``Float32``, elementwise. Null where either vector is null, holds a NaN, or (when
        normalising) is zero.

    Examples
    --------
    >>> import polars as pl
    >>> import polars_curate as pc
    >>> emb = pl.Array(pl.Float32, 2)
    >>> df = pl.DataFrame(
    ...     {"img": [[1.0, 0.0], [3.0, 4.0], None], "txt": [[1.0, 1.0], [3.0, 4.0], [1.0, 0.0]]},
    ...     schema={"img": emb, "txt": emb},
    ... )
    >>> df.select(pc.clip_score("img", "txt").round(4))
    shape: (3, 1)
    ┌────────┐
    │ img    │
    │ ---    │
    │ f32    │
    ╞════════╡
    │ 0.7071 │
    │ 1.0    │
    │ null   │
    └────────┘
    """
    return _call(
        "clip_score",
        [_expr(image, "image"), _expr(text, "text")],
        {"normalize": _bool(normalize, "normalize")},
        elementwise=True,
    )


def neg_clip_loss(
    image: IntoExpr,
    text: IntoExpr,
    *,
    batch_size: int = 32768,
    num_batches: int = 10,
    temperature: float = 0.01,
    seed: int = 0,
    normalize: bool = True,
) -> pl.Expr:
    r"""negCLIPLoss: CLIPScore minus how well the pair matches its contrastive negatives.

    For each of ``num_batches`` seeded random partitions of the rows into
    ``ceil(n / batch_size)`` batches of nearly equal size (they differ by at most one)::

        ncl_i = s_ii - (tau / 2) * mean_k [ LSE_{j in B_k(i)} s_ij / tau
                                          + LSE_{j in B_k(i)} s_ji / tau ]

    with ``s_ij`` the cosine of image ``i`` and text ``j`` and ``tau = temperature``. The
    ``n x n`` (or ``batch x batch``) similarity matrix is never built.

    The partition covers the rows the expression sees: the whole frame, or each group inside
    ``.over(...)`` / ``group_by().agg(...)``. Use ``.over("shard")`` to batch within shards as the
    reference implementation does.

    Parameters
    ----------
    image, text
        Columns of dtype ``Array(Float16|Float32|Float64, d)`` with the same width.
    batch_size
        Largest batch ``B`` (default 32768, the teacher's training batch).
    num_batches
        Number of random partitions ``K`` averaged over (default 10).
    temperature
        ``tau`` (default 0.01, OpenAI CLIP's logit scale 100).
    seed
        Seed of the partitions; the same data and seed give bit-identical results whatever the
        thread count, chunking or engine. Partition ``k`` uses ChaCha8 with key ``seed`` and
        stream ``k`` and a Fisher-Yates shuffle (see ``batch_assignment``).
    normalize
        L2-normalise embeddings first (default; DataComp's float16 vectors are only nearly unit).

    Returns
    -------
    pl.Expr
        ``Float32``. Rows whose image or text is null, holds a NaN, or (when normalising) is
        zero get null and take no part in anyone's batch.

    Examples
    --------
    With one batch holding every row, the result does not depend on the seed:

    >>> import polars as pl
    >>> import polars_curate as pc
    >>> emb = pl.Array(pl.Float32, 2)
    >>> df = pl.DataFrame(
    ...     {"img": [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8]],
    ...      "txt": [[1.0, 0.1], [0.1, 1.0], [1.0, 1.0]]},
    ...     schema={"img": emb, "txt": emb},
    ... )
    >>> df.select(ncl=pc.neg_clip_loss("img", "txt", num_batches=1, temperature=0.1).round(3))
    shape: (3, 1)
    ┌────────┐
    │ ncl    │
    │ ---    │
    │ f32    │
    ╞════════╡
    │ -0.005 │
    │ -0.014 │
    │ -0.019 │
    └────────┘
    """
    kwargs = {
        "batch_size": _int(batch_size, "batch_size"),
        "num_batches": _int(num_batches, "num_batches"),
        "temperature": _number(temperature, "temperature"),
        "seed": _seed(seed),
        "normalize": _bool(normalize, "normalize"),
    }
    _checked("neg_clip_loss", kwargs)
    return _call(
        "neg_clip_loss",
        [_expr(image, "image"), _expr(text, "text")],
        kwargs,
        elementwise=False,
    )


def _parse_p(p: float | str) -> float:
    if isinstance(p, str):
        if p.strip().lower() in ("inf", "infinity"):
            return math.inf
        raise ValueError(f'`p` must be a number or "inf", got {p!r}')
    if isinstance(p, (bool, np.bool_)) or not isinstance(p, (int, float, np.integer, np.floating)):
        raise TypeError(f'`p` must be a number or "inf", got {p!r}')
    return float(p)  # its range is checked by the plugin (`_checked`)


def _series_to_numpy(s: pl.Series, arg: str, where: str) -> np.ndarray:
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


def _load_target(target: TargetLike, arg: str) -> tuple[np.ndarray, Path | None]:
    """The target as a 2-D array of numbers and, when it came from a ``.npy`` file, its path.
    Every problem is a ``ValueError``/``TypeError``/``FileNotFoundError`` naming ``arg``."""
    source: Path | None = None
    if isinstance(target, (str, os.PathLike)):
        path = Path(target)
        if not path.is_file():
            raise FileNotFoundError(f"`{arg}` file not found: {path}")
        suffix = path.suffix.lower()
        if suffix == ".npy":
            try:
                arr = np.load(path, allow_pickle=False)
            except Exception as e:
                raise ValueError(f"`{arg}` file {path} is not a readable .npy file ({e})") from None
            source = path
        elif suffix == ".parquet":
            try:
                df = pl.read_parquet(path)
            except Exception as e:
                msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
                raise ValueError(
                    f"`{arg}` file {path} is not a readable Parquet file ({msg})"
                ) from None
            cols = [c for c, t in df.schema.items() if isinstance(t, (pl.Array, pl.List))]
            if len(cols) != 1:
                raise ValueError(
                    f"`{arg}` file {path} must hold exactly one embedding column, found "
                    f"{cols or 'none'}; pass the column itself: pl.read_parquet(path)['name']"
                )
            arr = _series_to_numpy(df[cols[0]], arg, f"column {cols[0]!r} of {path}")
        else:
            raise ValueError(f"`{arg}` file must be .npy or .parquet, got {path}")
    elif isinstance(target, pl.Series):
        arr = _series_to_numpy(target, arg, f"Series {target.name!r}")
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
    arr, source = _load_target(target, arg)
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
    if source is not None and not _is_plain_f32_npy(source, *f32.shape):
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


def _target_spec(target: TargetLike, arg: str, normalize: bool) -> dict[str, Any]:
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
        str(source.resolve()) if source is not None else str(_cached_target_file(f32, key))
    )
    return spec


def _is_plain_f32_npy(path: Path, m: int, d: int) -> bool:
    try:
        a = np.load(path, mmap_mode="r", allow_pickle=False)
    except Exception:
        return False
    return a.dtype == np.dtype("<f4") and a.shape == (m, d) and a.flags.c_contiguous


def _cached_target_file(f32: np.ndarray, key: int) -> Path:
    """A content-addressed ``.npy`` of a large target (``POLARS_CURATE_CACHE_DIR``, default
    ``~/.cache/polars-curate/targets``), written once, atomically."""
    from polars_curate.io import atomic_write

    root = Path(
        os.environ.get("POLARS_CURATE_CACHE_DIR")
        or Path.home() / ".cache" / "polars-curate" / "targets"
    )
    path = root / f"{key:016x}-{f32.shape[0]}x{f32.shape[1]}.npy"
    if not path.exists():
        atomic_write(path, lambda f: np.save(f, f32, allow_pickle=False))
    return path


def normsim(
    embedding: IntoExpr,
    target: TargetLike,
    *,
    p: float | str = 2.0,
    normalize: bool = True,
) -> pl.Expr:
    """NormSim_p: how close each embedding is to a target set of embeddings.

    ``NormSim_p(x) = (sum_t |<x, t>|^p)^(1/p)`` and ``NormSim_inf(x) = max_t |<x, t>|`` over the
    rows ``t`` of ``target`` (no ``1/m`` factor: it would not change rankings). Use image
    embeddings of downstream training data (e.g. ImageNet-1k train) as the target.

    The target is prepared (normalised; for ``p=2`` reduced to its ``d x d`` Gram matrix) once,
    when the expression is built, and kept in this process; the query streams: rows are scored
    in whatever batches Polars hands over, with identical results.

    Parameters
    ----------
    embedding
        Column of dtype ``Array(Float16|Float32|Float64, d)``.
    target
        The target set: a NumPy array ``(m, d)``, a Polars Series of arrays, or the path of a
        ``.npy`` file or of a ``.parquet`` file with one embedding column.
    p
        A number > 0, or ``"inf"`` / ``math.inf`` for the maximum. ``p=2`` costs ``O(d^2)`` per
        row whatever ``m``; other values ``O(m d)``.
    normalize
        L2-normalise pool and target embeddings first (default).

    Returns
    -------
    pl.Expr
        ``Float32``, elementwise. Null where the embedding is null, holds a NaN or (when
        normalising) is zero.

    Examples
    --------
    >>> import numpy as np
    >>> import polars as pl
    >>> import polars_curate as pc
    >>> emb = pl.Array(pl.Float32, 2)
    >>> df = pl.DataFrame({"img": [[1.0, 0.0], [0.6, 0.8]]}, schema={"img": emb})
    >>> target = np.array([[1.0, 0.0], [0.0, 1.0]])
    >>> df.select(inf=pc.normsim("img", target, p="inf"), two=pc.normsim("img", target, p=2))
    shape: (2, 2)
    ┌─────┬─────┐
    │ inf ┆ two │
    │ --- ┆ --- │
    │ f32 ┆ f32 │
    ╞═════╪═════╡
    │ 1.0 ┆ 1.0 │
    │ 0.8 ┆ 1.0 │
    └─────┴─────┘
    """
    pv = _parse_p(p)
    norm = _bool(normalize, "normalize")
    _checked("normsim", {"target": {"key": 0, "rows": 1, "dim": 1}, "p": pv, "normalize": norm})
    spec = _target_spec(target, "target", norm)
    return _call(
        "normsim",
        [_expr(embedding, "embedding")],
        {"target": spec, "p": pv, "normalize": norm},
        elementwise=True,
    )


def top_fraction(
    score: IntoExpr, fraction: float, *, by: IntoExpr | Sequence[IntoExpr] | None = None
) -> pl.Expr:
    """Boolean mask of the ``floor(fraction * n)`` rows with the highest ``score``.

    ``n`` counts the rows of the frame the expression runs on (or of the group, inside
    ``.over(...)``): after an earlier filter that is the rows still in, not the pool. So the
    paper's "30% of the pool by negCLIPLoss, then 20% of the pool by NormSim" is
    ``.filter(top_fraction("ncl", 0.3)).filter(top_fraction("ns", 0.2 / 0.3))``; the CLI's
    ``select`` counts every fraction against its start set (the pool or the base) instead, by
    the same rule. Nulls and NaNs are never selected (if fewer than ``floor(fraction * n)``
    rows have a score, all of them are). Ties go to the earlier row, or with ``by`` to the
    smaller value of ``by`` (e.g. ``by=["uid_hi", "uid_lo"]``, ``select``'s tie rule), so
    exactly ``floor(fraction * n)`` rows are selected.

    ``fraction`` is read as the nearest fraction with denominator at most 10**9, so ``0.3`` means
    exactly 3/10 (``floor(0.3 * 10) == 3``, although ``0.3 * 10`` is ``3.0000000000000004``).

    Examples
    --------
    >>> import polars as pl
    >>> import polars_curate as pc
    >>> df = pl.DataFrame({"s": [0.1, 0.9, None, 0.5, 0.9], "uid": [5, 4, 3, 2, 1]})
    >>> df.with_columns(top=pc.top_fraction("s", 0.2), by_uid=pc.top_fraction("s", 0.2, by="uid"))
    shape: (5, 4)
    ┌──────┬─────┬───────┬────────┐
    │ s    ┆ uid ┆ top   ┆ by_uid │
    │ ---  ┆ --- ┆ ---   ┆ ---    │
    │ f64  ┆ i64 ┆ bool  ┆ bool   │
    ╞══════╪═════╪═══════╪════════╡
    │ 0.1  ┆ 5   ┆ false ┆ false  │
    │ 0.9  ┆ 4   ┆ true  ┆ false  │
    │ null ┆ 3   ┆ false ┆ false  │
    │ 0.5  ┆ 2   ┆ false ┆ false  │
    │ 0.9  ┆ 1   ┆ false ┆ true   │
    └──────┴─────┴───────┴────────┘
    """
    frac = _fraction(fraction, "fraction")
    s = _expr(score, "score")
    valid = s.is_not_null() & s.cast(pl.Float64).is_not_nan()
    ranked = pl.when(valid).then(s)
    k = (pl.len().cast(pl.Int64) * frac.numerator) // frac.denominator
    if by is None:
        rank = ranked.rank(method="ordinal", descending=True)
        return (rank <= k).fill_null(False)
    keys = [by] if isinstance(by, (str, pl.Expr)) else list(by)
    keys = [_expr(b, "by") for b in keys]
    order = pl.int_range(pl.len(), dtype=pl.Int64).sort_by(
        [ranked, *keys], descending=[True] + [False] * len(keys), nulls_last=True
    )
    position = order.arg_sort()  # each row's place in that order
    return (position < k) & valid


def normsim2_dynamic(
    embedding: IntoExpr,
    *,
    keep: int | float,
    steps: int = 500,
    sample_fraction: float = 0.1,
    seed: int = 0,
    normalize: bool = True,
) -> pl.Expr:
    """NormSim_2-D: iterative proxy-target selection when no downstream data is known.

    Starting from all rows (``n`` = rows with a usable embedding), each of ``steps`` rounds
    builds ``G = sum x x^T`` from a seeded random ``sample_fraction`` of the surviving rows,
    scores the survivors by ``x^T G x`` and drops the lowest (ties: the later row first) so that
    after round ``r`` exactly ``max(keep, n - r * ceil((n - keep) / steps))`` rows survive.

    Parameters
    ----------
    embedding
        Column of dtype ``Array(Float16|Float32|Float64, d)`` (image embeddings).
    keep
        Rows to keep at the end: an ``int`` count (at most ``n``; more is an error) or a
        ``float`` fraction of ``n`` (rounded down).
    steps
        Rounds (default 500).
    sample_fraction
        Fraction of the survivors sampled for ``G`` each round, in ``(0, 1]`` (default 0.1).
        With ``1.0`` the result does not depend on ``seed``.
    seed
        Seed of the per-round samples (ChaCha8, stream = round).
    normalize
        L2-normalise embeddings first (default).

    Returns
    -------
    pl.Expr
        ``UInt32``: the number of rounds each row survived (``r - 1`` if dropped in round ``r``,
        ``steps`` if kept), so ``pl.col(name) >= s`` is the subset after round ``s`` and
        ``== steps`` the final one. Null for rows without a usable embedding (never kept).
        Works per group inside ``.over(...)``.

    Examples
    --------
    >>> import polars as pl
    >>> import polars_curate as pc
    >>> df = pl.DataFrame(
    ...     {"img": [[1.0, 0.0], [0.9, 0.1], [0.0, 1.0], [0.8, 0.3]]},
    ...     schema={"img": pl.Array(pl.Float32, 2)},
    ... )
    >>> df.with_columns(r=pc.normsim2_dynamic("img", keep=2, steps=2, sample_fraction=1.0))
    shape: (4, 2)
    ┌───────────────┬─────┐
    │ img           ┆ r   │
    │ ---           ┆ --- │
    │ array[f32, 2] ┆ u32 │
    ╞═══════════════╪═════╡
    │ [1.0, 0.0]    ┆ 2   │
    │ [0.9, 0.1]    ┆ 2   │
    │ [0.0, 1.0]    ┆ 0   │
    │ [0.8, 0.3]    ┆ 1   │
    └───────────────┴─────┘
    """
    kwargs = {
        "keep": _keep(keep),
        "steps": _int(steps, "steps"),
        "sample_fraction": _number(sample_fraction, "sample_fraction"),
        "seed": _seed(seed),
        "normalize": _bool(normalize, "normalize"),
    }
    _checked("normsim2_dynamic", kwargs)
    return _call("normsim2_dynamic", [_expr(embedding, "embedding")], kwargs, elementwise=False)


def clipcov(
    image: IntoExpr,
    text: IntoExpr,
    *,
    classes: IntoExpr,
    keep: int | float,
    lambda_: float = 1.0,
    easiness_weight: float = 2.0,
    pick_batch: int = 1,
    normalize: bool = True,
) -> pl.Expr:
    """ClipCov: per-class subsets whose image-text cross-covariance covers the pool's.

    Within each class ``V`` (a value of ``classes``), greedily maximises::

        F(S) = sum_{i in S} sum_{j in V} A_ij - (lambda_/2) sum_{i,j in S} A_ij
               + easiness_weight * sum_{i in S} s_ii,      A_ij = s_ij + s_ji

    with ``s_ij`` the cosine of image ``i`` and text ``j``. ``keep`` is split over the classes in
    proportion to their sizes (largest remainders get the leftover picks; ties: the smaller
    class label). Memory is ``O(n d)``, never ``O(n^2)``.

    Parameters
    ----------
    image, text
        Columns of dtype ``Array(Float16|Float32|Float64, d)``.
    classes
        Column of class labels (any dtype), e.g. zero-shot ImageNet pseudo-labels from
        :func:`zero_shot_labels`. Rows with a null class are never picked.
    keep
        Rows to pick in total: an ``int`` count or a ``float`` fraction of the usable rows.
    lambda_
        Weight of the redundancy term (default 1).
    easiness_weight
        Weight of the modular CLIPScore bonus (default 2, i.e. ``2 x CLIPScore``).
    pick_batch
        Rows picked per gain update. ``1`` (default) is exact greedy (largest gain, ties to the
        earlier row); larger values pick that many top-gain rows per update, trading exactness
        for speed (the released ClipCov code refreshes every 200 picks).
    normalize
        L2-normalise embeddings first (default).

    Returns
    -------
    pl.Expr
        ``UInt32``: the pick order within the class (0 = first picked), null for rows not
        picked. The subset is ``pl.col(name).is_not_null()``.

    Examples
    --------
    >>> import polars as pl
    >>> import polars_curate as pc
    >>> emb = pl.Array(pl.Float32, 2)
    >>> df = pl.DataFrame(
    ...     {"img": [[1.0, 0.0], [0.0, 1.0], [0.7, 0.7], [1.0, 0.1]],
    ...      "txt": [[1.0, 0.0], [0.0, 1.0], [0.6, 0.8], [-1.0, 0.0]],
    ...      "cls": ["a", "a", "a", "b"]},
    ...     schema={"img": emb, "txt": emb, "cls": pl.String},
    ... )
    >>> # keep=2 over classes of 3 and 1 rows: quotas 1.5 and 0.5, the tie goes to "a".
    >>> df.select(order=pc.clipcov("img", "txt", classes="cls", keep=2))["order"].to_list()
    [1, None, 0, None]
    """
    kwargs = {
        "keep": _keep(keep),
        "lambda": _number(lambda_, "lambda_"),
        "easiness_weight": _number(easiness_weight, "easiness_weight"),
        "pick_batch": _int(pick_batch, "pick_batch"),
        "normalize": _bool(normalize, "normalize"),
    }
    _checked("clipcov", kwargs)
    codes = _expr(classes, "classes").rank("dense")
    return _call(
        "clipcov",
        [_expr(image, "image"), _expr(text, "text"), codes],
        kwargs,
        elementwise=False,
    )


def zero_shot_labels(
    image: IntoExpr, class_embeddings: TargetLike, *, normalize: bool = True
) -> pl.Expr:
    """Zero-shot pseudo-labels: the index of the most similar class embedding for each image.

    ``argmax_c cos(x, e_c)`` over the rows ``e_c`` of ``class_embeddings`` (e.g. CLIP text
    embeddings of ImageNet class prompts); ties go to the lower index. Feed the result to
    :func:`clipcov` as ``classes``.

    Parameters
    ----------
    image
        Column of dtype ``Array(Float16|Float32|Float64, d)``.
    class_embeddings
        ``(C, d)``: a NumPy array, a Polars Series of arrays, or a ``.npy``/``.parquet`` path.
    normalize
        L2-normalise first (default; the argmax of cosines).

    Returns
    -------
    pl.Expr
        ``UInt32`` class index, elementwise; null where the embedding is unusable.

    Examples
    --------
    >>> import numpy as np
    >>> import polars as pl
    >>> import polars_curate as pc
    >>> emb = pl.Array(pl.Float32, 2)
    >>> df = pl.DataFrame({"img": [[1.0, 0.1], [0.2, 0.9]]}, schema={"img": emb})
    >>> df.select(pc.zero_shot_labels("img", np.eye(2)))["img"].to_list()
    [0, 1]
    """
    norm = _bool(normalize, "normalize")
    spec = _target_spec(class_embeddings, "class_embeddings", norm)
    return _call(
        "zero_shot_labels",
        [_expr(image, "image")],
        {"target": spec, "normalize": norm},
        elementwise=True,
    )
