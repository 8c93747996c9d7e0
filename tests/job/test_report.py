"""The HTML report: its figures hold exactly what the score files and the select log say
(checked against NumPy on the score files, not through the report's code), and the demo report
loads in a real browser (headless Chromium) with every figure drawn and no errors."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys
from html import escape, unescape
from pathlib import Path

import numpy as np
import polars as pl
import pytest
from support import figures, values

import polars_curate as pc
from polars_curate.datasets import synthetic_pool
from polars_curate.report import BINS, GRID, write_report

ROOT = Path(__file__).resolve().parents[2]
OPS = {">=": np.greater_equal, ">": np.greater, "<=": np.less_equal, "<": np.less}


def bins(x: np.ndarray, lo: float, hi: float, n: int) -> np.ndarray:
    """The bin of each value: equal-width bins over [lo, hi], the maximum in the last."""
    return np.clip(np.floor((x - lo) / ((hi - lo) / n)), 0, n - 1).astype(int)


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("report")
    paths = synthetic_pool(tmp, n=3000, d=32, shards=3)
    pc.score_pool(
        paths["pool"],
        tmp / "s",
        scores=["ncl", "clip", "normsim-inf"],
        target=paths["target"],
        batch_size=512,
        progress=False,
    )
    rules = ["ncl:0.5", "normsim-inf:0.3", "clip>=0.05"]
    pc.select(tmp / "s", tmp / "sub.npy", rules, base=paths["dfn"], log=lambda _: None)
    out = write_report(
        tmp / "s", tmp / "r.html", subset=tmp / "sub.npy", pool=paths["pool"], examples=4
    )
    scores = pl.read_parquet(sorted((tmp / "s").glob("*.parquet")))
    log = json.loads((tmp / "sub.select.json").read_text())
    return {
        "page": out.read_text(),
        "scores": scores,
        "log": log,
        "paths": paths,
        "tmp": tmp,
        "rules": rules,
    }


def test_histograms_count_every_row_split_by_the_subset_with_each_cut(run):
    figs, df = figures(run["page"]), run["scores"]
    sub = set(pc.read_uids(run["tmp"] / "sub.npy")["uid"].to_list())
    kept = df["uid"].is_in(list(sub)).to_numpy()
    for col in ("ncl", "clip", "normsim_inf"):
        x = df[col].cast(pl.Float64).to_numpy()
        b = bins(x, x.min(), x.max(), BINS)
        traces, layout = figs[f"fig-hist-{col}"]
        assert [t["name"] for t in traces] == ["kept", "dropped"]
        np.testing.assert_array_equal(values(traces[0]["y"]), np.bincount(b[kept], minlength=BINS))
        np.testing.assert_array_equal(values(traces[1]["y"]), np.bincount(b[~kept], minlength=BINS))
        assert layout["xaxis"]["title"]["text"].startswith(col)
        assert layout["yaxis"]["title"]["text"] == "rows"
        # One dashed line per rule on this score, at the logged cut, labelled with its value.
        steps = [s for s in run["log"]["steps"] if s["score"] == col]
        assert [sh["x0"] for sh in layout.get("shapes", [])] == [s["value"] for s in steps]
        labels = [unescape(a["text"]) for a in layout.get("annotations", [])]
        assert all(any(s["rule"] in t for t in labels) for s in steps)


def test_the_cuts_are_where_the_log_says_and_the_funnel_counts_the_log(run):
    df, log = run["scores"], run["log"]
    ncl = df["ncl"].cast(pl.Float64).to_numpy()
    base = set(pc.read_uids(run["paths"]["dfn"])["uid"].to_list())
    in_base = df["uid"].is_in(list(base)).to_numpy()
    k = log["steps"][0]["k"]
    assert k == log["start"] // 2 and log["start"] == in_base.sum()
    # the k-th highest ncl of the base is the first rule's cut
    assert np.sort(ncl[in_base])[::-1][k - 1] == log["steps"][0]["value"]
    traces, _ = figures(run["page"])["fig-rules"]
    assert list(values(traces[0]["x"])) == [log["start"], *[s["kept"] for s in log["steps"]]]
    for rule in run["rules"]:
        assert escape(rule) in run["page"]


def test_overlap_bars_count_rows_in_exactly_each_combination(run):
    df, log = run["scores"], run["log"]
    uid = df["uid"].to_list()
    base = set(pc.read_uids(run["paths"]["dfn"])["uid"].to_list())
    sub = set(pc.read_uids(run["tmp"] / "sub.npy")["uid"].to_list())
    sets = [np.array([u in base for u in uid]), np.array([u in sub for u in uid])]
    for s in log["steps"]:  # each rule alone, from its logged cut (ties: the smaller uid)
        x = df[s["score"]].cast(pl.Float64).to_numpy()
        if s["kind"] == "threshold":
            sets.append(OPS[s["op"]](x, s["value"]))
        else:
            cut = f"{s['cut_uid_hi']:016x}{s['cut_uid_lo']:016x}"
            sets.append((x > s["value"]) | ((x == s["value"]) & np.array([u <= cut for u in uid])))
    want: dict[tuple[bool, ...], int] = {}
    for row in zip(*sets):
        if any(row):
            want[tuple(bool(v) for v in row)] = want.get(tuple(bool(v) for v in row), 0) + 1
    traces, layout = figures(run["page"])["fig-overlap"]
    bars, dots = traces[0], traces[1:]
    assert len(dots) == len(sets)
    got = {}
    for i, n in enumerate(values(bars["y"])):
        got[tuple(d["marker"]["color"][i] == "#222" for d in dots)] = int(n)
    assert got == want
    assert values(bars["y"]).tolist() == sorted(values(bars["y"]).tolist(), reverse=True)
    names = layout["yaxis2"]["ticktext"]
    assert names[0].startswith("base (") and names[1].startswith("subset (")
    assert [f"{int(s.sum()):,}" in n for s, n in zip(sets, names)] == [True] * len(sets)


def test_density_counts_kept_and_dropped_rows_in_a_grid(run):
    df = run["scores"]
    sub = set(pc.read_uids(run["tmp"] / "sub.npy")["uid"].to_list())
    kept = df["uid"].is_in(list(sub)).to_numpy()
    x = df["clip"].cast(pl.Float64).to_numpy()
    y = df["ncl"].cast(pl.Float64).to_numpy()
    bx, by = bins(x, x.min(), x.max(), GRID), bins(y, y.min(), y.max(), GRID)
    traces, _ = figures(run["page"])["fig-density"]
    for t, mask in zip(traces, [kept, ~kept]):
        z = np.zeros((GRID, GRID))
        np.add.at(z, (by[mask], bx[mask]), 1)
        np.testing.assert_array_equal(values(t["customdata"]), z)


def test_captions_are_the_rows_nearest_each_cut(run):
    df, page, log = run["scores"], run["page"], run["log"]
    pool = pl.read_parquet(sorted(Path(run["paths"]["pool"]).glob("*.parquet")))
    text = dict(zip(pool["uid"], pool["text"]))
    url = dict(zip(pool["uid"], pool["url"]))
    s = log["steps"][0]
    x = df["ncl"].cast(pl.Float64).to_numpy()
    order = np.lexsort((df["uid"].to_numpy(), x))
    above = [i for i in order if x[i] >= s["value"]][:4]
    below = [i for i in order if x[i] < s["value"]][-4:]
    section = page.split(f"at {s['rule']} (cut")[1].split("<h3>")[0]
    for i in [*above, *below]:
        assert url[df["uid"][int(i)]] in section
    assert "the highest and the lowest" in page
    assert all(text[df["uid"][int(i)]][:20] in section for i in above)
    assert "-0<" not in page and ">-0.0<" not in page  # no negative zeros printed


def test_parameters_and_version_are_shown(run):
    page = run["page"]
    assert f"polars-curate {pc.__version__}" in page
    params = page.split("id='parameters'")[1]
    assert "&quot;batch_size&quot;: 512" in params
    assert f"<td>{pc.__version__}</td>" in params  # each score's version, from its record


def test_the_report_does_not_grow_with_the_pool(tmp_path):
    from plotly.offline import get_plotlyjs

    sizes = []
    for n in (500, 8000):
        p = synthetic_pool(tmp_path / str(n), n=n, d=16, shards=2)
        pc.score_pool(p["pool"], tmp_path / f"s{n}", scores=["ncl", "clip"], progress=False)
        page = write_report(tmp_path / f"s{n}", tmp_path / f"r{n}.html").read_text()
        sizes.append(len(page) - len(get_plotlyjs()))  # the report itself, without plotly.js
    assert sizes[1] < 1.05 * sizes[0], sizes


def test_a_report_without_a_select_log_says_so(run, tmp_path):
    sub = tmp_path / "other.npy"
    shutil.copy(run["tmp"] / "sub.npy", sub)
    page = write_report(run["tmp"] / "s", tmp_path / "r.html", subset=sub).read_text()
    assert "no select log beside it" in page
    assert "fig-rules" not in page and "fig-hist-ncl" in page


def _browser() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome", "chrome"):
        path = shutil.which(name)
        if path:
            return path
    return None


def test_the_demo_report_renders_in_a_browser(tmp_path):
    browser = _browser()
    if browser is None:
        pytest.skip("no headless Chromium (Debian package `chromium`); .ci/run installs it")
    demo = tmp_path / "demo"
    subprocess.run(
        [sys.executable, str(ROOT / "examples" / "pipeline_demo.py"), str(demo)],
        check=True,
        capture_output=True,
        timeout=600,
    )
    report = demo / "report.html"
    page = report.read_text()
    expected = len(re.findall(r'class="plotly-graph-div"', page))
    assert expected == 6  # three histograms, rules, overlap, density
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars"]
    flags += ["--virtual-time-budget=20000", "--enable-logging=stderr", "--v=0"]
    dom = subprocess.run(
        [browser, *flags, "--dump-dom", report.as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    assert f'data-figures-drawn="{expected}"' in html, html[:300]
    root = html[: html.index(">", html.index("<html")) + 1]  # the <html ...> tag's attributes
    assert "data-errors" not in root, root
    console = [ln for ln in dom.stderr.splitlines() if "CONSOLE" in ln]
    assert not [ln for ln in console if "error" in ln.lower() or "uncaught" in ln.lower()], console
    assert html.count('class="main-svg"') >= expected
    for section in ("distributions", "rules", "overlap", "density", "captions", "parameters"):
        assert f'id="{section}"' in html
    png = tmp_path / "report.png"
    shot = subprocess.run(
        [browser, *flags, "--window-size=1200,5000", f"--screenshot={png}", report.as_uri()],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert shot.returncode == 0, shot.stderr[-2000:]
    data = png.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 100_000


def test_edge_cases_constant_missing_and_infinite_scores_external_and_empty_rules(tmp_path):
    from support import fake_scores

    uids = [f"{i:032x}" for i in range(1, 21)]
    a = np.linspace(-1, 1, 20)
    a[[2, 5]] = np.nan
    a[7] = np.inf
    d = fake_scores(tmp_path / "s", uids, ncl=a, clip=np.full(20, 0.25))
    ext = tmp_path / "dfn_scores.parquet"
    pl.DataFrame({"uid": uids[::2], "dfn": np.arange(10, dtype=np.float64)}).write_parquet(ext)
    rules = ["ncl:0.5", "clip<0.3", f"{ext}#dfn>=3", "clip:0"]
    pc.select(d, tmp_path / "sub.npy", rules, log=lambda _: None)
    page = write_report(d, tmp_path / "r.html", subset=tmp_path / "sub.npy").read_text()
    figs = figures(page)
    # ncl: 17 finite rows binned, 3 counted as missing; the constant clip is one full bin.
    hist = figs["fig-hist-ncl"][0]
    assert int(sum(values(t["y"]).sum() for t in hist)) == 17
    assert "<td>3</td>" in page.split("id='distributions'")[1].split("</table>")[0]
    clip = figs["fig-hist-clip"][0]
    assert int(sum(values(t["y"]).sum() for t in clip)) == 20
    assert "0.25" in page and "-0.49" not in page  # percentiles stay inside [min, max]
    # Rules: the external rule's rows are a set of the overlap, the empty rule keeps none.
    log = json.loads((tmp_path / "sub.select.json").read_text())
    funnel = figures(page)["fig-rules"][0][0]
    assert list(values(funnel["x"])) == [20, *[s["kept"] for s in log["steps"]]]
    ticks = figs["fig-overlap"][1]["yaxis2"]["ticktext"]
    assert len(ticks) == 1 + len(rules) and any("dfn" in t for t in ticks)
    assert any(t.startswith("rule 4") and "(0)" in t for t in ticks)
    # The log moved away from its external file: the page says so instead of failing.
    ext.unlink()
    page = write_report(d, tmp_path / "r2.html", subset=tmp_path / "sub.npy").read_text()
    assert "Not shown: rule" in page and "dfn_scores.parquet" in page


def test_urls_other_than_http_are_not_links(tmp_path):
    paths = synthetic_pool(tmp_path, n=200, d=8, shards=1, layout="parquet")
    f = next(Path(paths["pool"]).glob("*.parquet"))
    df = pl.read_parquet(f)
    df.with_columns(url=pl.lit("javascript:alert(1)")).write_parquet(f)
    pc.score_pool(paths["pool"], tmp_path / "s", scores=["clip"], progress=False)
    page = write_report(tmp_path / "s", tmp_path / "r.html", pool=paths["pool"]).read_text()
    assert "javascript:alert(1)" in page and "href='javascript" not in page
