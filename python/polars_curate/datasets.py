"""Synthetic CLIP-like pools with planted structure, for demos and tests (no downloads).

The embedding space mimics what CLIP embeddings really have:

* a shared direction ``g`` that every image embedding leans towards (CLIP embeddings of one
  modality share a large common component);
* concepts: clusters on the sphere; an image is its concept's center plus noise;
* three kinds of captions:
  - ``good``: describes its image (cosine about 0.33 with it, about 0.12 with other images),
  - ``mismatched``: describes another concept (cosine about 0.08),
  - ``generic``: "a photo of"-style captions lying along ``g``: they match *every* image about
    as well as (0.36) a good caption matches its own, so CLIPScore rates them high while
    negCLIPLoss, which compares a pair against the other pairs of its batch, does not;
* a target set: image embeddings of a few "downstream" concepts.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import polars as pl

from polars_curate.atomic import write_atomic
from polars_curate.io import write_uids

__all__ = ["synthetic_embeddings", "synthetic_pool"]

_GENERIC = ["a photo of", "image", "picture of the day", "photo", "an image of something"]


def _unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=-1, keepdims=True)


def synthetic_embeddings(
    n: int = 20_000,
    d: int = 256,
    seed: int = 0,
    *,
    concepts: int = 50,
    target_concepts: int = 5,
    target_size: int = 1_000,
    fractions: tuple[float, float, float] = (0.5, 0.3, 0.2),
) -> tuple[pl.DataFrame, np.ndarray]:
    """A pool of ``n`` image-text pairs and a target set, both ``d``-dimensional.

    Returns
    -------
    pool
        Columns ``uid`` (32 hex chars), ``text``, ``kind`` (``good``, ``mismatched``,
        ``generic``), ``concept`` (Int32), ``img`` and ``txt`` (``Array(Float16, d)``, L2-normalised
        then rounded to float16, as DataComp stores them).
    target
        ``(target_size, d)`` float32 image embeddings of the first ``target_concepts`` concepts.

    Examples
    --------
    >>> from polars_curate.datasets import synthetic_embeddings
    >>> pool, target = synthetic_embeddings(1000, 64, seed=1)
    >>> pool.shape, target.shape
    ((1000, 6), (1000, 64))
    >>> pool["kind"].value_counts(sort=True)["count"].to_list()
    [500, 300, 200]
    """
    if n < 1 or d < 2:
        raise ValueError(f"need n >= 1 and d >= 2, got n={n}, d={d}")
    if not np.isclose(sum(fractions), 1.0) or min(fractions) < 0:
        raise ValueError(f"`fractions` must be >= 0 and sum to 1, got {fractions}")
    rng = np.random.default_rng(seed)
    g = _unit(rng.normal(size=d))
    centers = _unit(rng.normal(size=(concepts, d)))

    def noise(rows: int) -> np.ndarray:
        return rng.normal(size=(rows, d)) / np.sqrt(d)

    concept = rng.integers(0, concepts, n)
    img = _unit(0.5 * g + 0.6 * centers[concept] + 0.7 * noise(n))

    counts = np.floor(np.asarray(fractions) * n).astype(int)
    counts[0] += n - counts.sum()
    kind = rng.permutation(np.repeat(np.arange(3), counts))
    other = (concept + rng.integers(1, concepts, n)) % concepts
    txt = np.empty_like(img)
    good, bad, generic = (kind == k for k in range(3))
    ng, nb, nx = good.sum(), bad.sum(), generic.sum()
    txt[good] = 0.2 * g + 0.25 * img[good] + 0.15 * centers[concept[good]] + 1.2 * noise(ng)
    txt[bad] = 0.2 * g + 0.15 * centers[other[bad]] + 1.2 * noise(nb)
    txt[generic] = 0.8 * g + 0.7 * noise(nx)
    txt = _unit(txt)

    words = np.array([f"concept{c}" for c in range(concepts)])
    text = np.where(
        generic,
        np.array(_GENERIC)[rng.integers(0, len(_GENERIC), n)],
        np.char.add("a picture of ", words[np.where(bad, other, concept)]),
    )
    # Uniform over all 128 bits, like DataComp's uids (hashes): a stream of its own.
    keys = np.random.default_rng([seed, 128]).integers(0, 2**64, size=(n, 2), dtype=np.uint64)
    uid = [f"{a:016x}{b:016x}" for a, b in keys]
    rng.integers(0, 2**63, size=(n, 2), dtype=np.uint64)  # the draws the earlier uids took

    tc = rng.integers(0, target_concepts, target_size)
    target = _unit(0.5 * g + 0.6 * centers[tc] + 0.7 * noise(target_size)).astype(np.float32)

    names = np.array(["good", "mismatched", "generic"])
    pool = pl.DataFrame(
        {
            "uid": uid,
            "text": text,
            "kind": names[kind],
            "concept": concept.astype(np.int32),
            "img": img.astype(np.float32),
            "txt": txt.astype(np.float32),
        }
    ).with_columns(pl.col("img", "txt").cast(pl.Array(pl.Float16, d)))
    return pool, target


def synthetic_pool(
    out_dir: str | os.PathLike[str],
    n: int = 40_000,
    d: int = 256,
    seed: int = 0,
    *,
    shards: int = 4,
    dfn_fraction: float = 0.4,
    layout: str = "npz",
    row_group_size: int | None = None,
) -> dict[str, Path]:
    """Write a small pool with planted structure, in DataComp's layout or as Parquet files
    with embedding columns.

    Files written under ``out_dir``:

    * ``pool/<00000000..>.parquet`` + ``.npz`` (``layout="npz"``, DataComp's): Parquet columns
      ``uid``, ``url``, ``text``, ``original_width``, ``original_height``,
      ``clip_b32_similarity_score``, ``clip_l14_similarity_score`` (float32), ``sha256``, plus
      ``kind`` and ``concept`` (the planted truth, for evaluation); npz keys
      ``l14_img``/``l14_txt`` (``n x d``) and ``b32_img``/``b32_txt`` (``n x d/2``, a random
      projection of the same pairs), float16. With ``layout="parquet"`` the same arrays are
      ``Array(Float16, d)`` columns of the Parquet files (row groups of ``row_group_size``);
    * ``target.npy``: float32 image embeddings of the downstream-like concepts (``d`` wide);
    * ``dfn.npy``: a DFN-like uid subset (``dfn_fraction`` of the pool, mostly good pairs), in
      DataComp's sorted ``("u8", "u8")`` format.

    Returns the paths as ``{"pool": ..., "target": ..., "dfn": ...}``.
    """

    out = Path(out_dir)
    pool_dir = out / "pool"
    pool_dir.mkdir(parents=True, exist_ok=True)
    frame, target = synthetic_embeddings(n, d, seed)
    rng = np.random.default_rng(seed + 1)
    db = max(2, d // 2)
    proj = rng.normal(size=(d, db)) / np.sqrt(d)

    def emb(col: str) -> np.ndarray:
        return frame[col].cast(pl.Array(pl.Float32, d)).to_numpy().astype(np.float64)

    l14_img, l14_txt = emb("img"), emb("txt")
    b32_img = _unit(l14_img @ proj + 0.3 * rng.normal(size=(n, db)) / np.sqrt(db))
    b32_txt = _unit(l14_txt @ proj + 0.3 * rng.normal(size=(n, db)) / np.sqrt(db))
    cos = lambda a, b: (_unit(a) * _unit(b)).sum(axis=1).astype(np.float32)  # noqa: E731
    meta = frame.select("uid", "text", "kind", "concept").with_columns(
        url=pl.format("https://example.invalid/{}.jpg", pl.col("uid")),
        original_width=pl.Series(rng.integers(64, 2048, n), dtype=pl.Int64),
        original_height=pl.Series(rng.integers(64, 2048, n), dtype=pl.Int64),
        clip_b32_similarity_score=pl.Series(cos(b32_img, b32_txt)),
        clip_l14_similarity_score=pl.Series(cos(l14_img, l14_txt)),
        sha256=pl.Series([f"{v:064x}" for v in rng.integers(0, 2**62, n)]),
    )
    if layout not in ("npz", "parquet"):
        raise ValueError(f"`layout` must be 'npz' or 'parquet', got {layout!r}")
    bounds = np.linspace(0, n, shards + 1).astype(int)
    for s in range(shards):
        lo, hi = bounds[s], bounds[s + 1]
        name = f"{s:08d}"
        part = meta[lo:hi]
        arrays = {
            "l14_img": l14_img[lo:hi].astype(np.float16),
            "l14_txt": l14_txt[lo:hi].astype(np.float16),
            "b32_img": b32_img[lo:hi].astype(np.float16),
            "b32_txt": b32_txt[lo:hi].astype(np.float16),
        }
        if layout == "parquet":
            part = part.with_columns(pl.Series(k, v) for k, v in arrays.items())
            write_atomic(
                pool_dir / f"{name}.parquet",
                lambda f, p=part: p.write_parquet(f, row_group_size=row_group_size),
            )
        else:
            write_atomic(
                pool_dir / f"{name}.parquet",
                lambda f, p=part: p.write_parquet(f, row_group_size=row_group_size),
            )
            write_atomic(pool_dir / f"{name}.npz", lambda f, a=arrays: np.savez(f, **a))
    write_atomic(out / "target.npy", lambda f: np.save(f, target))
    # DFN-like: a noisy quality filter that mostly keeps good pairs.
    quality = (frame["kind"] == "good").to_numpy() + 1.5 * rng.random(n)
    keep = np.argsort(-quality, kind="stable")[: int(dfn_fraction * n)]
    write_uids(frame["uid"].gather(keep), out / "dfn.npy")
    return {"pool": pool_dir, "target": out / "target.npy", "dfn": out / "dfn.npy"}
