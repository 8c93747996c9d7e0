"""Doctests everywhere see the names their examples assume (as Polars' own do)."""

import numpy as np
import polars as pl
import pytest

import polars_curate as pc


@pytest.fixture(autouse=True)
def _doctest_names(doctest_namespace: dict) -> None:
    doctest_namespace.update(np=np, pl=pl, pc=pc)
