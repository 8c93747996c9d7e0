"""Command line: ``polars-curate score|select|report`` (arguments only; the work is in
``pipeline``, ``select`` and ``report``).

Every failure is one line on stderr naming the file or argument, exit code 1; Ctrl-C stops
within about a second with one line and exit code 130 (rerun the command to resume).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from polars_curate import __version__
from polars_curate.pipeline import SCORES
from polars_curate.pool import DEFAULT_UNIT_ROWS


def _unit_rows(text: str) -> int | None:
    if text.strip().lower() in ("shard", "none"):
        return None
    try:
        int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a row count or 'shard', got {text!r}") from None
    return _positive_int(text)


def _positive_int(text: str) -> int:
    try:
        n = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if n < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {n}")
    return n


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="polars-curate",
        description="Score an image-text pool with embedding-only selection scores and pick a "
        "subset in DataComp's format.",
    )
    p.add_argument("--version", action="version", version=f"polars-curate {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser(
        "score",
        help="score every unit of a pool (resumable, locally or on Ray)",
        description="Write OUT/<unit>.parquet (uid, uid_hi, uid_lo, one column per score) for "
        "every unit of POOL: Parquet files with embedding Array columns, or DataComp's "
        "<shard>.parquet + <shard>.npz pairs. OUT records what the scores were made from; a "
        "rerun resumes, adds scores not yet there and refuses other parameters or other data.",
    )
    s.add_argument("pool", help="directory, glob or file of shards")
    s.add_argument("--out", required=True, help="the score directory")
    s.add_argument("--target", help=".npy/.parquet of downstream image embeddings (NormSim)")
    s.add_argument(
        "--scores",
        default="ncl,clip",
        help=f"comma-separated, from {', '.join(SCORES)}, any order (default: ncl,clip)",
    )
    s.add_argument(
        "--model", default="l14", help="embedding prefix: MODEL_img, MODEL_txt (default l14)"
    )
    s.add_argument("--image-col", help="image embedding column (default: MODEL_img)")
    s.add_argument("--text-col", help="text embedding column (default: MODEL_txt)")
    s.add_argument(
        "--normsim-model", help="embedding prefix for NormSim (default: --model), e.g. b32"
    )
    s.add_argument("--normsim-col", help="NormSim's image column (default: NORMSIM_MODEL_img)")
    s.add_argument("--batch-size", type=int, default=32768, help="negCLIPLoss batch B (32768)")
    s.add_argument("--num-batches", type=int, default=10, help="negCLIPLoss partitions K (10)")
    s.add_argument("--temperature", type=float, default=0.01, help="negCLIPLoss tau (0.01)")
    s.add_argument("--seed", type=int, default=0, help="negCLIPLoss seed (0)")
    s.add_argument(
        "--no-normalize",
        action="store_true",
        help="use the embeddings as stored (the paper's code does not re-normalise DataComp's "
        "float16 vectors)",
    )
    s.add_argument(
        "--unit-rows",
        type=_unit_rows,
        default=DEFAULT_UNIT_ROWS,
        metavar="N",
        help="largest unit of work; bigger files are cut at row groups "
        f"(default {DEFAULT_UNIT_ROWS:,}; 'shard': one unit per shard)",
    )
    s.add_argument(
        "--ray",
        nargs="?",
        const=True,
        default=None,
        metavar="ADDRESS",
        help="one Ray task per unit, on the cluster at ADDRESS (default: RAY_ADDRESS or a local "
        'instance); needs pip install "polars-curate[ray]"',
    )
    s.add_argument("--ray-cpus", type=int, default=1, help="CPUs per Ray task (1)")
    s.add_argument("--no-progress", action="store_true", help="no progress output")

    c = sub.add_parser(
        "select",
        help="apply rules and write a DataComp subset (.npy)",
        description="Keep, rule after rule, rows of the start set (the pool, or its rows in "
        "--base): SCORE:F keeps floor(F * start) rows by highest score (ties: the smaller uid); "
        "SCORE>=V (>, <=, <) keeps rows past a threshold. SCORE is a score of the directory or "
        "an external score file PATH.parquet[#COLUMN] (uid + score, e.g. DFN's). Also writes "
        "OUT's stem + .select.json, which `report` reads.",
    )
    c.add_argument("scores_dir", help="directory written by `score`")
    c.add_argument("--out", required=True, help="subset file to write (.npy)")
    c.add_argument("--base", help="start from this uid subset (.npy), e.g. DFN's")
    c.add_argument("--keep", action="append", required=True, metavar="RULE")

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
        type=_positive_int,
        default=5,
        metavar="N",
        help="captions shown on each side of every cut (default: 5)",
    )
    return p


def _one_line(e: BaseException) -> str:
    text = str(e).strip()
    first = text.splitlines()[0] if text else ""
    if isinstance(e, (KeyError,)) and first.startswith(("'", '"')):
        first = first[1:-1]
    return first or type(e).__name__


#: How the plugin reports a call stopped by Ctrl-C (Python raises KeyboardInterrupt next).
INTERRUPTED = "interrupted (KeyboardInterrupt)"


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


def _run(args: argparse.Namespace) -> int:
    try:
        if args.command == "score":
            from polars_curate.pipeline import score_pool

            run = score_pool(
                args.pool,
                args.out,
                target=args.target,
                scores=[x.strip() for x in args.scores.split(",") if x.strip()],
                model=args.model,
                normsim_model=args.normsim_model,
                image_col=args.image_col,
                text_col=args.text_col,
                normsim_col=args.normsim_col,
                batch_size=args.batch_size,
                num_batches=args.num_batches,
                temperature=args.temperature,
                seed=args.seed,
                normalize=not args.no_normalize,
                unit_rows=args.unit_rows,
                progress=not args.no_progress,
                ray=args.ray,
                ray_cpus=args.ray_cpus,
            )
            print(run)
        elif args.command == "select":
            from polars_curate.selection import select

            select(args.scores_dir, args.out, args.keep, base=args.base)
        else:
            from polars_curate.report import write_report

            out = write_report(
                args.scores_dir,
                args.out,
                base=args.base,
                subset=args.subset,
                pool=args.pool,
                examples=args.examples,
            )
            print(f"wrote {out}")
    except Exception as e:  # every error: one line naming its source, never a traceback
        if INTERRUPTED in str(e):
            raise KeyboardInterrupt from None
        print(f"polars-curate {args.command}: error: {_one_line(e)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
