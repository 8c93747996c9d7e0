"""DataComp formats: uid subset files and shard pairs, built here in the exact on-disk format."""

import numpy as np
import polars as pl
import pytest

from polars_curate import io


def random_uids(n: int, seed: int = 0) -> list[str]:
    rng = np.random.default_rng(seed)
    words = rng.integers(0, 2**64, size=(n, 2), dtype=np.uint64)
    return [f"{a:016x}{b:016x}" for a, b in words]


def test_uid_round_trip_is_exact_and_in_datacomp_format(tmp_path):
    uids = [*random_uids(1000), "ffffffffffffffffffffffffffffffff", "0" * 32]
    uids += uids[:10]  # duplicates
    path = tmp_path / "subset.npy"
    assert io.write_uids(pl.Series("uid", uids), path) == 1002
    arr = np.load(path)
    assert arr.dtype == np.dtype("u8,u8")
    # Exactly the hand-computed keys, lexicographically sorted, no duplicates.
    want = sorted({(int(u[:16], 16), int(u[16:], 16)) for u in uids})
    assert [tuple(map(int, r)) for r in arr] == want
    back = io.read_uids(path)
    assert back["uid"].to_list() == sorted(set(uids))
    assert back["uid_hi"].dtype == pl.UInt64
    assert [p for p in tmp_path.iterdir()] == [path]  # no temporary file left


def test_uppercase_input_and_frame_and_iterable(tmp_path):
    u = random_uids(5, seed=1)
    io.write_uids(
        pl.DataFrame({"uid": [x.upper() for x in u], "other": range(5)}), tmp_path / "a.npy"
    )
    io.write_uids(iter(u), tmp_path / "b.npy")
    assert np.array_equal(np.load(tmp_path / "a.npy"), np.load(tmp_path / "b.npy"))


@pytest.mark.parametrize("bad", ["abc", "g" * 32, "0" * 33, " " + "0" * 31, None])
def test_invalid_uids_are_rejected_with_the_value(tmp_path, bad):
    path = tmp_path / "s.npy"
    io.write_uids(pl.Series("uid", random_uids(3)), path)
    before = path.read_bytes()
    with pytest.raises(ValueError, match="invalid uid at row 1"):
        io.write_uids(pl.Series("uid", ["0" * 32, bad, "1" * 32], dtype=pl.String), path)
    assert path.read_bytes() == before  # untouched


def test_failed_write_leaves_the_old_file(tmp_path, monkeypatch):
    path = tmp_path / "s.npy"
    io.write_uids(pl.Series("uid", random_uids(3)), path)
    before = path.read_bytes()

    def boom(f, arr, allow_pickle):
        f.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(np, "save", boom)
    with pytest.raises(OSError, match="disk full"):
        io.write_uids(pl.Series("uid", random_uids(4)), path)
    assert path.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["s.npy"]


def test_read_uids_accepts_n_by_2_and_rejects_other_arrays(tmp_path):
    np.save(tmp_path / "a.npy", np.array([[1, 2], [3, 4]], dtype=np.uint64))
    assert io.read_uids(tmp_path / "a.npy")["uid"].to_list() == [
        "00000000000000010000000000000002",
        "00000000000000030000000000000004",
    ]
    np.save(tmp_path / "b.npy", np.zeros(3))
    with pytest.raises(ValueError, match="expected a DataComp uid array"):
        io.read_uids(tmp_path / "b.npy")
    with pytest.raises(FileNotFoundError):
        io.read_uids(tmp_path / "missing.npy")


def write_shard(directory, name, n, d=8, seed=0, keys=("l14_img", "l14_txt")):
    rng = np.random.default_rng(seed)
    uids = random_uids(n, seed)
    pl.DataFrame(
        {
            "uid": uids,
            "text": [f"caption {i}" for i in range(n)],
            "clip_l14_similarity_score": rng.random(n).astype(np.float32),
        }
    ).write_parquet(directory / f"{name}.parquet")
    arrays = {k: rng.normal(size=(n, d)).astype(np.float16) for k in keys}
    np.savez(directory / f"{name}.npz", **arrays)
    return uids, arrays


def test_read_datacomp_aligns_rows_across_shards(tmp_path):
    a_uids, a = write_shard(tmp_path, "00000000", 5, seed=1)
    b_uids, b = write_shard(tmp_path, "00000001", 7, seed=2)
    df = io.read_datacomp(tmp_path)
    assert df.height == 12
    assert df["uid"].to_list() == a_uids + b_uids
    assert df.schema["l14_img"] == pl.Array(pl.Float16, 8)
    emb = df["l14_txt"].cast(pl.Array(pl.Float32, 8)).to_numpy()
    assert np.array_equal(emb, np.concatenate([a["l14_txt"], b["l14_txt"]]).astype(np.float32))
    assert df["shard"].to_list() == ["00000000"] * 5 + ["00000001"] * 7
    one = io.read_datacomp(tmp_path / "00000001.npz", keys=["l14_img"], shard_column=None)
    assert one.columns == ["uid", "text", "clip_l14_similarity_score", "l14_img"]
    assert io.read_datacomp(str(tmp_path / "0000000*.parquet")).height == 12


def test_read_datacomp_errors_name_the_file(tmp_path):
    write_shard(tmp_path, "a", 4)
    with pytest.raises(ValueError, match=r"a\.npz: no embedding column 'b32_img'"):
        io.read_datacomp(tmp_path, keys=["b32_img"])
    write_shard(tmp_path, "b", 4)
    (tmp_path / "b.parquet").unlink()
    with pytest.raises(FileNotFoundError, match=r"b\.parquet is missing"):
        io.read_datacomp(tmp_path)
    (tmp_path / "b.npz").unlink()
    np.savez(tmp_path / "a.npz", l14_img=np.zeros((3, 8), np.float16))
    with pytest.raises(
        ValueError, match=r"a\.npz: array 'l14_img' has 3 rows, but a\.parquet has 4"
    ):
        io.read_datacomp(tmp_path)
    (tmp_path / "c.npz").write_bytes(b"not a zip")
    pl.DataFrame({"uid": []}).write_parquet(tmp_path / "c.parquet")
    with pytest.raises(ValueError, match=r"c\.npz: not a readable npz file"):
        io.read_datacomp(tmp_path / "c.parquet")
    with pytest.raises(FileNotFoundError, match="no pool shards"):
        io.read_datacomp(tmp_path / "empty-dir-that-does-not-exist")


def test_scores_join_with_a_subset(tmp_path):
    """The DFN recipe (docs/methods.md#how-the-methods-combine): pool, subset, lazy query."""
    uids, _ = write_shard(tmp_path, "s", 50, d=16)
    io.write_uids(pl.Series("uid", uids[::2]), tmp_path / "dfn.npy")
    pool = io.read_datacomp(tmp_path)
    dfn = io.read_uids(tmp_path / "dfn.npy")
    kept = pool.lazy().filter(pl.col("uid").is_in(dfn["uid"].implode())).collect()
    assert sorted(kept["uid"].to_list()) == sorted(uids[::2])


@pytest.mark.parametrize("case", ["sorted", "shuffled", "duplicates", "empty", "one", "equal_hi"])
def test_sorted_distinct_keys_against_numpy(case):
    rng = np.random.default_rng(7)
    n = {"empty": 0, "one": 1}.get(case, 5000)
    hi = rng.integers(0, 50 if case == "equal_hi" else 2**63, n, dtype=np.uint64)
    lo = rng.integers(0, 2**64 - 1, n, dtype=np.uint64)
    if case == "duplicates":
        hi, lo = np.concatenate([hi, hi[:700]]), np.concatenate([lo, lo[:700]])
    if case == "sorted":
        pairs = sorted(set(zip(hi.tolist(), lo.tolist())))
        hi = np.array([p[0] for p in pairs], np.uint64)
        lo = np.array([p[1] for p in pairs], np.uint64)
    want = sorted(set(zip(hi.tolist(), lo.tolist())))
    got_hi, got_lo = io.sorted_distinct_keys(hi, lo)
    assert list(zip(got_hi.tolist(), got_lo.tolist())) == want


@pytest.mark.parametrize("n", [0, 1, 7, 5000])
@pytest.mark.parametrize("bits", [0, 1, 4])
def test_subset_written_by_key_parts_is_the_bytes_of_one_write(tmp_path, n, bits):
    from polars_curate.io import KeyFile, write_key_parts, write_keys
    from polars_curate.partitions import Partitions

    rng = np.random.default_rng(n + bits)
    hi = rng.integers(0, 2**64, n, dtype=np.uint64)
    lo = rng.integers(0, 2**64, n, dtype=np.uint64)
    hi[: n // 5], lo[: n // 5] = hi[n // 5 : 2 * (n // 5)], lo[n // 5 : 2 * (n // 5)]  # repeats
    write_keys(hi, lo, tmp_path / "one.npy")
    keys = pl.LazyFrame({"uid_hi": hi, "uid_lo": lo})
    written = write_key_parts(keys, tmp_path / "parts.npy", Partitions(bits))
    assert (tmp_path / "parts.npy").read_bytes() == (tmp_path / "one.npy").read_bytes()
    want = np.unique(np.stack([hi, lo], axis=1), axis=0)  # sorted distinct, by NumPy
    assert written == len(want)
    # Read back part by part, from the sorted file and from an unsorted copy of it.
    arr = np.empty(n, dtype="u8,u8")
    arr["f0"], arr["f1"] = hi, lo
    np.save(tmp_path / "unsorted.npy", arr)
    parts = Partitions(bits)
    for f in ("one.npy", "unsorted.npy"):
        kf = KeyFile(tmp_path / f)
        got = pl.concat([kf.part(parts, p) for p in parts])
        np.testing.assert_array_equal(got.to_numpy(), want)
