"""Independent NumPy reference implementations, written from SPEC.md's formulas.

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
