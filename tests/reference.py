"""Independent NumPy reference implementations, written from docs/methods.md's formulas.

Everything is computed in float64 from the (float16/32/64) values the plugin sees. Nothing here
calls polars_curate, except that tests may pass the *batches* the plugin used (obtained from
``_internal.batch_assignment``) so that random partitions can be compared exactly.
"""

from __future__ import annotations

import numpy as np


def unit(a: np.ndarray) -> np.ndarray:
    """Rows scaled to unit L2 norm (float64)."""
    a = np.asarray(a, dtype=np.float64)
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def clip_score(x: np.ndarray, t: np.ndarray, normalize: bool = True) -> np.ndarray:
    """s_ii = <x_i, t_i> (of unit vectors when normalising)."""
    if normalize:
        x, t = unit(x), unit(t)
    return np.einsum("ij,ij->i", np.asarray(x, np.float64), np.asarray(t, np.float64))


def logsumexp(a: np.ndarray, axis: int) -> np.ndarray:
    m = a.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(a - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def neg_clip_loss(
    x: np.ndarray,
    t: np.ndarray,
    partitions: list[list[np.ndarray]],
    tau: float,
    normalize: bool = True,
) -> tuple[np.ndarray, np.ndarray]:
    """negCLIPLoss for explicit partitions (each a list of index arrays covering all rows).

    Returns ``(value, scale)``, ``scale = |s_ii| + tau/2 |mean_k(...)|`` being the size of the
    two terms whose difference is the value (the yardstick for relative error).
    """
    if normalize:
        x, t = unit(x), unit(t)
    x = np.asarray(x, np.float64)
    t = np.asarray(t, np.float64)
    acc = np.zeros(len(x))
    for batches in partitions:
        seen = np.zeros(len(x), dtype=int)
        for idx in batches:
            s = x[idx] @ t[idx].T / tau
            acc[idx] += logsumexp(s, axis=1) + logsumexp(s, axis=0)
            seen[idx] += 1
        assert (seen == 1).all(), "a partition must cover every row once"
    sii = np.einsum("ij,ij->i", x, t)
    penalty = tau / 2 * acc / len(partitions)
    return sii - penalty, np.abs(sii) + np.abs(penalty)


def normsim(x: np.ndarray, target: np.ndarray, p: float, normalize: bool = True) -> np.ndarray:
    """(sum_t |<x,t>|^p)^(1/p), or max_t |<x,t>| for p = inf."""
    if normalize:
        x, target = unit(x), unit(target)
    s = np.abs(np.asarray(x, np.float64) @ np.asarray(target, np.float64).T)
    if np.isinf(p):
        return s.max(axis=1)
    m = s.max(axis=1, keepdims=True)
    m = np.where(m > 0, m, 1.0)
    return m[:, 0] * ((s / m) ** p).sum(axis=1) ** (1.0 / p)


def normsim2_dynamic(x: np.ndarray, keep: int, steps: int, normalize: bool = True) -> np.ndarray:
    """NormSim_2-D with the whole surviving set as the sample (sample_fraction = 1): rounds
    survived per row (r - 1 if dropped in round r, steps if kept)."""
    xn = unit(x) if normalize else np.asarray(x, np.float64)
    n = len(xn)
    out = np.full(n, steps)
    alive = np.arange(n)
    chunk = -(-(n - keep) // steps)
    for r in range(1, steps + 1):
        target = max(keep, n - r * chunk)
        if len(alive) <= target:
            continue
        g = xn[alive].T @ xn[alive]
        score = np.einsum("ij,jk,ik->i", xn[alive], g, xn[alive])
        order = sorted(range(len(alive)), key=lambda q: (-score[q], alive[q]))
        out[alive[order[target:]]] = r - 1
        alive = np.sort(alive[order[:target]])
    return out


def quotas(sizes: list[int], keep: int) -> list[int]:
    """keep split in proportion to sizes; leftovers to the largest remainders (ties: earlier)."""
    n = sum(sizes)
    q = [keep * s // n for s in sizes]
    rem = [keep * s % n for s in sizes]
    for c in sorted(range(len(sizes)), key=lambda c: (-rem[c], c))[: keep - sum(q)]:
        q[c] += 1
    return q


def clipcov_objective(s: np.ndarray, members: np.ndarray, chosen: list[int], lam: float, w: float):
    """F(S) (docs/methods.md#clipcov) of one class, from cosines s (rows: images, cols: texts)."""
    a = s + s.T
    chosen = np.asarray(chosen, dtype=int)
    cover = a[np.ix_(chosen, members)].sum()
    redundancy = a[np.ix_(chosen, chosen)].sum()
    return cover - lam / 2 * redundancy + w * s[chosen, chosen].sum()


def clipcov_greedy(x, t, classes, keep: int, lam: float, w: float) -> np.ndarray:
    """Exact greedy ClipCov by brute force: every candidate's gain from F itself. Pick order
    within the class, -1 for rows not picked."""
    s = unit(x) @ unit(t).T
    labels = sorted(set(classes))
    members = [np.flatnonzero(np.asarray(classes) == c) for c in labels]
    out = np.full(len(x), -1)
    for idx, q in zip(members, quotas([len(m) for m in members], keep)):
        chosen: list[int] = []
        for step in range(q):
            base = clipcov_objective(s, idx, chosen, lam, w)
            gains = [
                (clipcov_objective(s, idx, [*chosen, e], lam, w) - base, -e)
                for e in idx
                if e not in chosen
            ]
            e = -max(gains)[1]
            chosen.append(e)
            out[e] = step
    return out


def nearest(x: np.ndarray, c: np.ndarray, normalize: bool = True) -> tuple[np.ndarray, np.ndarray]:
    """argmax_j <x_i, c_j> (ties: the lower j) and that value, of unit rows when normalising."""
    if normalize:
        x, c = unit(x), unit(c)
    s = np.asarray(x, np.float64) @ np.asarray(c, np.float64).T
    j = s.argmax(axis=1)  # the first maximum: the lower index on ties
    return j, s[np.arange(len(x)), j]


def kmeans_step(x: np.ndarray, c: np.ndarray) -> tuple[float, np.ndarray, np.ndarray]:
    """One iteration of spherical k-means (docs/methods.md#clusters-and-near-duplicates) from
    centroids ``c``: the objective sum_i max_j <x_i, c_j> (unit rows), the labels, and the new
    centroids (the normalised sum of each cluster's unit rows; an empty cluster, or one whose
    rows sum to zero, in index order takes the unit row of lowest best cosine not yet taken,
    ties the lower row)."""
    xn = unit(x)
    labels, best = nearest(xn, c, normalize=False)
    new = np.zeros_like(c, dtype=np.float64)
    worst = iter(sorted(range(len(xn)), key=lambda r: (best[r], r)))
    for j in range(len(c)):
        s = xn[labels == j].sum(axis=0)
        if np.linalg.norm(s) > 0:
            new[j] = s / np.linalg.norm(s)
        else:  # no rows, or rows that cancel out: no direction
            new[j] = xn[next(worst)]
    return float(best.sum()), labels, new


def semdedup(x: np.ndarray, order: np.ndarray) -> np.ndarray:
    """SemDeDup: each row's highest cosine to any row before it in ``order`` (``order[i]`` the
    position of row i), -inf for the first."""
    xn = unit(x)
    s = xn @ xn.T
    out = np.full(len(x), -np.inf)
    for i in range(len(x)):
        before = order < order[i]
        if before.any():
            out[i] = s[i, before].max()
    return out


def image_based_keep(pool: np.ndarray, centroids: np.ndarray, target: np.ndarray) -> np.ndarray:
    """DataComp's image-based filter: the clusters the target's rows pick by raw inner product
    (argmax <t, c_j>), and the pool rows whose own nearest centroid (by cosine) is one of them."""
    picked, _ = nearest(target, centroids, normalize=False)
    labels, _ = nearest(pool, centroids)
    return np.isin(labels, picked)
