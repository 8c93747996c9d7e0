"""Command line: ``polars-curate score|select|report`` (arguments only; the work is in
:mod:`~polars_curate.pipeline`, :mod:`~polars_curate.selection` and :mod:`~polars_curate.report`).

``score``'s flags are the fields of :class:`~polars_curate.scores.ScoreOptions`. Every failure is
one line on stderr naming the file or argument, exit code 1; Ctrl-C stops within about a second
with one line and exit code 130 (rerun the command to resume).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from dataclasses import MISSING, fields

from polars_curate._errors import first_line, is_interrupt
from polars_curate._internal import __version__
from polars_curate.clusters import fit_centroids
from polars_curate.partitions import DEFAULT_BUDGET
from polars_curate.pipeline import score_pool
from polars_curate.sample import Sample
from polars_curate.scores import SCORES, ScoreOptions, positive_int
from polars_curate.selection import TIES, select

__all__ = ["main"]

REPORT_EXTRA = 'the report needs Plotly: pip install "polars-curate[report]"'


def _score_parser(sub: argparse._SubParsersAction) -> None:
    s = sub.add_parser(
        "score",
        help="score every unit of a pool (resumable, locally or on Ray)",
        description="Write OUT/<unit>.parquet (uid, uid_hi, uid_lo, one column per score) for "
        "every unit of POOL: Parquet files with embedding Array columns, or DataComp's "
        "<shard>.parquet + <shard>.npz pairs. OUT records what the scores were made from; a "
        "rerun resumes, adds scores not yet there and refuses other parameters or other data. "
        f"Scores: {', '.join(SCORES)}.",
    )
    s.add_argument("pool", help="directory, glob or file of shards")
    s.add_argument("--out", required=True, help="the score directory")
    for f in fields(ScoreOptions):
        cli = dict(f.metadata)
        flag = cli.pop("flag")
        default = f.default if f.default is not MISSING else None
        if cli.get("action") is None and isinstance(default, tuple):
            default = ",".join(default)  # parsed by the field's type, like a typed value
        s.add_argument(flag, dest=f.name, default=default, **cli)


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="polars-curate",
        description="Score an image-text pool with embedding-only selection scores and pick a "
        "subset in DataComp's format.",
    )
    p.add_argument("--version", action="version", version=f"polars-curate {__version__}")
    sub = p.add_subparsers(dest="command", required=True)
    _score_parser(sub)
    _cluster_parser(sub)

    c = sub.add_parser(
        "select",
        help="apply rules and write a DataComp subset (.npy)",
        description="Keep, rule after rule, rows of the start set (the pool, or its rows in "
        "--base): SCORE:F keeps floor(F * start) rows by highest score (ties: the smaller uid); "
        "SCORE>=V (>, <=, <) keeps rows past a threshold. SCORE is a score of the directory, "
        "an external score file PATH.parquet[#COLUMN] (uid + score, e.g. DFN's) or a --mix. "
        "--sample then draws with repetition from the rows left. Also writes OUT's stem + "
        ".select.json, which `report` reads.",
    )
    c.add_argument("scores_dir", help="directory written by `score`")
    c.add_argument("--out", required=True, help="subset file to write (.npy)")
    c.add_argument("--base", help="start from this uid subset (.npy), e.g. DFN's")
    c.add_argument("--keep", action="append", default=[], metavar="RULE")
    c.add_argument(
        "--mix",
        action="append",
        default=[],
        metavar="NAME=W*SCORE,...",
        help="a linear mix of scores for rules and --sample-by, e.g. m=0.7*z(ncl),0.3*z(clip) "
        "(z(): standardised over the start set; SCORE may be PATH.parquet#COLUMN)",
    )
    c.add_argument(
        "--ties",
        choices=TIES,
        default="exact",
        help="fraction rules: exactly floor(F * start) rows (ties to the smaller uid), or "
        "datacomp: every row >= the value at index int(start * F) (DataComp's get_threshold)",
    )
    c.add_argument(
        "--keep-clusters",
        metavar="TARGET",
        help="DataComp's image-based filter, first: keep rows whose cluster TARGET's embeddings "
        "pick (.npy, by raw inner product with --centroids)",
    )
    c.add_argument("--centroids", help="the centroids the directory's clusters were assigned with")
    _sample_flags(c)
    _budget_flag(c)

    r = sub.add_parser(
        "report",
        help="write an HTML report of the scores",
        description="One self-contained HTML file: score distributions with each rule's cut, "
        "CLIPScore vs negCLIPLoss, overlaps, captions around the cuts, the run's parameters.",
    )
    r.add_argument("scores_dir", help="directory written by `score`")
    r.add_argument("--out", required=True, help="HTML file to write")
    r.add_argument("--base", help="base uid subset (.npy) for the overlap")
    r.add_argument("--subset", help="a subset from `select` (its .select.json is read too)")
    r.add_argument("--pool", help="the pool, to show captions")
    r.add_argument(
        "--examples",
        type=positive_int,
        default=5,
        metavar="N",
        help="captions shown on each side of every cut (default: 5)",
    )
    _budget_flag(r)
    return p


def _sample_flags(c: argparse.ArgumentParser) -> None:
    c.add_argument(
        "--sample",
        metavar="KIND:TOTAL",
        help="last step: draw TOTAL rows with repetition from the rows the rules left, "
        "soft-cap:TOTAL (FLYT's Soft Cap Sampling) or hard-cap:TOTAL; the subset repeats each "
        "uid as often as drawn",
    )
    c.add_argument("--sample-by", metavar="SCORE", help="the score or mix the sample's logits use")
    c.add_argument("--temperature", type=float, default=1.0, help="logits = score / T (1.0)")
    c.add_argument("--alpha", type=float, default=0.15, help="soft-cap repetition penalty (0.15)")
    c.add_argument("--sample-batch", type=int, default=100_000, help="soft-cap batch (100000)")
    c.add_argument("--limit", type=int, default=15, help="hard-cap draws per row at most (15)")
    c.add_argument("--seed", type=int, default=0, help="the sample's seed (0)")


def _sample(args: argparse.Namespace) -> Sample | None:
    if args.sample is None:
        return None
    return Sample.parse(
        args.sample,
        by=args.sample_by or "",
        batch=args.sample_batch,
        alpha=args.alpha,
        limit=args.limit,
        temperature=args.temperature,
        seed=args.seed,
    )


def _keep_clusters(args: argparse.Namespace) -> tuple[str, str] | None:
    if args.keep_clusters is None:
        return None
    if args.centroids is None:
        raise ValueError("--keep-clusters needs --centroids (the ones `score` assigned with)")
    return args.keep_clusters, args.centroids


def _cluster_parser(sub: argparse._SubParsersAction) -> None:
    k = sub.add_parser(
        "cluster",
        help="fit spherical k-means centroids on a seeded sample of a pool",
        description="Spherical k-means (cosine) of a sample of POOL's embeddings drawn while "
        "streaming it (by uid: the same for a seed, whatever the files' order); writes the "
        "k x d unit centroids as .npy, for `score --scores cluster,semdedup --centroids`.",
    )
    k.add_argument("pool", help="directory, glob or file of shards")
    k.add_argument("--out", required=True, help="the centroids file to write (.npy)")
    k.add_argument("--k", type=positive_int, required=True, help="number of clusters")
    k.add_argument("--column", default="l14_img", help="the embedding column (l14_img)")
    size = k.add_mutually_exclusive_group(required=True)
    size.add_argument("--sample", type=float, metavar="FRACTION", help="sample this fraction")
    size.add_argument("--sample-rows", type=positive_int, metavar="N", help="sample N rows")
    k.add_argument("--iters", type=positive_int, default=20, help="iterations (20)")
    k.add_argument("--seed", type=int, default=0, help="seed of the sample and the init (0)")
    k.add_argument("--no-progress", action="store_true", help="no progress output")


def _gib(text: str) -> int:
    try:
        v = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of GiB, got {text!r}") from None
    if not 0.01 <= v <= 1 << 20:
        raise argparse.ArgumentTypeError(f"must be in [0.01, 1048576] GiB, got {text}")
    return int(v * (1 << 30))


def _budget_flag(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--memory-budget",
        type=_gib,
        default=DEFAULT_BUDGET,
        metavar="GIB",
        help="GiB of uid keys held at once (base, subset, score files); larger sets are "
        f"worked through in key partitions (default {DEFAULT_BUDGET / (1 << 30):g})",
    )


def _one_line(e: BaseException) -> str:
    first = first_line(e)
    if isinstance(e, KeyError) and first.startswith(("'", '"')):
        first = first[1:-1] or type(e).__name__
    return first


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        return _run(args)
    except KeyboardInterrupt:
        print(
            f"polars-curate {args.command}: interrupted; run the same command again to resume",
            file=sys.stderr,
        )
        return 130


def _report(args: argparse.Namespace) -> None:
    try:
        from polars_curate.report import write_report  # Plotly: an optional dependency
    except ImportError as e:
        if "plotly" not in str(e):
            raise
        raise RuntimeError(REPORT_EXTRA) from None
    out = write_report(
        args.scores_dir,
        args.out,
        base=args.base,
        subset=args.subset,
        pool=args.pool,
        examples=args.examples,
        memory_budget=args.memory_budget,
    )
    print(f"wrote {out}")


#: `cluster`'s flags that are fit_centroids' keyword arguments of the same names.
_CLUSTER_ARGS = ("k", "column", "sample", "sample_rows", "iters", "seed")


def _run(args: argparse.Namespace) -> int:
    try:
        if args.command == "score":
            options = {f.name: getattr(args, f.name) for f in fields(ScoreOptions)}
            print(score_pool(args.pool, args.out, **options))
        elif args.command == "cluster":
            given = {a: getattr(args, a) for a in _CLUSTER_ARGS}
            fit = fit_centroids(args.pool, args.out, **given, progress=not args.no_progress)
            print(f"wrote {args.k} centroids ({fit.sample_rows:,} sample rows) to {args.out}")
        elif args.command == "select":
            select(
                args.scores_dir,
                args.out,
                args.keep,
                base=args.base,
                mixes=args.mix,
                ties=args.ties,
                sample=_sample(args),
                keep_clusters=_keep_clusters(args),
                memory_budget=args.memory_budget,
            )
        else:
            _report(args)
    except Exception as e:  # every error: one line naming its source, never a traceback
        if is_interrupt(e):
            raise KeyboardInterrupt from None
        print(f"polars-curate {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
