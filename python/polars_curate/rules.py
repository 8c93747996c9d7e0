"""Selection rules and the log that records how ``select`` applied them.

* ``SCORE:F`` keeps, of the rows still in, the ``floor(F * start)`` with the highest score
  (ties: the smaller uid; rows without a score, or NaN, are never kept). ``F`` is read as the
  nearest fraction with denominator at most 10**9, so ``0.3`` is exactly 3/10.
* ``SCORE>=V`` (``>``, ``<=``, ``<``) keeps the rows whose score passes the threshold
  (LAION/DataComp style).

``SCORE`` is a score of the directory (``ncl``, ``clip``, ``normsim-inf``, ``normsim-2`` or a
column name) or an external score file ``PATH.parquet`` (``uid`` or ``uid_hi``/``uid_lo``
plus one numeric column, or ``PATH.parquet#COLUMN``), e.g. DFN or HYPE scores; pool rows it
does not score are never kept by that rule.

A :class:`Step` is one rule as applied (its exact cut and counts); a :class:`SelectLog` is the
``<subset>.select.json`` written beside a subset, which ``report`` reads back.
"""

from __future__ import annotations

import json
import math
import operator
import re
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from fractions import Fraction
from typing import Any

import polars as pl

from polars_curate._errors import first_line
from polars_curate._types import PathLike
from polars_curate._validate import as_fraction
from polars_curate.partitions import Partitions
from polars_curate.scores import column_of
from polars_curate.storage import Loc, location, parquet_schema, scan_parquet
from polars_curate.uids import check_uids, uid_key_exprs, uids_from_keys, valid_uid

__all__ = [
    "KEYS",
    "Rule",
    "ScoreRef",
    "SelectLog",
    "Step",
    "check_external",
    "cut_predicate",
    "external_scores",
    "is_repeated_key_error",
    "keep_count",
    "parse_rule",
    "refuse_repeated_keys",
    "score_files",
    "score_ref",
    "valid",
]

#: The binary uid key every join and tie rule uses.
KEYS = ["uid_hi", "uid_lo"]

_THRESHOLD = re.compile(
    r"^(?P<score>.+?)\s*(?P<op>>=|<=|>|<)\s*(?P<value>[-+]?(?:inf|(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?))$"
)
_OPS: dict[str, Callable[[pl.Expr, float], pl.Expr]] = {
    ">=": operator.ge,
    ">": operator.gt,
    "<=": operator.le,
    "<": operator.lt,
}


def keep_count(n: int, fraction: Fraction) -> int:
    """``floor(fraction * n)``, exactly: the count a fraction rule keeps out of ``n``."""
    return n * fraction.numerator // fraction.denominator


@dataclass(frozen=True)
class ScoreRef:
    """A score a rule, a mix or a sample reads: a column of the score directory, or a column
    of an external score file ``PATH.parquet[#COLUMN]`` (joined on the uid)."""

    score: str
    source: Loc | None = None

    @property
    def column(self) -> str:
        """The column it is in the working frame (one per file and column)."""
        return self.score if self.source is None else f"__ext_{self.score}@{self.source}"

    @property
    def text(self) -> str:
        return self.score if self.source is None else f"{self.source}#{self.score}"


def score_ref(name: str, where: str, storage_options: dict[str, Any] | None = None) -> ScoreRef:
    """A score of the directory (by its name or column), or a score file ``PATH.parquet`` with
    an optional ``#COLUMN`` after it (the last ``#``: a ``#`` inside the path is part of the
    path; without it, the file's one numeric column). ``ValueError`` naming ``where``."""
    path, col = name, ""
    head, sep, tail = name.rpartition("#")
    if sep and head.endswith(".parquet") and not name.endswith(".parquet"):
        path, col = head, tail
    if not path.endswith(".parquet"):
        return ScoreRef(column_of(name))
    source = location(path, storage_options)
    if not source.is_file():
        raise ValueError(f"{where}: score file {source} not found")
    return ScoreRef(col or _only_score_column(source), source)


@dataclass(frozen=True)
class Rule:
    """One ``--keep`` rule."""

    text: str
    ref: ScoreRef
    fraction: Fraction | None = None
    op: str | None = None
    value: float | None = None

    @property
    def score(self) -> str:
        return self.ref.score

    @property
    def source(self) -> Loc | None:
        return self.ref.source

    @property
    def column(self) -> str:
        """The column the rule reads in the working frame."""
        return self.ref.column


def parse_rule(text: str, storage_options: dict[str, Any] | None = None) -> Rule:
    """``SCORE:F`` or ``SCORE>=V`` (``>``, ``<=``, ``<``); ``ValueError`` naming the rule."""
    m = _THRESHOLD.match(text.strip())
    where = f"--keep {text!r}"
    if m:
        ref = score_ref(m["score"].strip(), where, storage_options)
        return Rule(text, ref, op=m["op"], value=float(m["value"]))
    name, sep, frac = text.rpartition(":")
    if not sep or not name.strip():
        raise ValueError(
            f"{where}: expected SCORE:FRACTION (e.g. ncl:0.3) or SCORE>=VALUE (e.g. clip>=0.28)"
        )
    try:
        f = float(frac)
    except ValueError:
        raise ValueError(f"{where}: {frac!r} is not a number") from None
    if not 0 <= f <= 1:
        raise ValueError(f"{where}: the fraction must be in [0, 1]")
    ref = score_ref(name.strip(), where, storage_options)
    return Rule(text, ref, fraction=as_fraction(f, "fraction"))


def _only_score_column(path: Loc) -> str:
    try:
        schema = parquet_schema(path)
    except Exception as e:
        raise ValueError(f"{path}: not a readable Parquet file ({first_line(e)})") from None
    cols = [c for c, t in schema.items() if c not in ("uid", *KEYS) and t.is_numeric()]
    if len(cols) != 1:
        raise ValueError(
            f"{path}: expected one numeric score column beside the uid, found {cols or 'none'}; "
            "name it: PATH.parquet#COLUMN"
        )
    return cols[0]


def score_files(source: Loc) -> list[Loc]:
    """The Parquet files of a score source: a file, or a directory of them (a grouped score's
    results, e.g. ``SCORES/_semdedup/``)."""
    if source.suffix == ".parquet":
        return [source]
    files = sorted(source.glob("*.parquet"))
    if not files:
        raise ValueError(f"{source}: no score files there")
    return files


def _external_schema(source: Loc, score: str) -> pl.Schema:
    """The schema of an external score file, checked: its score column is numeric, its keys
    are ``uid_hi``/``uid_lo`` (both ``UInt64``) or a ``uid`` (String); anything ambiguous
    (signed integers, other types) is refused naming the file and the column."""
    try:
        schema = parquet_schema(score_files(source)[0])
    except Exception as e:
        raise ValueError(f"{source}: not a readable Parquet file ({first_line(e)})") from None
    if score not in schema:
        raise ValueError(f"{source}: no column {score!r}")
    if not schema[score].is_numeric():
        raise ValueError(f"{source}: score column {score!r} is {schema[score]}, not numeric")
    if any(k in schema for k in KEYS):
        for k in KEYS:
            if schema.get(k) != pl.UInt64:
                got = schema.get(k, "missing")
                raise ValueError(
                    f"{source}: column {k!r} must be UInt64 (an unsigned 64-bit key), got {got}; "
                    "cast it exactly, or give the uid as 32 hex digits in a 'uid' column"
                )
    elif "uid" not in schema:
        raise ValueError(f"{source}: needs a 'uid' column (or 'uid_hi' and 'uid_lo')")
    elif schema["uid"] != pl.String:
        raise ValueError(
            f"{source}: column 'uid' must be String (32 hex digits), got {schema['uid']}"
        )
    return pl.Schema(schema)


def check_external(source: Loc, score: str) -> None:
    """Everything :func:`external_scores` will read, checked (one pass over a ``uid``
    column); ``ValueError`` naming the file, the column and the first bad value."""
    schema = _external_schema(source, score)
    if "uid_hi" not in schema:
        _check_file_uids(scan_parquet(score_files(source)), source)


def external_scores(source: Loc, score: str, alias: str) -> pl.LazyFrame:
    """An external score file as ``uid_hi``, ``uid_lo`` and its column ``score`` (as
    ``Float64``, named ``alias``), to left-join on the keys (see :func:`check_external`)."""
    schema = _external_schema(source, score)
    lf = scan_parquet(score_files(source))
    if "uid_hi" not in schema:
        lf = lf.with_columns(*uid_key_exprs("uid"))
    return lf.select(*KEYS, pl.col(score).cast(pl.Float64).alias(alias))


def _check_file_uids(lf: pl.LazyFrame, source: Loc) -> None:
    """``ValueError`` naming the first value of ``source``'s ``uid`` column that is not a uid."""
    bad = (
        lf.select("uid")
        .with_row_index("row")
        .filter(~valid_uid("uid"))
        .head(1)
        .collect(engine="streaming")
    )
    if bad.height:
        check_uids(bad["uid"], str(source), int(bad["row"][0]))


def join_external(
    lf: pl.LazyFrame, source: Loc, score: str, alias: str, part: pl.Expr | None = None
) -> pl.LazyFrame:
    """``lf`` with an external score joined on the keys (each key at most once in the file);
    ``part``: only the file's rows of one key partition (those ``lf`` holds)."""
    ext = external_scores(source, score, alias)
    if part is not None:
        ext = ext.filter(part)
    return lf.join(ext, on=KEYS, how="left", validate="m:1")


def refuse_repeated_keys(sources: list[tuple[Loc, str]], parts: Partitions) -> None:
    """After a join refused a score file's repeated keys: ``ValueError`` naming the file and
    its first repeated uid (found one key partition at a time)."""
    for source, score in sources:
        for p in parts:
            dup = (
                external_scores(source, score, "__s")
                .filter(parts.predicate(p))
                .group_by(KEYS)
                .agg(pl.len().alias("n"))
                .filter(pl.col("n") > 1)
                .sort(KEYS)
                .head(1)
                .collect(engine="streaming")
            )
            if dup.height:
                uid = uids_from_keys(dup["uid_hi"].to_numpy(), dup["uid_lo"].to_numpy())[0]
                raise ValueError(
                    f"{source}: uid {uid} appears {dup['n'][0]} times; a score file must give "
                    "each uid one score"
                )


def is_repeated_key_error(e: BaseException) -> bool:
    """Whether ``e`` is Polars refusing a many-to-one join (repeated keys on the right)."""
    return "m:1" in str(e)


def valid(col: str) -> pl.Expr:
    """A score that can be ranked: not null, not NaN."""
    return pl.col(col).is_not_null() & pl.col(col).cast(pl.Float64).is_not_nan()


def cut_predicate(col: str, value: float, uid_hi: int, uid_lo: int) -> pl.Expr:
    """The rows a fraction rule keeps, given its cut: a valid score above ``value``, or equal
    to it with the key ``(uid_hi, uid_lo)`` at most the cut's (ties go to the smaller uid)."""
    s = pl.col(col).cast(pl.Float64)
    hi, lo = pl.col("uid_hi"), pl.col("uid_lo")
    return valid(col) & (
        (s > value) | ((s == value) & ((hi < uid_hi) | ((hi == uid_hi) & (lo <= uid_lo))))
    )


def threshold_predicate(col: str, op: str, value: float) -> pl.Expr:
    """The rows a threshold rule keeps."""
    return valid(col) & _OPS[op](pl.col(col).cast(pl.Float64), value)


@dataclass
class Step:
    """One rule as ``select`` applied it: what it read, its exact cut and its counts."""

    rule: str
    score: str
    before: int
    kind: str = "fraction"  # or "threshold"
    file: str | None = None
    op: str | None = None
    value: float | None = None
    fraction: str | None = None
    k: int | None = None
    cut_uid_hi: int | None = None
    cut_uid_lo: int | None = None
    #: ``"datacomp"`` for a fraction rule cut by DataComp's ``get_threshold`` (``k`` is its index).
    ties: str | None = None
    #: The clusters a ``"clusters"`` step keeps (those its target picked).
    clusters: list[int] | None = None
    kept: int = 0

    _ORDER = (
        "rule",
        "score",
        "before",
        "file",
        "kind",
        "op",
        "fraction",
        "ties",
        "k",
        "value",
        "clusters",
    )

    def to_json(self) -> dict[str, Any]:
        """Strict JSON: a non-finite threshold is written as the string ``"inf"``,
        ``"-inf"`` or ``"nan"``."""
        out = {k: getattr(self, k) for k in self._ORDER if getattr(self, k) is not None}
        if self.value is not None and not math.isfinite(self.value):
            out["value"] = str(self.value)
        if self.cut_uid_hi is not None:
            out.update(cut_uid_hi=self.cut_uid_hi, cut_uid_lo=self.cut_uid_lo)
        out["kept"] = self.kept
        return out

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Step:
        known = {f.name for f in fields(cls)}
        step = cls(**{k: v for k, v in d.items() if k in known})
        if step.value is not None:
            step.value = float(step.value)  # "inf", "-inf", "nan" as written by to_json
        return step

    def predicate(self, column: str | None = None) -> pl.Expr:
        """The rows this step passes on its own, as a predicate on its score column
        (``column``, default :attr:`score`) and ``uid_hi``/``uid_lo``. Rule ``i`` of a log keeps
        the rows of the start set that pass steps ``1..i``.

        Examples
        --------
        >>> import polars as pl
        >>> from polars_curate.rules import Step
        >>> df = pl.DataFrame({"uid_hi": [0, 0, 1], "uid_lo": [5, 9, 0], "ncl": [0.2, 0.2, 0.9]},
        ...                   schema_overrides={"uid_hi": pl.UInt64, "uid_lo": pl.UInt64})
        >>> step = Step("ncl:0.7", "ncl", 3, k=2, value=0.2, cut_uid_hi=0, cut_uid_lo=5)
        >>> df.filter(step.predicate())["uid_lo"].to_list()
        [5, 0]
        >>> df.filter(Step("ncl>=0.5", "ncl", 3, "threshold", op=">=", value=0.5).predicate())[
        ...     "uid_lo"].to_list()
        [0]
        """
        col = self.score if column is None else column
        if self.kind == "clusters":
            return pl.col(col).is_in(pl.Series(self.clusters or [], dtype=pl.UInt32).implode())
        if self.kind == "threshold":
            assert self.op is not None and self.value is not None
            return threshold_predicate(col, self.op, float(self.value))
        if self.kind != "fraction":
            raise ValueError(f"step {self.rule!r}: unknown kind {self.kind!r}")
        if self.ties == "datacomp":  # every row at or above the cut (NaN: none)
            return threshold_predicate(
                col, ">=", float(self.value if self.value is not None else "nan")
            )
        if self.value is not None and self.cut_uid_hi is not None:
            assert self.cut_uid_lo is not None
            return cut_predicate(col, float(self.value), self.cut_uid_hi, self.cut_uid_lo)
        # No cut logged: the rule kept nothing (k = 0) or every valid score.
        return pl.lit(False) if (self.k or 0) <= 0 else valid(col)


@dataclass
class SelectLog:
    """``<subset stem>.select.json``: the start set, every rule's exact cut and count."""

    scores_dir: str
    base: str | None
    start: int
    base_without_scores: int | None = None
    steps: list[Step] = field(default_factory=list)
    #: The mixes the rules or the sample read: their terms, with the means and deviations used.
    mixes: dict[str, Any] | None = None
    #: The sampling step's parameters, rows per count and mean score per count.
    sample: dict[str, Any] | None = None
    #: Uids written: each once, or as often as drawn when sampling.
    kept: int = 0
    #: Rows of the scores the last rule keeps (more than ``kept`` when uids repeat).
    kept_rows: int = 0
    #: :func:`polars_curate.io.file_digest` of the subset this log describes.
    subset_digest: str | None = None
    created_by: str = ""

    @staticmethod
    def path_for(subset: PathLike | Loc) -> Loc:
        """Where the log of the subset file ``subset`` is."""
        subset = location(subset)
        return subset.with_name(subset.stem + ".select.json")

    def to_json(self) -> bytes:
        record = {
            "scores_dir": self.scores_dir,
            "base": self.base,
            "start": self.start,
            "base_without_scores": self.base_without_scores,
            **({"mixes": self.mixes} if self.mixes else {}),
            "steps": [s.to_json() for s in self.steps],
            **({"sample": self.sample} if self.sample else {}),
            "kept": self.kept,
            "kept_rows": self.kept_rows,
            "subset_digest": self.subset_digest,
            "created_by": self.created_by,
        }
        return json.dumps(record, indent=1, allow_nan=False).encode()

    @classmethod
    def from_json(cls, text: str | bytes, where: Loc) -> SelectLog:
        """The log in ``text`` (read from ``where``); ``ValueError`` naming ``where``."""
        try:
            d = json.loads(text)
            d["steps"] = [Step.from_json(s) for s in d.get("steps", [])]
            known = {f.name for f in fields(cls)}
            return cls(**{k: v for k, v in d.items() if k in known})
        except (ValueError, TypeError, KeyError, AttributeError) as e:
            raise ValueError(f"{where}: not a select log ({e})") from None

    @classmethod
    def read(cls, subset: PathLike | Loc) -> SelectLog | None:
        """The log beside ``subset``, or ``None`` when there is none."""
        path = cls.path_for(subset)
        return cls.from_json(path.read_bytes(), path) if path.is_file() else None
