"""Soft and Hard Cap Sampling against a NumPy transcription of FLYT's reference algorithms:
exact invariants (total drawn, distinct rows per batch, the cap), and each row's expected count
estimated over many seeds, ours and the reference's, within statistical tolerance."""

from __future__ import annotations

import numpy as np
import polars as pl
import pytest

import polars_curate as pc

SCORES = np.array([1.2, 0.9, 0.9, 0.3, 0.0, -0.4, -1.0, 2.0])


def softmax(z: np.ndarray) -> np.ndarray:
    e = np.exp(z - z.max())
    return e / e.sum()


def reference_scs(s, total, batch, alpha, rng) -> np.ndarray:
    """formll/FLYT examples.ipynb: soft_cap_sampling (numpy's choice without replacement)."""
    logits, counts, drawn = s.astype(np.float64).copy(), np.zeros(len(s), int), 0
    while drawn < total:
        b = min(batch, total - drawn)
        picked = rng.choice(len(s), size=b, p=softmax(logits), replace=False)
        counts[picked] += 1
        logits[picked] -= alpha
        drawn += b
    return counts


def reference_hcs(s, total, limit, batch, rng) -> np.ndarray:
    """formll/FLYT examples.ipynb: hard_cap_sampling (draws of capped rows dropped)."""
    probs, counts, drawn = softmax(s.astype(np.float64)), np.zeros(len(s), int), 0
    while drawn < total:
        q = probs * (counts < limit)
        for i in rng.choice(len(s), size=min(batch, total - drawn), p=q / q.sum()):
            if drawn < total and counts[i] < limit:
                counts[i] += 1
                drawn += 1
    return counts


def ours(expr_of, seeds) -> np.ndarray:
    df = pl.DataFrame({"s": SCORES})
    out = df.select(**{f"c{k}": expr_of(k) for k in seeds})
    return out.to_numpy().T


def assert_same_expectation(a: np.ndarray, b: np.ndarray) -> None:
    """Per row: the two means agree within 5 standard errors of their difference."""
    se = np.sqrt(a.var(axis=0) / len(a) + b.var(axis=0) / len(b)) + 1e-9
    z = np.abs(a.mean(axis=0) - b.mean(axis=0)) / se
    assert z.max() < 5, (a.mean(axis=0), b.mean(axis=0), z)


def test_soft_cap_matches_the_reference_in_expectation():
    total, batch, alpha = 20, 3, 0.5
    got = ours(
        lambda k: pc.soft_cap_sample("s", total, batch=batch, alpha=alpha, seed=k), range(3000)
    )
    rng = np.random.default_rng(0)
    ref = np.stack([reference_scs(SCORES, total, batch, alpha, rng) for _ in range(3000)])
    assert (got.sum(axis=1) == total).all()
    assert got.max() <= -(-total // batch)  # at most once per batch
    assert_same_expectation(got, ref)


def test_soft_cap_temperature_divides_the_logits():
    a = ours(
        lambda k: pc.soft_cap_sample("s", 12, batch=2, alpha=0.2, temperature=0.5, seed=k),
        range(2000),
    )
    rng = np.random.default_rng(1)
    ref = np.stack([reference_scs(SCORES / 0.5, 12, 2, 0.2, rng) for _ in range(2000)])
    assert_same_expectation(a, ref)


def test_hard_cap_matches_the_reference_in_expectation():
    total, limit = 30, 6
    got = ours(lambda k: pc.hard_cap_sample("s", total, limit=limit, seed=k), range(3000))
    rng = np.random.default_rng(2)
    ref = np.stack([reference_hcs(SCORES, total, limit, 7, rng) for _ in range(3000)])
    assert (got.sum(axis=1) == total).all() and got.max() == limit
    assert_same_expectation(got, ref)


def test_invariants_on_a_larger_frame_and_missing_scores():
    rng = np.random.default_rng(3)
    s = rng.normal(size=5000)
    s[::7] = np.nan
    df = pl.DataFrame({"s": s}).with_columns(
        pl.when(pl.int_range(5000) % 11 == 0).then(None).otherwise("s").alias("s")
    )
    eligible = df["s"].is_not_null() & df["s"].is_not_nan()
    n_ok = int(eligible.sum())
    # A batch of every drawable row, twice: each drawn exactly twice.
    c = df.select(pc.soft_cap_sample("s", 2 * n_ok, batch=n_ok, alpha=1.0))["s"]
    assert (
        c.dtype == pl.UInt32
        and (c.filter(eligible) == 2).all()
        and (c.filter(~eligible) == 0).all()
    )
    c = df.select(pc.hard_cap_sample("s", 3 * n_ok - 5, limit=3, temperature=0.3))["s"]
    assert c.sum() == 3 * n_ok - 5 and c.max() == 3 and (c.filter(~eligible) == 0).all()


def test_bad_arguments_and_too_few_rows():
    df = pl.DataFrame({"s": [1.0, None, 0.5]})
    with pytest.raises(pl.exceptions.ComputeError, match="needs 3 rows with a probability"):
        df.select(pc.soft_cap_sample("s", 10, batch=3))
    with pytest.raises(pl.exceptions.ComputeError, match="needs 3 rows"):
        df.select(pc.hard_cap_sample("s", 5, limit=2))
    for kwargs, msg in [
        ({"batch": 0}, "`batch` must be in"),
        ({"alpha": -1.0}, "`alpha` must be a finite number >= 0"),
        ({"temperature": 1e-300}, "got 1e-300"),
    ]:
        with pytest.raises(ValueError, match=msg):
            pc.soft_cap_sample("s", 10, **kwargs)
    with pytest.raises(ValueError, match="`limit` must be in"):
        pc.hard_cap_sample("s", 10, limit=0)
    with pytest.raises(pl.exceptions.ComputeError, match="must be numeric"):
        pl.DataFrame({"s": ["a"]}).select(pc.soft_cap_sample("s", 1, batch=1))
