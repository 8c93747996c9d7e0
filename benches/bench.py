"""Speed of polars-curate against NumPy/OpenBLAS, measured in one run on this machine.

    make bench                     # the full ladder (a few minutes)
    .venv/bin/python benches/bench.py --quick
    .venv/bin/python benches/bench.py --kernel avx2          # pin our kernel
    .venv/bin/python benches/bench.py --blas-core SkylakeX   # NumPy on OpenBLAS's AVX-512 core

For every case it times our expression through Polars (in-memory engine, inputs already in a
frame), the float32 matmuls of the same shapes into preallocated outputs (``np.matmul(a, b,
out=c)``, and ``torch.matmul(a, b, out=c)`` with ``torch.set_num_threads(cores)`` when torch is
importable: the best sgemm on this machine, our ceiling), and a plain NumPy implementation of the
same score (the peer a user would otherwise write). ``vs sgemm`` is our rate / the faster sgemm's.
Rates are "useful" FLOP/s: 2·n·B·d·K for negCLIPLoss, 2·n·m·d for NormSim and the zero-shot
argmax (``zero_shot_labels``: the nearest of m class embeddings), 2·n·d² + 2·m·d² for NormSim_2
(its Gram matrix and the quadratic form). torch is not a dependency: without it the script says
so and compares with NumPy alone.
Peak memory is measured in a fresh subprocess: the kernel's peak-RSS mark is reset once the
inputs are loaded (``/proc/self/clear_refs``), and the peak while the score runs minus the RSS
before it is the extra memory the score needed (its output included).

The header names the CPU, our kernel (``POLARS_CURATE_KERNEL`` or the best the CPU runs; pin
one with ``--kernel``) and the core OpenBLAS chose. OpenBLAS picks its core by CPU model and may
pick a narrower one than the CPU has (scipy-openblas 0.3.31 runs its AVX2 "Haswell" core on AMD
Zen 5): ``--blas-core SkylakeX`` sets ``OPENBLAS_CORETYPE`` so that NumPy uses OpenBLAS's AVX-512
kernels, the fair peer of our AVX-512 kernel. Both options restart the script with the variable
set, since OpenBLAS and our plugin read them once.

The sides are timed interleaved and the best of several runs is kept: this VM's speed drifts by
tens of percent from minute to minute. OpenBLAS's worker threads busy-wait for about 0.1 s
after each product before they sleep (its default ``THREAD_TIMEOUT``), which would take a core
from whatever runs next; the script sets ``OPENBLAS_THREAD_TIMEOUT=4`` (sleep at once) so that
neither side runs against the other's spinning threads. It does not slow NumPy's products.
"""

from __future__ import annotations

import os

os.environ.setdefault("OPENBLAS_THREAD_TIMEOUT", "4")  # must precede the NumPy import

import argparse
import ctypes
import gc
import glob
import json
import platform
import subprocess
import sys
import time

import numpy as np
import polars as pl

import polars_curate as pc

try:  # a bench-only peer, not a dependency
    import torch
except ImportError:
    torch = None

RNG = np.random.default_rng(0)


def unit_f32(n: int, d: int) -> np.ndarray:
    out = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, 8192):
        block = RNG.standard_normal((min(8192, n - s), d), dtype=np.float32)
        out[s : s + len(block)] = block / np.linalg.norm(block, axis=1, keepdims=True)
    return out


def frame(dtype=pl.Float32, **cols: np.ndarray) -> pl.DataFrame:
    return pl.DataFrame(
        [pl.Series(k, v).cast(pl.Array(dtype, v.shape[1])) for k, v in cols.items()]
    )


def best(*fs, repeat: int) -> list[float]:
    """Best time of each function over `repeat` rounds, the functions interleaved within a round
    so that both sides see the same machine (this VM's speed drifts by tens of percent)."""
    times = [[] for _ in fs]
    for _ in range(repeat):
        for f, ts in zip(fs, times):
            gc.collect()
            t0 = time.perf_counter()
            f()
            ts.append(time.perf_counter() - t0)
    return [min(ts) for ts in times]


def sgemm_runs(products: list[tuple[np.ndarray, np.ndarray]]) -> dict:
    """Each sgemm peer's run of every `a @ b` in `products` into outputs allocated (and touched)
    once, so that the rate is not that of allocating gigabytes: NumPy's, and torch's (sharing
    the arrays' memory) when it is importable."""
    outs = [np.zeros((a.shape[0], b.shape[1]), dtype=np.float32) for a, b in products]
    runs = {"numpy": lambda: [np.matmul(a, b, out=c) for (a, b), c in zip(products, outs)]}
    if torch is not None:
        tp = [(torch.from_numpy(a), torch.from_numpy(b)) for a, b in products]
        touts = [torch.zeros(c.shape, dtype=torch.float32) for c in outs]
        runs["torch"] = lambda: [torch.matmul(a, b, out=c) for (a, b), c in zip(tp, touts)]
    return runs


def timed(ours, products, repeat: int) -> tuple[float, dict]:
    """Best times of `ours` and of each sgemm peer of `products`, interleaved."""
    runs = sgemm_runs(products)
    ours_s, *peer_s = best(ours, *runs.values(), repeat=repeat)
    return ours_s, dict(zip(runs, peer_s))


def np_lse(s: np.ndarray, axis: int) -> np.ndarray:
    m = s.max(axis=axis, keepdims=True)
    return (m + np.log(np.exp(s - m).sum(axis=axis, keepdims=True))).squeeze(axis)


def numpy_negclip(x: np.ndarray, t: np.ndarray, tau: float = 0.01) -> np.ndarray:
    s = (x @ t.T) / np.float32(tau)
    return np.einsum("ij,ij->i", x, t) - tau / 2 * (np_lse(s, 1) + np_lse(s, 0))


def case_negclip(b: int, d: int, repeat: int) -> dict:
    x, t = unit_f32(b, d), unit_f32(b, d)
    df = frame(img=x, txt=t)
    expr = pc.neg_clip_loss("img", "txt", batch_size=b, num_batches=1)
    ours, mm = timed(lambda: df.select(expr), [(x, t.T)], repeat)
    # The peer takes seconds to minutes at large B: best of 2 only where it is quick.
    (peer,) = best(lambda: numpy_negclip(x, t), repeat=2 if b <= 4096 else 1)
    flops = 2 * b * b * d
    return dict(
        case="neg_clip_loss",
        shape=f"n=B={b} d={d} K=1",
        ours=ours,
        numpy=peer,
        mm=mm,
        flops=flops,
    )


def case_normsim(n: int, m: int, d: int, p, repeat: int) -> dict:
    x, target = unit_f32(n, d), unit_f32(m, d)
    df = frame(img=x)
    expr = pc.normsim("img", target, p=p)  # prepares the target once, here
    ours, mm = timed(lambda: df.select(expr), [(x, target.T)], repeat)
    if p == "inf":
        (peer,) = best(lambda: np.abs(x @ target.T).max(axis=1), repeat=1)
    else:
        (peer,) = best(lambda: (np.abs(x @ target.T) ** p).sum(axis=1) ** (1 / p), repeat=1)
    flops = 2 * n * m * d
    return dict(
        case=f"normsim p={p}",
        shape=f"n={n} m={m} d={d}",
        ours=ours,
        numpy=peer,
        mm=mm,
        flops=flops,
    )


def case_normsim2(n: int, m: int, d: int, repeat: int) -> dict:
    x, target = unit_f32(n, d), unit_f32(m, d)
    df = frame(img=x)

    def ours_run():
        # A perturbed target each time so the Gram pass is really redone and timed.
        tg = target.copy()
        tg[0, 0] += np.float32(1e-3) * RNG.random(dtype=np.float32)
        df.select(pc.normsim("img", tg, p=2))

    g = target.T @ target
    ours, mm = timed(ours_run, [(target.T, target), (x, g)], repeat)

    def peer_run():
        gg = target.T.astype(np.float64) @ target.astype(np.float64)
        return np.sqrt(np.einsum("ij,ij->i", x @ gg.astype(np.float32), x))

    (peer,) = best(peer_run, repeat=1)
    flops = 2 * n * d * d + 2 * m * d * d
    return dict(
        case="normsim p=2",
        shape=f"n={n} m={m} d={d}",
        ours=ours,
        numpy=peer,
        mm=mm,
        flops=flops,
    )


def case_zero_shot(n: int, m: int, d: int, repeat: int) -> dict:
    x, classes = unit_f32(n, d), unit_f32(m, d)
    df = frame(img=x)
    expr = pc.zero_shot_labels("img", classes)  # prepares the class embeddings once, here
    ours, mm = timed(lambda: df.select(expr), [(x, classes.T)], repeat)
    (peer,) = best(lambda: np.argmax(x @ classes.T, axis=1), repeat=1)
    return dict(
        case="zero_shot argmax",
        shape=f"n={n} m={m} d={d}",
        ours=ours,
        numpy=peer,
        mm=mm,
        flops=2 * n * m * d,
    )


def case_clip(n: int, d: int, repeat: int) -> dict:
    x, t = unit_f32(n, d), unit_f32(n, d)
    df = frame(img=x, txt=t)
    expr = pc.clip_score("img", "txt")
    ours, peer = best(lambda: df.select(expr), lambda: np.einsum("ij,ij->i", x, t), repeat=repeat)
    return dict(
        case="clip_score",
        shape=f"n={n} d={d}",
        ours=ours,
        numpy=peer,
        mm=None,
        flops=None,
    )


def peak_child(kind: str, n: int, d: int) -> None:
    """Runs in a subprocess: prints the growth of peak RSS (MiB) while one score runs."""
    x = unit_f32(n, d).astype(np.float16)
    t = unit_f32(n, d).astype(np.float16)
    if kind == "ours":
        df = frame(pl.Float16, img=x, txt=t)
        del x, t
        expr = pc.neg_clip_loss("img", "txt", batch_size=n, num_batches=1)
        run = lambda: df.select(expr)  # noqa: E731
    else:
        run = lambda: numpy_negclip(x.astype(np.float32), t.astype(np.float32))  # noqa: E731
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset VmHWM (peak RSS) to the current RSS
    before = _status_kib("VmRSS")
    run()
    print(json.dumps({"peak_mib": (_status_kib("VmHWM") - before) / 1024}))


def _status_kib(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"{field} not in /proc/self/status")


def peak(kind: str, n: int, d: int) -> float:
    r = subprocess.run(
        [sys.executable, __file__, "--peak-child", kind, str(n), str(d)],
        capture_output=True,
        text=True,
        check=True,
    )
    return json.loads(r.stdout.strip().splitlines()[-1])["peak_mib"]


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def blas_core() -> str:
    """The core OpenBLAS (NumPy's BLAS) runs, e.g. "Haswell" or "SkylakeX"."""
    libs = glob.glob(os.path.join(os.path.dirname(np.__file__), "..", "numpy.libs", "*openblas*"))
    for lib in libs:
        try:
            dll = ctypes.CDLL(lib)
            for name in ("scipy_openblas_get_corename64_", "scipy_openblas_get_corename"):
                if hasattr(dll, name):
                    f = getattr(dll, name)
                    f.restype = ctypes.c_char_p
                    return f().decode()
        except OSError:
            pass
    return "unknown"


def restart_with(env: dict[str, str]) -> None:
    """Re-runs this script with `env` set, unless it already is (the variables are read once per
    process, by OpenBLAS when NumPy is imported and by the plugin at its first expression)."""
    if all(os.environ.get(k) == v for k, v in env.items()):
        return
    os.environ.update(env)
    os.execv(sys.executable, [sys.executable, *sys.argv])


def print_table(cases, kernel: str, core: str) -> None:
    """Runs each case and prints its row under a header naming the machine and the peers."""
    if torch is not None:
        torch.set_num_threads(os.cpu_count())
        peers = f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    else:
        peers = "torch not importable: NumPy is the only sgemm peer"
    print(
        f"polars-curate {pc.__version__} | {cpu_name()} | {os.cpu_count()} cores, "
        f"{pc._internal.thread_count()} plugin threads | kernel {kernel} (available: "
        f"{', '.join(pc._internal.available_kernels())}) | numpy {np.__version__} with OpenBLAS "
        f"core {core} | {peers} | polars {pl.__version__}\n"
    )
    header = (
        f"{'case':<16} {'shape':<24} {'ours s':>8} {'numpy s':>8} {'ours GF/s':>9} "
        f"{'numpy mm':>8} {'torch mm':>8} {'vs sgemm':>8} {'vs numpy':>8}"
    )
    print(header)
    print("-" * len(header))
    for make in cases:
        c = make()
        if c["flops"]:
            rate = {k: c["flops"] / t / 1e9 for k, t in {"ours": c["ours"], **c["mm"]}.items()}
            torch_rate = f"{rate['torch']:>8.1f}" if "torch" in rate else f"{'-':>8}"
            sgemm = max(v for k, v in rate.items() if k != "ours")
            rates = (
                f"{rate['ours']:>9.1f} {rate['numpy']:>8.1f} {torch_rate} "
                f"{rate['ours'] / sgemm:>8.2f}"
            )
        else:
            rates = f"{'-':>9} {'-':>8} {'-':>8} {'-':>8}"
        print(
            f"{c['case']:<16} {c['shape']:<24} {c['ours']:>8.3f} {c['numpy']:>8.3f} {rates} "
            f"{c['numpy'] / c['ours']:>7.1f}x",
            flush=True,
        )
    print(
        f"\nvs sgemm: our rate ({kernel} kernel) / the faster float32 matmul of the same shapes "
        f"into preallocated outputs (numpy mm: OpenBLAS {core}; torch mm when importable), in "
        "GFLOP/s; vs numpy: a plain NumPy implementation's time / ours (clip_score: einsum)."
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="small shapes only (about 30 s)")
    ap.add_argument("--repeat", type=int, default=5, help="timed runs per case (best is kept)")
    ap.add_argument(
        "--only",
        nargs="+",
        choices=["neg_clip_loss", "normsim", "normsim2", "zero_shot", "clip_score", "memory"],
        help="run only these groups of cases",
    )
    ap.add_argument(
        "--kernel",
        choices=["portable", "avx2", "avx512", "amx"],
        help="our kernel (POLARS_CURATE_KERNEL); default: the best this CPU runs",
    )
    ap.add_argument(
        "--blas-core",
        help="OpenBLAS core for NumPy (OPENBLAS_CORETYPE), e.g. SkylakeX or Haswell",
    )
    ap.add_argument("--peak-child", nargs=3, help=argparse.SUPPRESS)
    a = ap.parse_args()
    env = {}
    if a.kernel:
        env["POLARS_CURATE_KERNEL"] = a.kernel
    if a.blas_core:
        env["OPENBLAS_CORETYPE"] = a.blas_core
    restart_with(env)
    if a.peak_child:
        peak_child(a.peak_child[0], int(a.peak_child[1]), int(a.peak_child[2]))
        return
    r = a.repeat
    if a.quick:
        cases = [
            ("neg_clip_loss", lambda: case_negclip(4096, 512, r)),
            ("normsim", lambda: case_normsim(8192, 4096, 768, "inf", r)),
            ("normsim2", lambda: case_normsim2(32768, 8192, 768, r)),
            ("zero_shot", lambda: case_zero_shot(16384, 1000, 512, r)),
            ("clip_score", lambda: case_clip(100_000, 768, r)),
        ]
    else:
        cases = [
            ("neg_clip_loss", lambda: case_negclip(4096, 512, r)),
            ("neg_clip_loss", lambda: case_negclip(16384, 512, r)),
            ("neg_clip_loss", lambda: case_negclip(32768, 512, 2)),
            ("neg_clip_loss", lambda: case_negclip(4096, 768, r)),
            ("neg_clip_loss", lambda: case_negclip(16384, 768, r)),
            ("neg_clip_loss", lambda: case_negclip(32768, 768, 2)),
            ("normsim", lambda: case_normsim(16384, 8192, 768, "inf", r)),
            ("normsim", lambda: case_normsim(16384, 8192, 768, 3, r)),
            ("normsim", lambda: case_normsim(16384, 8192, 768, 2.5, r)),
            ("normsim", lambda: case_normsim(16384, 8192, 512, "inf", r)),
            ("normsim2", lambda: case_normsim2(131072, 50000, 768, r)),
            ("zero_shot", lambda: case_zero_shot(65536, 1000, 768, r)),
            ("clip_score", lambda: case_clip(400_000, 768, 2 * r)),
            ("clip_score", lambda: case_clip(400_000, 512, 2 * r)),
        ]
    if a.only:
        cases = [(k, f) for k, f in cases if k in a.only]
    try:
        kernel = pc._internal.kernel()
    except ValueError as e:
        sys.exit(f"bench: {e}")
    core = blas_core()
    if a.blas_core and core.lower() != a.blas_core.lower():
        sys.exit(f"bench: OPENBLAS_CORETYPE={a.blas_core} did not take effect (runs {core})")
    print_table([make for _, make in cases], kernel, core)
    if a.only and "memory" not in a.only:
        return
    n = 8192 if a.quick else 32768
    print(f"\nextra peak memory of neg_clip_loss at n = B = {n}, d = 768, float16 input:")
    print(f"  polars-curate {peak('ours', n, 768):8.0f} MiB")
    print(f"  NumPy         {peak('numpy', n, 768):8.0f} MiB")


if __name__ == "__main__":
    main()
