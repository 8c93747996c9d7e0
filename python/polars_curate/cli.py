"""Command line: ``polars-curate score|select|report`` (arguments only; the work is in
``pipeline`` and ``report``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

import polars as pl

from polars_curate import __version__
from polars_curate.pipeline import SCORES, score_pool, select
from polars_curate.report import write_report


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="polars-curate",
        description="Score a DataComp pool with embedding-only selection scores and pick a subset.",
    )
    p.add_argument("--version", action="version", version=f"polars-curate {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser(
        "score",
        help="score every shard of a pool (resumable)",
        description="Write OUT/<shard>.parquet (uid + scores) for every <shard>.parquet/.npz pair "
        "of POOL. Reruns skip finished shards; a killed run leaves no partial file.",
    )
    s.add_argument("pool", help="directory (or glob) of DataComp shards")
    s.add_argument("--out", required=True, help="output directory for the score files")
    s.add_argument("--target", help=".npy/.parquet of downstream image embeddings (NormSim)")
    s.add_argument(
        "--scores",
        default="ncl,clip",
        help=f"comma-separated, from {', '.join(SCORES)} (default: ncl,clip)",
    )
    s.add_argument("--model", default="l14", help="embedding prefix in the npz: l14 or b32")
    s.add_argument(
        "--normsim-model", help="embedding prefix for NormSim (default: --model), e.g. b32"
    )
    s.add_argument("--batch-size", type=int, default=32768, help="negCLIPLoss batch (32768)")
    s.add_argument("--num-batches", type=int, default=10, help="negCLIPLoss partitions K (10)")
    s.add_argument("--seed", type=int, default=0, help="negCLIPLoss seed (0)")
    s.add_argument("--no-progress", action="store_true", help="no progress bar")

    c = sub.add_parser(
        "select",
        help="apply fraction rules and write a DataComp subset (.npy)",
        description="Keep, rule after rule, the top fraction of the start set (the pool, or the "
        "pool rows of --base) by a score, e.g. --keep ncl:0.3 --keep normsim-inf:0.2.",
    )
    c.add_argument("scores_dir", help="directory written by `score`")
    c.add_argument("--out", required=True, help="subset file to write (.npy)")
    c.add_argument("--base", help="start from this uid subset (.npy), e.g. DFN's")
    c.add_argument("--keep", action="append", required=True, metavar="SCORE:FRACTION")

    r = sub.add_parser(
        "report",
        help="write an HTML report of the scores",
        description="Histograms, CLIPScore vs negCLIPLoss, overlap with a base subset and the "
        "lowest- and highest-scoring captions.",
    )
    r.add_argument("scores_dir", help="directory written by `score`")
    r.add_argument("--out", required=True, help="HTML file to write")
    r.add_argument("--base", help="base uid subset (.npy) for the overlap")
    r.add_argument("--subset", help="our subset (.npy), e.g. from `select`")
    r.add_argument("--pool", help="the pool, to show captions")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        if args.command == "score":
            files = score_pool(
                args.pool,
                args.out,
                target=args.target,
                scores=[x.strip() for x in args.scores.split(",") if x.strip()],
                model=args.model,
                normsim_model=args.normsim_model,
                batch_size=args.batch_size,
                num_batches=args.num_batches,
                seed=args.seed,
                progress=not args.no_progress,
            )
            print(f"{len(files)} shard score files in {args.out}")
        elif args.command == "select":
            select(args.scores_dir, args.out, args.keep, base=args.base)
        else:
            out = write_report(
                args.scores_dir, args.out, base=args.base, subset=args.subset, pool=args.pool
            )
            print(f"wrote {out}")
    except (OSError, ValueError, KeyError, TypeError, pl.exceptions.PolarsError) as e:
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        print(f"polars-curate {args.command}: error: {msg}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
