"""Helpers shared by the tests: data in the shapes the plugin sees, tolerances, and score
directories written the way `score` writes one."""

from __future__ import annotations

import base64
import json
import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import polars as pl

from polars_curate import scoredir
from polars_curate.uids import uid_key_exprs

DTYPES = {
    "f16": (np.float16, pl.Float16),
    "f32": (np.float32, pl.Float32),
    "f64": (np.float64, pl.Float64),
}


def unit(a: np.ndarray) -> np.ndarray:
    return a / np.linalg.norm(a, axis=1, keepdims=True)


def clip_like(n: int, d: int, seed: int, clusters: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """CLIP-like pairs: unit vectors clustered on the sphere; matched pairs have cosine about
    0.3, other pairs of the same cluster about 0.15, of different clusters about 0."""
    rng = np.random.default_rng(seed)
    centers = unit(rng.normal(size=(clusters, d)))
    label = rng.integers(0, clusters, n)
    noise = lambda: rng.normal(size=(n, d)) / np.sqrt(d)  # noqa: E731
    img = unit(0.55 * centers[label] + 0.8 * noise())
    txt = unit(0.2 * img + 0.15 * centers[label] + 0.9 * noise())
    return img, txt


def random_pairs(n: int, d: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return rng.normal(size=(n, d)), rng.normal(size=(n, d))


def as_dtype(a: np.ndarray, dtype: str) -> np.ndarray:
    """The values the plugin will see: ``a`` stored as ``dtype`` by Polars (exactly as
    ``series``/``frame`` store it), read back as float64."""
    if a.shape[0] == 0:
        return a.astype(np.float64)
    return series("x", a, dtype).cast(pl.Array(pl.Float64, a.shape[1])).to_numpy()


def series(name: str, a: np.ndarray, dtype: str = "f32") -> pl.Series:
    d = a.shape[1]
    return pl.Series(name, a.astype(np.float64)).cast(pl.Array(DTYPES[dtype][1], d))


def frame(dtype: str = "f32", **cols: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame([series(k, v, dtype) for k, v in cols.items()])


def assert_rel(
    ours: np.ndarray, ref: np.ndarray, scale: np.ndarray | None = None, tol: float = 1e-4
):
    """|ours - ref| <= tol * scale (scale defaults to |ref|, floored at 1e-6)."""
    ours = np.asarray(ours, np.float64)
    ref = np.asarray(ref, np.float64)
    scale = np.abs(ref) if scale is None else np.asarray(scale)
    scale = np.maximum(scale, 1e-6)
    err = np.abs(ours - ref) / scale
    worst = int(np.argmax(err)) if err.size else 0
    assert err.size == 0 or err.max() <= tol, (
        f"max relative error {err.max():.3g} at row {worst}: {ours[worst]} vs {ref[worst]}"
    )


def fake_scores(d, uids, **cols):
    """A complete score directory holding the given columns (one unit per chunk of 5 rows),
    written the way `score` writes one, for selection tests."""
    d.mkdir()
    (d / scoredir.DIR_RECORD).write_text('{"format": 1, "unit_rows": 5}')
    (d / "_scores").mkdir()
    for c in cols:
        (d / "_scores" / f"{c}.json").write_text(
            f'{{"score": "{c}", "column": "{c}", "params": {{}}, "digest": "d-{c}"}}'
        )
    units = []
    for i in range(0, len(uids), 5):
        name = f"{i // 5:02d}"
        df = pl.DataFrame({"uid": uids[i : i + 5]}).with_columns(uid_key_exprs("uid"))
        df = df.with_columns(pl.Series(c, v[i : i + 5], dtype=pl.Float32) for c, v in cols.items())
        meta = {
            "unit": name,
            "fingerprint": "f",
            "start": 0,
            "rows": df.height,
            "scores": {c: f"d-{c}" for c in cols},
        }
        df.write_parquet(d / f"{name}.parquet", metadata={"polars_curate": json.dumps(meta)})
        units.append({"unit": name, "fingerprint": "f", "start": 0, "rows": df.height})
    (d / "_runs").mkdir()
    (d / "_runs" / "r.json").write_text(json.dumps({"scores": list(cols), "units": units}))
    return d


def figures(page: str) -> dict[str, tuple[list[dict], dict]]:
    """``div id -> (traces, layout)`` of every Plotly figure in the page."""
    out = {}
    dec = json.JSONDecoder()
    for m in re.finditer(r'Plotly\.newPlot\(\s*"(fig-[^"]+)",\s*', page):
        data, end = dec.raw_decode(page, m.end())
        rest = page[end:].lstrip()[1:].lstrip()
        layout, _ = dec.raw_decode(rest)
        out[m.group(1)] = (data, layout)
    return out


def values(v) -> np.ndarray:
    """A Plotly array: a list, or the typed-array form ``{"dtype", "bdata", "shape"}``."""
    if isinstance(v, dict) and "bdata" in v:
        a = np.frombuffer(base64.b64decode(v["bdata"]), dtype=np.dtype(v["dtype"]))
        return a.reshape([int(s) for s in str(v["shape"]).split(",")]) if "shape" in v else a
    return np.asarray(v)


def start_moto() -> tuple[subprocess.Popen, str]:
    """``moto_server`` (an S3 API server, in memory) on a free loopback port: the process and
    its URL. The caller stops it (only the process it started)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    exe = Path(sys.executable).with_name("moto_server")
    proc = subprocess.Popen(
        [str(exe), "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            urllib.request.urlopen(f"{url}/moto-api/", timeout=1)
            return proc, url
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("moto_server did not start") from None
            time.sleep(0.1)
