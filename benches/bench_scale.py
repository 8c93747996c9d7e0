"""The job at DataComp scale on this machine: memory and time of `score` and `select`.

    make bench-scale                       # generates ~45 GB under bench-results/scale
    .venv/bin/python benches/bench_scale.py --rows 500000 --select-rows 16000000   # smaller

1. `score` on a generated pool of ``--rows`` rows x 768 float16 image and text embeddings,
   as Parquet files with embedding columns, as DataComp's .parquet + .npz pairs, and with all
   rows in one Parquet file; units of 100,000 rows (one shard or one row group each). Prints
   each run's time and peak RSS (measured in a fresh process: VmHWM), checks the three outputs
   are identical, and runs the first half of the pool to show memory does not grow with it.
2. The README's lazy query (scan_pool, a filter on a pool column, NormSim_inf, negCLIPLoss per
   shard, sink_parquet) on pools of ``--lazy-rows`` rows (250k and 1M: 4x) in Parquet shards of
   25,000 rows: time and peak RSS at both sizes (the larger must stay within 1.25x of the
   smaller's memory), and the same scores with ``.over("shard")`` on the smaller pool, which
   holds it all.
3. `select` with two fraction rules and a ``--base`` (20% of the pool plus 1% unknown uids) on
   each of ``--select-rows`` synthetic score rows (128M and 256M; units of 1M rows, written the
   way `score` writes them): time and peak RSS, and the subset compared with a brute-force sort
   on a slice that fits in memory.
4. `report` on each of those directories with the subset and its select log: time, peak RSS and
   the size of the HTML file.
5. Soft Cap Sampling (``--sample-rows``, default 128M candidates, ``total`` = as many draws,
   FLYT's batch of 100,000 and alpha 0.15) as the ``soft_cap_sample`` expression: time and peak
   RSS.
6. A pool in a bucket: ``--s3-rows`` rows (Parquet with arrays, units of 100,000) uploaded to an
   S3 API server started on loopback (``moto_server``, in memory: keep the pool small), then
   ``score --scores clip`` (reading-bound) from the bucket into the bucket and from local files
   to local files: rows/s of each, and the outputs compared byte for byte.

Nothing generated is committed; the data is left in ``--dir`` for reruns (``--clean`` removes
it).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import polars as pl

HERE = Path(__file__).resolve().parent
D = 768
UNIT = 100_000

PEAK = r"""
import json, sys, time
t0 = time.perf_counter()
exec(sys.argv[1])
hwm = int(open("/proc/self/status").read().split("VmHWM:")[1].split()[0])
print(json.dumps({"seconds": time.perf_counter() - t0, "peak_mib": hwm / 1024}))
"""


def measured(code: str) -> dict:
    """Run ``code`` in a fresh interpreter; its wall time and peak RSS."""
    r = subprocess.run([sys.executable, "-c", PEAK, code], capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(r.stderr[-3000:])
    return json.loads(r.stdout.strip().splitlines()[-1])


def cpu_name() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor()


def _uids(rng, n):
    from polars_curate.io import uids_from_keys

    return uids_from_keys(
        rng.integers(0, 2**64, n, dtype=np.uint64), rng.integers(0, 2**64, n, dtype=np.uint64)
    )


def make_pools(root: Path, rows: int) -> dict[str, Path]:
    """The same rows in three layouts (unit-size shards; one file with unit-size row groups)."""
    paths = {k: root / k for k in ("parquet", "npz", "one")}
    if all((p / "done").exists() for p in paths.values()):
        return paths
    for p in paths.values():
        shutil.rmtree(p, ignore_errors=True)
        p.mkdir(parents=True)
    rng = np.random.default_rng(0)
    emb = pl.Array(pl.Float16, D)
    one = None
    try:
        import pyarrow.parquet as pq

        for s, start in enumerate(range(0, rows, UNIT)):
            n = min(UNIT, rows - start)
            img = rng.standard_normal((n, D), dtype=np.float32).astype(np.float16)
            txt = (0.3 * img + rng.standard_normal((n, D), dtype=np.float32)).astype(np.float16)
            meta = pl.DataFrame(
                {"uid": _uids(rng, n), "text": [f"caption {start + i}" for i in range(n)]}
            )
            name = f"{s:08d}"
            full = meta.with_columns(
                pl.Series("l14_img", img, dtype=emb), pl.Series("l14_txt", txt, dtype=emb)
            )
            full.write_parquet(paths["parquet"] / f"{name}.parquet", statistics=False)
            meta.write_parquet(paths["npz"] / f"{name}.parquet")
            np.savez(paths["npz"] / f"{name}.npz", l14_img=img, l14_txt=txt)
            table = full.to_arrow()
            if one is None:
                one = pq.ParquetWriter(paths["one"] / "pool.parquet", table.schema)
            one.write_table(table, row_group_size=UNIT)
            print(f"  generated {start + n:,} / {rows:,} rows", flush=True)
    finally:
        if one is not None:
            one.close()
    for p in paths.values():
        (p / "done").write_text("")
    return paths


SCORE = """
import polars_curate as pc
pc.score_pool({pool!r}, {out!r}, scores=["ncl", "clip"], batch_size=4096, num_batches=1,
              unit_rows={unit}, progress=False)
"""


def bench_score(root: Path, rows: int) -> list[dict]:
    pools = make_pools(root / f"pool-{rows}", rows)
    out = []
    half = sorted(pools["parquet"].glob("*.parquet"))[: max(1, rows // UNIT // 2)]
    halfdir = root / f"pool-{rows}" / "parquet-half"
    if not halfdir.exists():
        halfdir.mkdir()
        for f in half:
            os.symlink(f, halfdir / f.name)
    cases = [
        ("Parquet + arrays, half the pool", halfdir),
        ("Parquet + arrays", pools["parquet"]),
        ("DataComp .parquet + .npz", pools["npz"]),
        ("one Parquet file", pools["one"]),
    ]
    outputs = {}
    for label, pool in cases:
        dest = root / "scores" / label.split()[0].lower().replace(".", "") / str(len(outputs))
        shutil.rmtree(dest, ignore_errors=True)
        m = measured(SCORE.format(pool=str(pool), out=str(dest), unit=UNIT))
        n = pl.scan_parquet(sorted(dest.glob("*.parquet"))).select(pl.len()).collect().item()
        m.update(case=label, rows=n, rows_per_s=n / m["seconds"])
        out.append(m)
        outputs[label] = dest
        print(
            f"  score {label}: {n:,} rows in {m['seconds']:.1f} s, "
            f"peak RSS {m['peak_mib']:.0f} MiB",
            flush=True,
        )
    frames = [
        pl.read_parquet(sorted(outputs[k].glob("*.parquet")))
        for k in ("Parquet + arrays", "DataComp .parquet + .npz", "one Parquet file")
    ]
    same = all(f.equals(frames[0]) for f in frames)
    print(f"  identical output in the three layouts: {same}")
    if not same:
        raise SystemExit("outputs differ between layouts")
    return out


SHARD = 25_000


def make_lazy_pool(root: Path, rows: int) -> Path:
    """Parquet shards of 25,000 rows: uid, a DFN-like score, 768-wide float16 embeddings."""
    pool = root / f"lazy-{rows}"
    if (pool / "done").exists():
        return pool
    shutil.rmtree(pool, ignore_errors=True)
    pool.mkdir(parents=True)
    rng = np.random.default_rng(2)
    emb = pl.Array(pl.Float16, D)
    for s, start in enumerate(range(0, rows, SHARD)):
        n = min(SHARD, rows - start)
        img = rng.standard_normal((n, D), dtype=np.float32).astype(np.float16)
        txt = (0.3 * img + rng.standard_normal((n, D), dtype=np.float32)).astype(np.float16)
        pl.DataFrame(
            {
                "uid": _uids(rng, n),
                "dfn": rng.random(n, dtype=np.float32),
                "l14_img": pl.Series(img, dtype=emb),
                "l14_txt": pl.Series(txt, dtype=emb),
            }
        ).write_parquet(pool / f"{s:08d}.parquet", statistics=False)
    (pool / "done").write_text("")
    return pool


LAZY = """
import numpy as np, polars as pl, polars_curate as pc
target = np.load({target!r})
ncl = pc.neg_clip_loss("l14_img", "l14_txt", batch_size=4096, num_batches=1)
lf = (pc.scan_pool({pool!r}).filter(pl.col("dfn") > 0.2)
      .with_columns(ns=pc.normsim("l14_img", target, p="inf")))
if {over!r}:
    lf = lf.select("shard", "uid", "ns", ncl=ncl.over("shard"))
else:
    lf = lf.pipe(pc.per_shard, "uid", "ns", ncl=ncl)
lf.sink_parquet({out!r}, row_group_size=262_144)
"""


def bench_lazy(root: Path, sizes: list[int]) -> list[dict]:
    target = root / "lazy-target.npy"  # one target for every run
    if not target.exists():
        rng = np.random.default_rng(3)
        np.save(target, rng.standard_normal((1000, D), dtype=np.float32))
    out = []
    files = {}
    for rows, over in [*((r, False) for r in sizes), (sizes[0], True)]:
        pool = make_lazy_pool(root, rows)
        dest = root / f"lazy-{rows}-{'over' if over else 'per_shard'}.parquet"
        code = LAZY.format(
            target=str(root / "lazy-target.npy"), pool=str(pool), over=over, out=str(dest)
        )
        m = measured(code)
        n = pl.scan_parquet(dest).select(pl.len()).collect().item()
        form = '.over("shard")' if over else "per_shard"
        m.update(rows=rows, scored=n, form=form)
        out.append(m)
        files[(rows, over)] = dest
        print(
            f"  {form} on {rows:,} rows ({n:,} after the filter): {m['seconds']:.1f} s, "
            f"peak RSS {m['peak_mib']:.0f} MiB",
            flush=True,
        )
    same = pl.read_parquet(files[(sizes[0], True)]).equals(
        pl.read_parquet(files[(sizes[0], False)])
    )
    ratio = out[len(sizes) - 1]["peak_mib"] / out[0]["peak_mib"]
    print(
        f"  per_shard equals .over: {same}; memory at {sizes[-1]:,} rows / at {sizes[0]:,}: "
        f"{ratio:.2f} (bound 1.25)"
    )
    if not same or ratio > 1.25:
        raise SystemExit("the lazy query differs from .over or its memory grows with the pool")
    return out


def make_scores(root: Path, rows: int, per_unit: int = 1_000_000) -> tuple[Path, Path]:
    """A complete score directory of `rows` synthetic rows, as `score` writes one, and a base."""
    from polars_curate import scoredir
    from polars_curate.io import uid_key_exprs, write_keys

    d = root / f"scores-{rows}"
    base = root / f"base-{rows}.npy"
    if (d / "done").exists() and base.exists():
        return d, base
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    rng = np.random.default_rng(1)
    (d / scoredir.DIR_RECORD).write_text(json.dumps({"format": 1, "unit_rows": per_unit}))
    (d / "_scores").mkdir()
    for c in ("ncl", "normsim_inf"):
        (d / "_scores" / f"{c}.json").write_text(
            json.dumps({"score": c, "column": c, "params": {}, "digest": f"bench-{c}"})
        )
    units, base_hi, base_lo = [], [], []
    for i, start in enumerate(range(0, rows, per_unit)):
        n = min(per_unit, rows - start)
        df = pl.DataFrame({"uid": _uids(rng, n)}).with_columns(uid_key_exprs("uid"))
        # Scores shaped like negCLIPLoss (negative, ties at float32 resolution) and NormSim.
        df = df.with_columns(
            ncl=pl.Series(-np.abs(rng.normal(0.1, 0.05, n)).astype(np.float32)),
            normsim_inf=pl.Series(rng.beta(2, 5, n).astype(np.float32)),
        )
        meta = {
            "unit": f"{i:05d}",
            "fingerprint": "bench",
            "start": 0,
            "rows": n,
            "scores": {"ncl": "bench-ncl", "normsim_inf": "bench-normsim_inf"},
        }
        df.write_parquet(d / f"{i:05d}.parquet", metadata={"polars_curate": json.dumps(meta)})
        units.append({"unit": f"{i:05d}", "fingerprint": "bench", "start": 0, "rows": n})
        pick = rng.random(n) < 0.2
        base_hi.append(df["uid_hi"].to_numpy()[pick])
        base_lo.append(df["uid_lo"].to_numpy()[pick])
        if i % 16 == 15:
            print(f"  generated {start + n:,} / {rows:,} score rows", flush=True)
    (d / "_runs").mkdir()
    (d / "_runs" / "bench.json").write_text(
        json.dumps({"scores": ["ncl", "normsim_inf"], "units": units})
    )
    extra = rows // 100  # uids the pool does not have
    hi = np.concatenate([*base_hi, rng.integers(0, 2**64, extra, dtype=np.uint64)])
    lo = np.concatenate([*base_lo, rng.integers(0, 2**64, extra, dtype=np.uint64)])
    write_keys(hi, lo, base)
    (d / "done").write_text("")
    return d, base


SELECT = """
import polars_curate as pc
pc.select({scores!r}, {out!r}, ["ncl:0.9", "normsim-inf:0.7"], base={base!r}, log=lambda s: None)
"""


def brute_force_slice(scores: Path, base: Path, units: int, out: Path) -> bool:
    """`select` on the first `units` units equals a sort of everything in memory."""
    import polars_curate as pc
    from polars_curate import scoredir

    sub = scores.parent / f"{scores.name}-slice"
    shutil.rmtree(sub, ignore_errors=True)
    sub.mkdir()
    for f in [scoredir.DIR_RECORD, "_scores"]:
        src = scores / f
        (shutil.copytree if src.is_dir() else shutil.copy)(src, sub / f)
    run = json.loads((scores / "_runs" / "bench.json").read_text())
    run["units"] = run["units"][:units]
    (sub / "_runs").mkdir()
    (sub / "_runs" / "bench.json").write_text(json.dumps(run))
    for u in run["units"]:
        os.symlink(scores / f"{u['unit']}.parquet", sub / f"{u['unit']}.parquet")
    pc.select(sub, out, ["ncl:0.9", "normsim-inf:0.7"], base=base, log=lambda s: None)
    got = pc.read_uids(out).select("uid_hi", "uid_lo")
    df = pl.read_parquet(
        sorted(sub.glob("*.parquet")), columns=["uid_hi", "uid_lo", "ncl", "normsim_inf"]
    )
    df = df.join(pc.read_uids(base).select("uid_hi", "uid_lo"), on=["uid_hi", "uid_lo"], how="semi")
    start = df.height
    for col, num, den in (("ncl", 9, 10), ("normsim_inf", 7, 10)):
        df = df.sort([col, "uid_hi", "uid_lo"], descending=[True, False, False]).head(
            start * num // den
        )
    want = df.select("uid_hi", "uid_lo").sort("uid_hi", "uid_lo")
    return got.equals(want)


def bench_select(root: Path, rows: int) -> dict:
    scores, base = make_scores(root, rows)
    out = root / f"subset-{rows}.npy"
    m = measured(SELECT.format(scores=str(scores), out=str(out), base=str(base)))
    log = json.loads(out.with_name(f"subset-{rows}.select.json").read_text())
    m.update(rows=rows, kept=log["kept"], start=log["start"])
    print(
        f"  select on {rows:,} rows (start {log['start']:,}): {m['seconds']:.1f} s, peak RSS "
        f"{m['peak_mib']:.0f} MiB, kept {log['kept']:,}",
        flush=True,
    )
    ok = brute_force_slice(scores, base, 4, root / "slice.npy")
    print(f"  the same subset as a brute-force sort on 4M rows: {ok}")
    if not ok:
        raise SystemExit("select differs from the brute-force sort")
    m["brute_force_equal"] = ok
    return m


REPORT = """
from polars_curate.report import write_report
write_report({scores!r}, {out!r}, subset={subset!r})
"""


def bench_report(root: Path, rows: int) -> dict:
    """`report` with the select log of `bench_select` (base, two rules) on the same directory."""
    scores, subset = root / f"scores-{rows}", root / f"subset-{rows}.npy"
    if not subset.is_file():
        raise SystemExit("run the select step first (it writes the subset the report reads)")
    out = root / f"report-{rows}.html"
    m = measured(REPORT.format(scores=str(scores), out=str(out), subset=str(subset)))
    m.update(rows=rows, html_mib=out.stat().st_size / 2**20)
    print(
        f"  report on {rows:,} rows: {m['seconds']:.1f} s, peak RSS {m['peak_mib']:.0f} MiB, "
        f"{m['html_mib']:.1f} MiB of HTML",
        flush=True,
    )
    return m


SAMPLE = """
import numpy as np, polars as pl, polars_curate as pc
s = pl.Series("s", np.random.default_rng(0).standard_normal({rows}, dtype=np.float32))
counts = pl.DataFrame([s]).select(pc.soft_cap_sample("s", {rows}))["s"]
assert counts.sum() == {rows}
"""


def bench_sample(rows: int) -> dict:
    """Soft Cap Sampling of ``rows`` draws from ``rows`` candidates (FLYT's defaults)."""
    m = measured(SAMPLE.format(rows=rows))
    m.update(rows=rows)
    print(
        f"  soft-cap {rows:,} draws from {rows:,} rows: {m['seconds']:.1f} s, "
        f"peak RSS {m['peak_mib']:.0f} MiB",
        flush=True,
    )
    return m


S3_SCORE = """
import polars_curate as pc
pc.score_pool({pool!r}, {out!r}, scores=["clip"], unit_rows={unit}, progress=False)
"""


def bench_s3(root: Path, rows: int) -> list[dict]:
    """score --scores clip from a bucket and from local files: rows/s."""
    import urllib.request

    from polars_curate.storage import location

    pool = make_pools(root / f"pool-{rows}", rows)["parquet"]
    sys.path.insert(0, str(HERE.parent / "tests"))
    from support import start_moto  # the tests' server helper

    proc, url = start_moto()
    env = {
        "AWS_ACCESS_KEY_ID": "bench",
        "AWS_SECRET_ACCESS_KEY": "bench",
        "AWS_REGION": "us-east-1",
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_ENDPOINT_URL": url,
    }
    os.environ.update(env)
    out = []
    try:
        urllib.request.urlopen(urllib.request.Request(f"{url}/bench", method="PUT"))
        for f in sorted(pool.glob("*.parquet")):
            location(f"s3://bench/pool/{f.name}").put(f.read_bytes())
        local = root / f"s3-local-{rows}"
        shutil.rmtree(local, ignore_errors=True)
        cases = [
            ("local files", str(pool), str(local)),
            ("bucket", "s3://bench/pool", "s3://bench/s"),
        ]
        for label, src, dest in cases:
            m = measured(S3_SCORE.format(pool=src, out=dest, unit=UNIT))
            m.update(case=label, rows=rows, rows_per_s=rows / m["seconds"])
            out.append(m)
            print(
                f"  score --scores clip, {label}: {rows:,} rows in {m['seconds']:.1f} s "
                f"({m['rows_per_s']:,.0f} rows/s), peak RSS {m['peak_mib']:.0f} MiB",
                flush=True,
            )
        remote = location("s3://bench/s")
        same = all(
            (remote / f.name).read_bytes() == f.read_bytes()
            for f in sorted(local.glob("*.parquet"))
        )
        print(f"  the same score files from the bucket as from local files: {same}")
        if not same:
            raise SystemExit("the bucket's score files differ from the local ones")
    finally:
        proc.terminate()
        proc.wait(10)
        for k in env:
            os.environ.pop(k, None)
    return out


def _sizes(text: str) -> list[int]:
    return [int(x) for x in text.split(",") if x.strip()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", default=str(HERE.parent / "bench-results" / "scale"))
    ap.add_argument("--rows", type=int, default=2_000_000, help="rows of the scored pool")
    ap.add_argument("--lazy-rows", type=_sizes, default=[250_000, 1_000_000])
    ap.add_argument("--select-rows", type=_sizes, default=[128_000_000, 256_000_000])
    ap.add_argument("--sample-rows", type=int, default=128_000_000, help="SCS candidates")
    ap.add_argument("--s3-rows", type=int, default=200_000, help="rows of the pool in a bucket")
    steps = ["score", "lazy", "select", "report", "sample", "s3"]
    ap.add_argument("--only", choices=steps, action="append")
    ap.add_argument("--clean", action="store_true", help="remove the generated data afterwards")
    args = ap.parse_args()
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    print(f"CPU: {cpu_name()}, {os.cpu_count()} cores; polars {pl.__version__}")
    results: dict = {"cpu": cpu_name()}
    want = set(args.only or steps)
    if "score" in want:
        print(f"score: {args.rows:,} rows x {D} float16 image + text, units of {UNIT:,} rows")
        results["score"] = bench_score(root, args.rows)
    if "lazy" in want:
        print(f"the README's lazy query: {args.lazy_rows} rows, shards of {SHARD:,}, B = 4096")
        results["lazy"] = bench_lazy(root, args.lazy_rows)
    for rows in args.select_rows:
        if "select" in want:
            print(
                f"select: {rows:,} score rows, base 20% of them + 1% unknown, "
                "rules ncl:0.9 then normsim-inf:0.7"
            )
            results[f"select-{rows}"] = bench_select(root, rows)
        if "report" in want:
            print(f"report: the select step's subset and log on {rows:,} score rows")
            results[f"report-{rows}"] = bench_report(root, rows)
    if "sample" in want:
        print(f"soft-cap sampling: {args.sample_rows:,} candidates, batch 100,000, alpha 0.15")
        results["sample"] = bench_sample(args.sample_rows)
    if "s3" in want:
        print(f"a pool in a bucket (moto_server on loopback): {args.s3_rows:,} rows")
        results["s3"] = bench_s3(root, args.s3_rows)
    (root / "results.json").write_text(json.dumps(results, indent=1))
    if args.clean:
        shutil.rmtree(root)


if __name__ == "__main__":
    main()
