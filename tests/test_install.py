"""A user's installation, as the README gives it: into a fresh virtualenv, either
``pip install <repo>`` or a wheel built by ``maturin build --release`` and installed with pip;
then ``polars-curate --help`` and the quickstart with that environment's Python, from a
directory outside the repository, so the installed package (not the source tree) is imported.

Marked ``install`` (deselect with ``-m "not install"``). The build reuses the cargo target
directory that ``make`` uses (``$CARGO_TARGET_DIR``, default ``~/.cache/polars-curate/target``),
so after ``make build`` cargo has nothing to compile and each case takes seconds, not the
8 minutes of a first build. Skipped, with the reason, when there is no Rust toolchain, no
``venv`` or no way to reach PyPI; any other failure fails.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.install

REPO = Path(__file__).resolve().parent.parent
# A first build of the polars crates takes ~8 minutes on 2 cores; later ones seconds.
BUILD_TIMEOUT = 1800
# Lines of pip's output that mean "the package index cannot be reached".
OFFLINE = re.compile(
    r"NewConnectionError|Failed to establish a new connection|Temporary failure in name "
    r"resolution|Name or service not known|Network is unreachable|ProxyError|ConnectTimeout"
    r"|Read timed out|No matching distribution found|Could not find a version that satisfies"
)


def _env() -> dict[str, str]:
    """The environment of every command: the caller's, without anything that would make Python
    import the source tree or the caller's virtualenv, and with make's cargo target directory."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["CARGO_TARGET_DIR"] = os.environ.get("CARGO_TARGET_DIR") or str(
        Path.home() / ".cache" / "polars-curate" / "target"
    )
    env["MATURIN_PEP517_ARGS"] = "--locked"  # never rewrite Cargo.lock in the checkout
    env["PIP_DISABLE_PIP_VERSION_CHECK"] = "1"
    env["PYTHONUNBUFFERED"] = "1"  # so a command that times out has shown how far it got
    return env


def _run(cmd: list[str], cwd: Path, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    """``cmd`` with ``_env()``; a command still running after ``timeout`` seconds is killed and
    fails the test with what it had printed."""
    try:
        return subprocess.run(
            [str(c) for c in cmd],
            cwd=cwd,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired as e:
        said = [x.decode() if isinstance(x, bytes) else x or "" for x in (e.stdout, e.stderr)]
        pytest.fail(f"{cmd[-1]} still running after {timeout} s; it printed:\n{''.join(said)}")


def _pip(venv: Path, *args: str | Path, cwd: Path, timeout: float = BUILD_TIMEOUT) -> None:
    """``pip ARGS`` in ``venv``; skips when PyPI cannot be reached, fails on anything else."""
    r = _run([venv / "bin" / "python", "-m", "pip", *args], cwd=cwd, timeout=timeout)
    if r.returncode == 0:
        return
    out = r.stdout + r.stderr
    if OFFLINE.search(out):
        # Is it the network, or a real resolution problem? Ask the index about pip itself.
        probe = _run([venv / "bin" / "python", "-m", "pip", "download", "--no-deps",
                      "--dest", venv / "probe", "pip"], cwd=cwd)  # fmt: skip
        if probe.returncode != 0:
            pytest.skip(f"PyPI cannot be reached from here: {out.strip().splitlines()[-1]}")
    pytest.fail(f"pip {' '.join(map(str, args))} failed ({r.returncode}):\n{out[-4000:]}")


def _fresh_venv(root: Path) -> Path:
    if shutil.which("cargo") is None:
        pytest.skip("no Rust toolchain: `cargo` is not on PATH (see https://rustup.rs)")
    venv = root / "venv"
    r = _run([sys.executable, "-m", "venv", venv], cwd=root, timeout=120)
    if r.returncode != 0:
        pytest.skip(f"cannot create a virtualenv here: {(r.stdout + r.stderr).strip()[-500:]}")
    return venv


def _build_requires() -> list[str]:
    """``[build-system] requires`` of pyproject.toml (the only place maturin's version is set).
    A regex rather than tomllib, which Python 3.9 and 3.10 lack: ``requires-python`` has a
    hyphen, so ``requires =`` is the build system's key."""
    text = (REPO / "pyproject.toml").read_text()
    m = re.search(r"^requires\s*=\s*\[([^\]]*)\]", text, re.MULTILINE)
    assert m, "pyproject.toml has no [build-system] requires"
    return re.findall(r'"([^"]+)"', m.group(1))


def _install(how: str, root: Path) -> Path:
    venv = _fresh_venv(root)
    if how == "pip":
        _pip(venv, "install", REPO, cwd=root)
    else:
        _pip(venv, "install", *_build_requires(), cwd=root, timeout=600)
        wheels = root / "wheels"
        r = _run(
            [venv / "bin" / "maturin", "build", "--release", "--locked", "--out", wheels],
            cwd=REPO,
            timeout=BUILD_TIMEOUT,
        )
        assert r.returncode == 0, f"maturin build failed:\n{(r.stdout + r.stderr)[-4000:]}"
        built = sorted(wheels.glob("polars_curate-*.whl"))
        assert len(built) == 1, f"expected one wheel in {wheels}, got {built}"
        _pip(venv, "install", built[0], cwd=root)
    return venv


@pytest.mark.parametrize("how", ["pip", "wheel"])
def test_fresh_virtualenv_install_runs_cli_and_quickstart(how, tmp_path):
    venv = _install(how, tmp_path)
    work = tmp_path / "elsewhere"  # outside the repository: only the installed copy is found
    work.mkdir()
    py = venv / "bin" / "python"

    where = _run(
        [py, "-c", "import polars_curate, importlib.metadata as m; print(polars_curate.__file__);"
         " print(m.version('polars-curate')); print(m.metadata('polars-curate')"
         "['License-Expression'])"],
        cwd=work,
    )  # fmt: skip
    assert where.returncode == 0, where.stderr
    path, version, license_ = where.stdout.split()
    assert Path(path).resolve().is_relative_to(venv.resolve()), path
    assert license_ == "MIT"
    native = list(Path(path).parent.glob("_internal*.so"))
    assert len(native) == 1, f"the plugin library is not installed beside {path}"

    cli = venv / "bin" / "polars-curate"
    r = _run([cli, "--help"], cwd=work)
    assert r.returncode == 0, r.stderr
    for command in ("score", "select", "report"):
        assert command in r.stdout
    r = _run([cli, "--version"], cwd=work)
    assert r.returncode == 0 and r.stdout.split() == ["polars-curate", version], r

    r = _run([py, REPO / "examples" / "quickstart.py"], cwd=work, timeout=600)
    assert r.returncode == 0, f"quickstart failed:\n{(r.stdout + r.stderr)[-4000:]}"
    kept = re.search(r"(\d+) of (\d+) rows kept", r.stdout)
    assert kept, r.stdout[-2000:]
    assert int(kept.group(1)) == int(kept.group(2)) // 5  # D1 keeps 20% of the pool
