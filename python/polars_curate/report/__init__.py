"""A one-file HTML report of a score directory to choose cuts from.

Drawn with Plotly and rendered offline: ``plotly.js`` is inlined once, so the file opens in any
browser without a network. Sections (:mod:`polars_curate.report.sections`, one function each):

* **Summary**: rows, scores, the subset and its ``select`` log, the tool version.
* **Distributions**: per score, a histogram (axes, ticks, titles) of every scored row, split
  into kept and dropped when a subset is given, with each ``select`` rule's cut drawn and
  labelled with its value; a table of counts, range, mean and percentiles.
* **Rules**: the rows left after each rule (from the ``.select.json`` that ``select`` writes
  beside the subset).
* **Overlap**: UpSet-style bars of the base, the subset and each rule applied on its own.
* **Densities**: 2-D densities of a score against the one the registry reads it against
  (negCLIPLoss vs CLIPScore), kept and dropped side by side.
* **Captions around the cuts**: with ``pool``, the rows just above and just below each cut
  (and the lowest and highest), with their text and url.
* **Parameters**: each score's recorded parameters and runs.

Everything is aggregated by Polars in streaming passes (:mod:`polars_curate.report.data`:
histogram bins, 2-D bins, set combinations, top-k around a cut), so the report of a 128M-row
directory is as small as that of a 1,000-row one and memory holds the subset's and base's
keys, not the scores.
"""

from __future__ import annotations

from typing import Any

from polars_curate._types import PathLike
from polars_curate._validate import check_output
from polars_curate.atomic import write_atomic
from polars_curate.partitions import DEFAULT_BUDGET
from polars_curate.pool import list_pool
from polars_curate.report.data import BINS, GRID, join_sets, read_inputs
from polars_curate.report.page import Page
from polars_curate.report.sections import SECTIONS
from polars_curate.rules import SelectLog
from polars_curate.staging import staging
from polars_curate.storage import Loc, location

__all__ = ["BINS", "GRID", "write_report"]


def write_report(
    scores_dir: PathLike,
    out: PathLike,
    *,
    base: PathLike | None = None,
    subset: PathLike | None = None,
    pool: PathLike | None = None,
    examples: int = 5,
    memory_budget: int = DEFAULT_BUDGET,
    storage_options: dict[str, Any] | None = None,
) -> Loc:
    """Write the report of a complete score directory to ``out`` (atomically).

    ``subset`` (a ``select`` output) splits every chart into kept and dropped rows and, through
    the ``<subset stem>.select.json`` written beside it, draws each rule's cut and count;
    ``base`` adds the base to the overlap (default: the base the select log names); ``pool``
    adds the captions and urls of ``examples`` rows on each side of every cut.
    ``memory_budget`` (bytes) bounds the keys of the base and the subset held at once. Every
    path may be in a bucket (``s3://``, reached with ``storage_options`` or the environment).

    Examples
    --------
    >>> import tempfile, polars_curate as pc
    >>> from polars_curate.report import write_report
    >>> tmp = tempfile.mkdtemp()
    >>> pool = pc.datasets.synthetic_pool(tmp, n=600, d=16, shards=2)["pool"]
    >>> _ = pc.score_pool(pool, f"{tmp}/s", scores="ncl,clip", batch_size=128, progress=False)
    >>> _ = pc.select(f"{tmp}/s", f"{tmp}/sub.npy", ["ncl:0.5", "clip:0.3"], log=lambda _: None)
    >>> page = write_report(f"{tmp}/s", f"{tmp}/r.html", subset=f"{tmp}/sub.npy", pool=pool)
    >>> text = page.read_text()
    >>> "ncl:0.5" in text and "Captions around the cuts" in text
    True
    """
    so = storage_options

    def loc(p: PathLike | None) -> Loc | None:
        return None if p is None else location(p, so)

    out = location(out, so)
    data = read_inputs(location(scores_dir, so), loc(base), loc(subset), loc(pool), examples, so)
    externals = [location(s.file, so) for s in data.steps if s.file]
    log = None if data.subset is None else SelectLog.path_for(data.subset)
    pool_files = [f for s in list_pool(data.pool) for f in (s.parquet, s.npz)] if pool else []
    inputs = [data.subset, log, data.base, *externals, *pool_files, *data.files]
    check_output(out, inputs)
    with staging(out, "report") as stage:
        join_sets(data, stage, memory_budget)
        page = Page()
        for section in SECTIONS:
            section(page, data)
        text = page.html(f"polars-curate report: {data.scores_dir.name}")
    write_atomic(out, lambda f: f.write(text.encode()))
    return out
