"""Nothing silently wrong, round 2: each class of input that could give exit 0 with a wrong
subset, destroy an input, hang, or fail without naming its source, tried for real."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from support import fake_scores

import polars_curate as pc
from polars_curate import io, selection
from polars_curate.atomic import HOST
from polars_curate.datasets import synthetic_pool
from polars_curate.pool import PoolError
from polars_curate.report import write_report
from polars_curate.scoredir import RecordError

CLI = [sys.executable, "-m", "polars_curate.cli"]


def uids(n: int, seed: int) -> list[str]:
    rng = np.random.default_rng(seed)
    return [f"{a:016x}{b:016x}" for a, b in rng.integers(0, 2**64, (n, 2), dtype=np.uint64)]


def cli(*argv: str) -> subprocess.CompletedProcess:
    return subprocess.run([*CLI, *map(str, argv)], capture_output=True, text=True, timeout=300)


def one_line_error(r: subprocess.CompletedProcess, *needles: str) -> str:
    assert r.returncode == 1, (r.returncode, r.stderr[-2000:])
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    for n in needles:
        assert n in lines[0], lines[0]
    return lines[0]


@pytest.fixture(scope="module")
def one_file(tmp_path_factory):
    """A pool of one Parquet file in row groups of 100: units of one big file share its
    fingerprint, so only their row ranges tell them apart."""
    root = tmp_path_factory.mktemp("one")
    paths = synthetic_pool(root, n=500, d=16, shards=1, layout="parquet", row_group_size=100)
    out = root / "scores"
    pc.score_pool(
        paths["pool"], out, scores="ncl,clip", batch_size=64, unit_rows=100, progress=False
    )
    return paths, out


def test_a_unit_swapped_for_another_unit_of_the_same_shard_is_refused(one_file, tmp_path):
    paths, scores = one_file
    d = tmp_path / "s"
    subprocess.run(["cp", "-r", str(scores), str(d)], check=True)
    a, b = d / "00000000.00001.parquet", d / "00000000.00003.parquet"
    tmp = d / "swap"
    a.rename(tmp)
    b.rename(a)
    tmp.rename(b)
    with pytest.raises(RecordError, match=r"00000000\.0000[13]\.parquet does not hold"):
        pc.scan_scores(d)
    one_line_error(cli("select", d, "--out", tmp_path / "x.npy", "--keep", "ncl:0.5"), "00001")
    assert not (tmp_path / "x.npy").exists()
    one_line_error(cli("report", d, "--out", tmp_path / "r.html"), "does not hold the data")
    # score's resume refuses it the same way, and a fresh directory has no such complaint.
    one_line_error(
        cli(
            "score",
            paths["pool"],
            "--out",
            d,
            "--scores",
            "ncl,clip",
            "--batch-size",
            "64",
            "--unit-rows",
            "100",
            "--no-progress",
        ),
        "holds scores of other data",
    )


@pytest.mark.parametrize("dtype", [pl.Int64, pl.UInt32, pl.Float64])
def test_integer_keys_must_be_unsigned_64_bit(tmp_path, dtype):
    u = uids(250, 1)
    d = fake_scores(tmp_path / "s", u, ncl=np.linspace(0, 1, 250))
    keys = pl.DataFrame({"uid": u}).with_columns(io.uid_key_exprs("uid")).drop("uid")
    ext = keys.with_columns(s=pl.Series(np.linspace(1, 0, 250)))
    assert (ext["uid_hi"] >= 2**63).sum() > 50  # keys a signed column would get wrong
    ext.with_columns(pl.col("uid_hi", "uid_lo").cast(dtype, strict=False)).write_parquet(
        tmp_path / "bad.parquet"
    )
    one_line_error(
        cli("select", d, "--out", tmp_path / "x.npy", "--keep", f"{tmp_path}/bad.parquet:0.5"),
        "bad.parquet",
        "'uid_hi' must be UInt64",
    )
    ext.write_parquet(tmp_path / "good.parquet")  # the documented form: joined exactly
    pc.select(d, tmp_path / "x.npy", f"{tmp_path}/good.parquet:0.5", log=lambda _: None)
    want = {x for x, v in zip(u, np.linspace(1, 0, 250)) if v >= 0.5 - 1e-12}
    assert set(io.read_uids(tmp_path / "x.npy")["uid"]) == {x for x in u[:125]} == want


def test_one_uid_rule_for_every_reader(tmp_path):
    # A sign is not a hex digit: score refuses it (it used to store it under another uid).
    paths = synthetic_pool(tmp_path / "p", n=300, d=16, shards=1, layout="parquet")
    shard = next((tmp_path / "p" / "pool").glob("*.parquet"))
    row7 = pl.int_range(pl.len()) == 7
    signed = pl.when(row7).then(pl.lit("+") + pl.col("uid").str.slice(1)).otherwise("uid")
    pl.read_parquet(shard).with_columns(uid=signed).write_parquet(shard)
    r = cli("score", paths["pool"], "--out", tmp_path / "s", "--scores", "clip", "--no-progress")
    one_line_error(r, str(shard), "invalid uid at row 7")
    with pytest.raises(ValueError, match="invalid uid at row 0"):
        io.write_uids(["+" + uids(1, 2)[0][1:]], tmp_path / "w.npy")
    # Upper-case hex is the same uid: selected, and its caption found by the report.
    shard2 = tmp_path / "q" / "pool"
    paths2 = synthetic_pool(tmp_path / "q", n=300, d=16, shards=1, layout="parquet")
    f2 = next(shard2.glob("*.parquet"))
    up = pl.read_parquet(f2).with_columns(pl.col("uid").str.to_uppercase())
    up.write_parquet(f2)
    pc.score_pool(paths2["pool"], tmp_path / "s2", scores="clip", progress=False)
    pc.select(tmp_path / "s2", tmp_path / "sub.npy", "clip:0.5", log=lambda _: None)
    assert len(io.read_uids(tmp_path / "sub.npy")) == 150
    page = write_report(
        tmp_path / "s2", tmp_path / "r.html", subset=tmp_path / "sub.npy", pool=paths2["pool"]
    ).read_text()
    top = up.with_columns(c=pl.Series(pc.scan_scores(tmp_path / "s2").collect()["clip"]))
    best = top.sort("c", descending=True)["text"][0]
    assert best in page


def test_a_subset_and_a_log_from_different_runs_are_refused(tmp_path, monkeypatch):
    u = uids(400, 3)
    d = fake_scores(tmp_path / "s", u, ncl=np.random.default_rng(0).random(400))
    out = tmp_path / "sub.npy"
    pc.select(d, out, ["ncl:0.5"], log=lambda _: None)
    log = json.loads(out.with_name("sub.select.json").read_text())
    assert log["subset_digest"] == io.file_digest(out)

    def fail(path, write):  # the log's write fails after the new subset is written
        if path.name.endswith(".select.json"):
            raise OSError("disk full")
        return real(path, write)

    real = selection.write_atomic
    monkeypatch.setattr(selection, "write_atomic", fail)
    with pytest.raises(OSError, match="disk full"):
        pc.select(d, out, ["ncl:0.2"], log=lambda _: None)
    monkeypatch.undo()
    assert len(io.read_uids(out)) == 80  # the new subset, beside the old log
    r = cli("report", d, "--out", tmp_path / "r.html", "--subset", out)
    one_line_error(r, "sub.select.json describes another subset than")
    assert not (tmp_path / "r.html").exists()


def _corrupt_member(npz: Path, key: str, row: int, width: int) -> None:
    """Flip bytes of row ``row`` inside the stored member ``key``."""
    with zipfile.ZipFile(npz) as z:
        info = z.getinfo(f"{key}.npy")
    with open(npz, "r+b") as f:
        f.seek(info.header_offset + 26)
        name_len, extra_len = np.frombuffer(f.read(4), "<u2")
        data = info.header_offset + 30 + int(name_len) + int(extra_len)
        at = data + 128 + row * width * 2  # the npy header is 128 bytes here
        f.seek(at)
        old = f.read(8)
        f.seek(at)
        f.write(bytes(b ^ 0x55 for b in old))


def test_a_corrupt_npz_is_never_scored_and_the_repaired_one_scores_everything(tmp_path):
    paths = synthetic_pool(tmp_path / "p", n=2000, d=16, shards=1)
    npz = next(paths["pool"].glob("*.npz"))
    good = npz.read_bytes()
    _corrupt_member(npz, "l14_img", 1500, 16)  # in the last of 4 units of 500 rows
    argv = [
        "score",
        paths["pool"],
        "--out",
        tmp_path / "s",
        "--scores",
        "ncl,clip",
        "--batch-size",
        "100",
        "--unit-rows",
        "500",
        "--no-progress",
    ]
    one_line_error(cli(*argv), npz.name, "corrupt")
    assert not list((tmp_path / "s").glob("*.parquet"))  # no unit scored from those bytes
    npz.write_bytes(good)  # repaired
    assert cli(*argv).returncode == 0
    fresh = tmp_path / "fresh"
    assert cli(*[a if a != tmp_path / "s" else fresh for a in argv]).returncode == 0
    for f in sorted(fresh.glob("*.parquet")):
        assert (tmp_path / "s" / f.name).read_bytes() == f.read_bytes()
    # A unit file written without the checksum check (an older version) is scored again.
    unit = tmp_path / "s" / "00000000.00000.parquet"
    meta = json.loads(pl.read_parquet_metadata(unit)["polars_curate"])
    meta.pop("checked")
    pl.read_parquet(unit).write_parquet(unit, metadata={"polars_curate": json.dumps(meta)})
    with pytest.raises(RecordError, match="before its npz checksums were verified"):
        pc.scan_scores(tmp_path / "s")
    assert "scored 1 " in cli(*argv).stdout


def test_the_reader_never_overwrites_a_column_of_the_pool(tmp_path):
    paths = synthetic_pool(tmp_path, n=300, d=16, shards=2, layout="parquet")
    with pytest.raises(PoolError, match="already has a column 'uid'"):
        pc.scan_pool(paths["pool"], shard_column="uid")
    for f in sorted(paths["pool"].glob("*.parquet")):  # the pool's own column
        pl.read_parquet(f).with_columns(shard=pl.lit("mine")).write_parquet(f)
    f = sorted(paths["pool"].glob("*.parquet"))[0]
    with pytest.raises(PoolError, match=f"{f.name}: the pool already has a column 'shard'"):
        pc.read_datacomp(paths["pool"])
    assert pc.read_datacomp(paths["pool"], shard_column="file")["shard"][0] == "mine"


def test_a_missing_npz_twin_is_named_whichever_shard_lacks_it(tmp_path):
    paths = synthetic_pool(tmp_path, n=300, d=16, shards=3)
    first = sorted(paths["pool"].glob("*.npz"))[0]
    first.unlink()
    with pytest.raises(FileNotFoundError, match=f"{first.name} is missing"):
        pc.scan_pool(paths["pool"])
    one_line_error(cli("score", paths["pool"], "--out", tmp_path / "s"), f"{first} is missing")


def test_repeated_uids_are_counted_as_they_are_written(tmp_path, capsys):
    u = uids(300, 4)
    keys = pl.DataFrame({"uid": u}).with_columns(io.uid_key_exprs("uid"))
    arr = np.empty(600, dtype="u8,u8")  # a base listing each uid twice
    arr["f0"] = np.tile(keys["uid_hi"].to_numpy(), 2)
    arr["f1"] = np.tile(keys["uid_lo"].to_numpy(), 2)
    np.save(tmp_path / "base.npy", arr)
    d = fake_scores(tmp_path / "s", u, ncl=np.random.default_rng(1).random(300))
    log = pc.select(d, tmp_path / "x.npy", ["ncl:0.5"], base=tmp_path / "base.npy")
    assert "start: 300 rows" in capsys.readouterr().out
    assert (log.start, log.kept, log.base_without_scores) == (300, 150, 0)
    # A pool holding uids twice (one sample in two files): rows are ranked, uids written once,
    # and the output says both counts.
    d2 = fake_scores(tmp_path / "s2", u[:100] + u[:100], ncl=np.random.default_rng(2).random(200))
    log = pc.select(d2, tmp_path / "y.npy", ["ncl:0.5"])
    said = capsys.readouterr().out
    assert log.kept_rows == 100 and log.kept == len(io.read_uids(tmp_path / "y.npy")) < 100
    assert f"wrote {log.kept} uids" in said and "from 100 rows" in said


def test_score_refuses_a_run_record_edited_after_it_was_written(tmp_path):
    paths = synthetic_pool(tmp_path, n=300, d=16, shards=2)
    argv = ["score", paths["pool"], "--out", tmp_path / "s", "--scores", "clip", "--no-progress"]
    assert cli(*argv).returncode == 0
    run = next((tmp_path / "s" / "_runs").glob("*.json"))
    rec = json.loads(run.read_text())
    rec["units"][0]["fingerprint"] = "0+0:edited"
    run.write_text(json.dumps(rec))
    one_line_error(cli(*argv), run.name, "units[0].fingerprint")
    one_line_error(
        cli("select", tmp_path / "s", "--out", tmp_path / "x", "--keep", "clip:0.5"),
        "does not hold the data its run recorded",
    )


def test_no_command_writes_over_one_of_its_inputs(tmp_path):
    u = uids(200, 5)
    d = fake_scores(tmp_path / "s", u, ncl=np.random.default_rng(3).random(200))
    io.write_uids(pl.Series(u[::2]), tmp_path / "base.npy")
    pl.DataFrame({"uid": u, "h": np.arange(200.0)}).write_parquet(tmp_path / "h.parquet")
    os.symlink(tmp_path / "base.npy", tmp_path / "link.npy")
    inputs = {
        p: p.read_bytes() for p in [tmp_path / "base.npy", tmp_path / "h.parquet", d / "00.parquet"]
    }
    for out in (
        tmp_path / "base.npy",
        tmp_path / "link.npy",
        tmp_path / "h.parquet",
        d / "00.parquet",
    ):
        r = cli(
            "select",
            d,
            "--out",
            out,
            "--base",
            tmp_path / "base.npy",
            "--keep",
            f"{tmp_path}/h.parquet:0.5",
        )
        one_line_error(r, "is one of the command's inputs")
    pc.select(d, tmp_path / "sub.npy", ["ncl:0.5"], log=lambda _: None)
    for out in (tmp_path / "sub.npy", tmp_path / "sub.select.json", d / "01.parquet"):
        one_line_error(
            cli("report", d, "--out", out, "--subset", tmp_path / "sub.npy"),
            "is one of the command's inputs",
        )
    assert all(p.read_bytes() == b for p, b in inputs.items())


def test_a_dead_ray_address_fails_at_once_and_writes_nothing(tmp_path):
    paths = synthetic_pool(tmp_path, n=200, d=16, shards=2)
    t0 = time.monotonic()
    r = cli("score", paths["pool"], "--out", tmp_path / "s", "--ray", "127.0.0.1:1")
    one_line_error(r, "cannot reach the Ray cluster at 127.0.0.1:1")
    assert time.monotonic() - t0 < 60 and not (tmp_path / "s").exists()


def test_errors_name_their_source(tmp_path):
    u = uids(100, 6)
    d = fake_scores(tmp_path / "s", u, ncl=np.random.default_rng(4).random(100))
    sel = ["select", d, "--out", tmp_path / "x.npy", "--keep"]
    dup = pl.DataFrame({"uid": [*u, u[17]], "h": np.arange(101.0)})
    dup.write_parquet(tmp_path / "dup.parquet")
    one_line_error(cli(*sel, f"{tmp_path}/dup.parquet:0.5"), "dup.parquet", u[17], "2 times")
    for dtype in (pl.Binary, pl.Categorical):
        pl.DataFrame({"uid": pl.Series(u).cast(dtype), "h": np.arange(100.0)}).write_parquet(
            tmp_path / "typed.parquet"
        )
        one_line_error(cli(*sel, f"{tmp_path}/typed.parquet:0.5"), "typed.parquet", "'uid'")
    np.savez(tmp_path / "base.npz", a=np.zeros(3))
    one_line_error(cli(*sel, "ncl:0.5", "--base", tmp_path / "base.npz"), "base.npz", ".npz")
    with pytest.raises(TypeError):
        pc.select(d, tmp_path / "x.npy", 7)  # not a rule; a single string is one rule
    assert pc.select(d, tmp_path / "x.npy", "ncl:0.5", log=lambda _: None).kept == 50


def test_invalid_utf8_captions_are_named_on_the_page(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    paths = synthetic_pool(tmp_path, n=300, d=16, shards=2, layout="parquet")
    f = sorted(paths["pool"].glob("*.parquet"))[1]
    t = pq.read_table(f)
    raw = pa.array([s.encode() for s in t["text"].to_pylist()], pa.binary())
    bad = [b"\xff\xfe broken" if i == 3 else v.as_py() for i, v in enumerate(raw)]
    raw = pa.array(bad, pa.binary())
    t = t.set_column(
        t.schema.get_field_index("text"),
        "text",
        pa.Array.from_buffers(pa.string(), len(raw), raw.buffers()),
    )
    pq.write_table(t, f)
    pc.score_pool(paths["pool"], tmp_path / "s", scores="clip", progress=False)
    page = write_report(tmp_path / "s", tmp_path / "r.html", pool=paths["pool"])
    assert f"Captions not shown: {f}: cannot read its captions" in page.read_text()


def test_pools_whose_files_disagree_are_refused_by_scan_and_score(tmp_path):
    paths = synthetic_pool(tmp_path, n=300, d=16, shards=2, layout="parquet")
    f = sorted(paths["pool"].glob("*.parquet"))[1]
    pl.read_parquet(f).with_columns(pl.col("l14_img").cast(pl.Array(pl.Float32, 16))).write_parquet(
        f
    )
    with pytest.raises(PoolError, match=f"{f.name}: column 'l14_img' is Array"):
        pc.scan_pool(paths["pool"])
    one_line_error(
        cli("score", paths["pool"], "--out", tmp_path / "s", "--scores", "clip"),
        f.name,
        "a pool's files must agree",
    )


@pytest.mark.parametrize(
    "array,what",
    [(np.zeros(300, np.float16), "1-D"), (np.zeros((300, 16), np.int64), "dtype int64")],
)
def test_an_npz_array_that_is_no_embedding_says_why(tmp_path, array, what):
    paths = synthetic_pool(tmp_path, n=300, d=16, shards=1)
    npz = next(paths["pool"].glob("*.npz"))
    arrays = dict(np.load(npz))
    arrays["l14_img"] = array
    np.savez(npz, **arrays)
    one_line_error(
        cli("score", paths["pool"], "--out", tmp_path / "s", "--scores", "clip"),
        npz.name,
        "array 'l14_img' is",
        what,
    )


def test_also(tmp_path):
    # A broken link among the pool's files is an error, not a silently smaller pool.
    paths = synthetic_pool(tmp_path / "p", n=300, d=16, shards=2, layout="parquet")
    os.symlink(tmp_path / "gone.parquet", paths["pool"] / "zz.parquet")
    with pytest.raises(PoolError, match=r"zz\.parquet: a broken link"):
        pc.scan_pool(paths["pool"])
    # A score file whose path holds '#'.
    u = uids(100, 7)
    d = fake_scores(tmp_path / "s", u, ncl=np.random.default_rng(5).random(100))
    (tmp_path / "run#3").mkdir()
    pl.DataFrame({"uid": u, "h": np.arange(100.0)}).write_parquet(tmp_path / "run#3" / "h.parquet")
    for rule in (f"{tmp_path}/run#3/h.parquet:0.3", f"{tmp_path}/run#3/h.parquet#h:0.3"):
        assert pc.select(d, tmp_path / "x.npy", rule, log=lambda _: None).kept == 30
    # Strict JSON, also for an infinite threshold, read back by the report.
    pc.select(d, tmp_path / "x.npy", ["ncl>=-inf", "ncl:0.5"], log=lambda _: None)
    text = (tmp_path / "x.select.json").read_text()
    assert "Infinity" not in text and json.loads(text)["steps"][0]["value"] == "-inf"
    write_report(d, tmp_path / "r.html", subset=tmp_path / "x.npy")
    # Staging directories of dead processes are removed at the next start.
    dead = tmp_path / f".select.{HOST}.999999999.abcdefgh.tmp"
    (dead / "sub").mkdir(parents=True)
    (dead / "sub" / "start-00000.parquet").write_bytes(b"x" * 1000)
    live = tmp_path / f".report.{HOST}.{os.getpid()}.abcdefgh.tmp"
    live.mkdir()
    pc.select(d, tmp_path / "x.npy", ["ncl:0.5"], log=lambda _: None)
    assert not dead.exists() and live.exists()


def test_a_huge_url_is_not_copied_into_the_page(tmp_path):
    paths = synthetic_pool(tmp_path, n=300, d=16, shards=1, layout="parquet")
    f = next(paths["pool"].glob("*.parquet"))
    huge = "https://example.com/" + "a" * 1_000_000
    pl.read_parquet(f).with_columns(url=pl.lit(huge)).write_parquet(f)
    pc.score_pool(paths["pool"], tmp_path / "s", scores="clip", progress=False)
    page = write_report(tmp_path / "s", tmp_path / "r.html", pool=paths["pool"])
    text = page.read_text()
    assert "a" * 5000 not in text and "https://example.com/aaa" in text
