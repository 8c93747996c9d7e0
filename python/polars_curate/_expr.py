"""The expressions: thin wrappers that validate arguments and register plugin calls.

Argument problems raise ``ValueError``/``TypeError`` here, when the expression is built; problems
that depend on the data (dtypes, widths, row counts) are raised by the plugin when the query
runs, as ``polars.exceptions.ComputeError`` naming the argument.

The examples assume ``import numpy as np``, ``import polars as pl`` and
``import polars_curate as pc``, as Polars' own do.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import polars as pl
from polars.plugins import register_plugin_function

from polars_curate import _internal
from polars_curate._targets import target_spec
from polars_curate._types import IntoExpr, TargetLike
from polars_curate._validate import (
    as_bool,
    as_expr,
    as_fraction,
    as_int,
    as_keep,
    as_number,
    as_seed,
)

if TYPE_CHECKING:
    from collections.abc import Sequence

_LIB = Path(__file__).parent

__all__ = [
    "assign_clusters",
    "clip_score",
    "clipcov",
    "hard_cap_sample",
    "neg_clip_loss",
    "normsim",
    "normsim2_dynamic",
    "semdedup",
    "soft_cap_sample",
    "top_fraction",
    "zero_shot_labels",
]


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
    >>> emb = pl.Array(pl.Float32, 2)
    >>> df = pl.DataFrame(
    ...     {"img": [[1.0, 0.0], [3.0, 4.0], None], "txt": [[1.0, 1.0], [3.0, 4.0], [1.0, 0.0]]},
    ...     schema={"img": emb, "txt": emb},
    ... )
    >>> df.select(pc.clip_score("img", "txt").cast(pl.Float64).round(4))["img"].to_list()
    [0.7071, 1.0, None]
    """
    return _call(
        "clip_score",
        [as_expr(image, "image"), as_expr(text, "text")],
        {"normalize": as_bool(normalize, "normalize")},
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
        "batch_size": as_int(batch_size, "batch_size"),
        "num_batches": as_int(num_batches, "num_batches", hi=_internal.MAX_NUM_BATCHES),
        "temperature": as_number(temperature, "temperature"),
        "seed": as_seed(seed),
        "normalize": as_bool(normalize, "normalize"),
    }
    _checked("neg_clip_loss", kwargs)
    return _call(
        "neg_clip_loss",
        [as_expr(image, "image"), as_expr(text, "text")],
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
    norm = as_bool(normalize, "normalize")
    _checked("normsim", {"target": {"key": 0, "rows": 1, "dim": 1}, "p": pv, "normalize": norm})
    spec = target_spec(target, "target", norm)
    return _call(
        "normsim",
        [as_expr(embedding, "embedding")],
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
    exactly ``floor(fraction * n)`` rows are selected (docs/methods.md#top-fractions-and-ties).

    ``fraction`` is read as the nearest fraction with denominator at most 10**9, so ``0.3`` means
    exactly 3/10 (``floor(0.3 * 10) == 3``, although ``0.3 * 10`` is ``3.0000000000000004``).

    Examples
    --------
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
    frac = as_fraction(fraction, "fraction")
    s = as_expr(score, "score")
    valid = s.is_not_null() & s.cast(pl.Float64).is_not_nan()
    ranked = pl.when(valid).then(s)
    k = (pl.len().cast(pl.Int64) * frac.numerator) // frac.denominator
    if by is None:
        rank = ranked.rank(method="ordinal", descending=True)
        return (rank <= k).fill_null(False)
    keys = [by] if isinstance(by, (str, pl.Expr)) else list(by)
    keys = [as_expr(b, "by") for b in keys]
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
        "keep": as_keep(keep),
        "steps": as_int(steps, "steps", hi=_internal.MAX_STEPS),
        "sample_fraction": as_number(sample_fraction, "sample_fraction"),
        "seed": as_seed(seed),
        "normalize": as_bool(normalize, "normalize"),
    }
    _checked("normsim2_dynamic", kwargs)
    return _call("normsim2_dynamic", [as_expr(embedding, "embedding")], kwargs, elementwise=False)


def clipcov(
    image: IntoExpr,
    text: IntoExpr,
    *,
    classes: IntoExpr,
    keep: int | float,
    normalize: bool = True,
    lambda_: float = 1.0,
    easiness_weight: float = 2.0,
    pick_batch: int = 1,
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
        "keep": as_keep(keep),
        "normalize": as_bool(normalize, "normalize"),
        "lambda": as_number(lambda_, "lambda_"),
        "easiness_weight": as_number(easiness_weight, "easiness_weight"),
        "pick_batch": as_int(pick_batch, "pick_batch"),
    }
    _checked("clipcov", kwargs)
    codes = as_expr(classes, "classes").rank("dense")
    return _call(
        "clipcov",
        [as_expr(image, "image"), as_expr(text, "text"), codes],
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
    >>> emb = pl.Array(pl.Float32, 2)
    >>> df = pl.DataFrame({"img": [[1.0, 0.1], [0.2, 0.9]]}, schema={"img": emb})
    >>> df.select(pc.zero_shot_labels("img", np.eye(2)))["img"].to_list()
    [0, 1]
    """
    return _nearest(image, class_embeddings, normalize, index_only=True, args=_CLASSES)


_CLASSES = ("image", "class_embeddings")
_CENTROIDS = ("embedding", "centroids")


def _nearest(
    x: IntoExpr, rows: TargetLike, normalize: bool, *, index_only: bool, args: tuple[str, str]
) -> pl.Expr:
    """The plugin's one nearest-row search (``assign_clusters``), for both public names."""
    norm = as_bool(normalize, "normalize")
    kwargs = {
        "target": target_spec(rows, args[1], norm),
        "normalize": norm,
        "index_only": index_only,
        "args": args,
    }
    return _call("assign_clusters", [as_expr(x, args[0])], kwargs, elementwise=True)


def assign_clusters(
    embedding: IntoExpr, centroids: TargetLike, *, normalize: bool = True
) -> pl.Expr:
    """Each row's nearest centroid: ``argmax_j <x, c_j>`` and that similarity, on the fused
    argmax kernel (no ``n x k`` matrix); elementwise, so it streams like :func:`normsim`.

    :func:`zero_shot_labels` is the same search (one implementation) with class embeddings for
    centroids. With ``normalize`` (default) rows and centroids are L2-normalised (cosine; the
    assignment of spherical k-means); ``normalize=False`` compares raw inner products, which is
    DataComp's image-based filter with its released (unnormalised) centroids. Ties: the lower
    index. For unit centroids both give the same cluster.

    Parameters
    ----------
    embedding
        Column of dtype ``Array(Float16|Float32|Float64, d)``.
    centroids
        ``(k, d)``: a NumPy array, a Series of arrays, or a ``.npy``/``.parquet`` path (e.g. the
        output of :func:`polars_curate.clusters.fit_centroids`).

    Returns
    -------
    pl.Expr
        ``Struct{cluster: UInt32, similarity: Float32}``; null where the embedding is unusable.

    Examples
    --------
    >>> emb = pl.Array(pl.Float32, 2)
    >>> df = pl.DataFrame({"x": [[3.0, 4.0], [0.0, -2.0]]}, schema={"x": emb})
    >>> df.select(pc.assign_clusters("x", np.eye(2)).struct.unnest()).rows()
    [(1, 0.800000011920929), (0, 0.0)]
    """
    return _nearest(embedding, centroids, normalize, index_only=False, args=_CENTROIDS)


def semdedup(embedding: IntoExpr, *, by: IntoExpr | Sequence[IntoExpr]) -> pl.Expr:
    """SemDeDup: each row's highest cosine to any row before it in the order ``by`` (``-inf``
    for the first, which has none), within the frame or the group (use it per cluster:
    ``group_by("cluster")``).

    SemDeDup's order is ascending cosine to the cluster's centroid, the hardest rows first, ties
    by uid: ``by=["similarity", "uid"]``. A row is a near-duplicate of one kept before it when
    its score is above ``1 - eps``, so ``pl.col("semdedup") <= 1 - eps`` is the deduplicated
    subset for any ``eps`` from one pass (docs/methods.md#clusters-and-near-duplicates). Rows
    whose embedding is null, NaN or zero get null and take no part. The ``m x m`` cosines of a
    group are never built: they are reduced a tile at a time.

    Returns
    -------
    pl.Expr
        ``Float32``; whole-frame (per group inside ``group_by``).

    Examples
    --------
    >>> emb = pl.Array(pl.Float32, 2)
    >>> df = pl.DataFrame(
    ...     {"x": [[1.0, 0.0], [0.0, 1.0], [2.0, 0.1]], "sim": [0.1, 0.2, 0.3]},
    ...     schema={"x": emb, "sim": pl.Float32},
    ... )
    >>> df.select(pc.semdedup("x", by="sim").cast(pl.Float64).round(3))["x"].to_list()
    [-inf, 0.0, 0.999]
    """
    keys = [by] if isinstance(by, (str, pl.Expr)) else list(by)
    keys = [as_expr(b, "by") for b in keys]
    row_at = pl.int_range(pl.len(), dtype=pl.UInt32).sort_by(keys)
    return register_plugin_function(
        plugin_path=_LIB,
        function_name="semdedup",
        args=[as_expr(embedding, "embedding"), row_at.arg_sort()],
        is_elementwise=False,
    )


def soft_cap_sample(
    score: IntoExpr,
    total: int,
    *,
    batch: int = 100_000,
    alpha: float = 0.15,
    temperature: float = 1.0,
    seed: int = 0,
) -> pl.Expr:
    """Soft Cap Sampling (FLYT): how many times each row is drawn, repeats allowed.

    Logits ``z = score / temperature``. Until ``total`` rows are drawn: draw
    ``min(batch, total - drawn)`` distinct rows, successive draws without replacement with
    probabilities ``softmax(z)``; then ``z -= alpha`` for each drawn row. Drawn as exponential
    races (a Gumbel top-k per batch), exactly that distribution, in one pass per batch
    (docs/methods.md#soft-and-hard-cap-sampling). Rows with a null or NaN score are never
    drawn; fewer drawable rows than a batch is an error.

    Returns
    -------
    pl.Expr
        ``UInt32``: each row's count; the counts sum to ``total``. Whole-frame (per group inside
        ``group_by``); the same data and seed give the same counts for any thread count.

    Examples
    --------
    >>> df = pl.DataFrame({"s": [2.0, 1.0, 0.0, None]})
    >>> c = df.select(pc.soft_cap_sample("s", 30, batch=3, alpha=0.5))["s"]
    >>> c.sum(), c[3], c[0] >= c[1] >= c[2]  # every batch draws three distinct rows
    (30, 0, True)
    """
    kwargs = {
        "total": as_int(total, "total", hi=_internal.MAX_TOTAL),
        "batch": as_int(batch, "batch"),
        "alpha": as_number(alpha, "alpha"),
        "temperature": as_number(temperature, "temperature"),
        "seed": as_seed(seed),
    }
    _checked("soft_cap_sample", kwargs)
    return _call("soft_cap_sample", [as_expr(score, "score")], kwargs, elementwise=False)


def hard_cap_sample(
    score: IntoExpr,
    total: int,
    *,
    limit: int = 15,
    temperature: float = 1.0,
    seed: int = 0,
) -> pl.Expr:
    """Hard Cap Sampling (FLYT): ``total`` draws with replacement, a row at most ``limit``
    times.

    Probabilities ``softmax(score / temperature)``, fixed; each draw is from the rows still
    below ``limit``, in proportion to them (the reference's batched draws give the same
    distribution). Rows with a null or NaN score are never drawn; ``total`` more than
    ``limit`` times the drawable rows is an error.

    Returns
    -------
    pl.Expr
        ``UInt32``: each row's count, at most ``limit``, summing to ``total``.

    Examples
    --------
    >>> df = pl.DataFrame({"s": [5.0, 0.0, 0.0]})
    >>> df.select(pc.hard_cap_sample("s", 7, limit=3))["s"].to_list()[0]  # the favourite, capped
    3
    """
    kwargs = {
        "total": as_int(total, "total", hi=_internal.MAX_TOTAL),
        "limit": as_int(limit, "limit", 1, 2**32 - 1),
        "temperature": as_number(temperature, "temperature"),
        "seed": as_seed(seed),
    }
    _checked("hard_cap_sample", kwargs)
    return _call("hard_cap_sample", [as_expr(score, "score")], kwargs, elementwise=False)
