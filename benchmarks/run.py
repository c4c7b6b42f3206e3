"""Run the benchmark workloads (W1, W2): diffc against a numpy baseline in the same run.

    python benchmarks/run.py [--quick] [--threads 1 2] [--workloads W1 W2] [--rounds 5]
                             [--seconds 0.2]

Each thread count runs in its own process (BLAS reads its thread count at import), pinned to
that many cores, so that no library (XLA starts its own thread pool) uses more; diffc gets the
count through DIFFC_NUM_THREADS. OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are unset there (some
machines set them, and they slow numpy), and the OpenBLAS kernel numpy runs is printed. Before
any time is printed, diffc's loss trajectory is checked against numpy's over the same steps
(float64: 1e-9 relative at every step; float32: 1e-4 over the first 50 steps), and on more
than one thread diffc's losses are checked bit for bit against its own on one thread; a
mismatch is reported instead of a time and makes the exit status 1. torch and jax columns
appear when those packages are installed. The stacks are timed by turns (the machines are
shared and noisy): --rounds rounds, in each of which every stack in turn makes passes for
--seconds at least, so that all are measured over the same stretches of time and short passes
get many tries; each stack's least time is reported. On more than one thread diffc also takes
turns on one thread, in the same process: the `vs 1thr` column. Compile time is the train
step's, cold and from the on-disk cache; the passes reuse the compiled step.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
TOLERANCE = {"f64": (1e-9, None), "f32": (1e-4, 50)}  # relative, over how many steps
# the pause before each stack's turn: OpenBLAS's threads spin for ~0.1 s after a call (2^28
# cycles), taking a core from whichever stack runs next
SETTLE_SECONDS = 0.2


def trajectory_error(ours, reference, dtype: str) -> float:
    import numpy as np
    _, steps = TOLERANCE[dtype]
    a, b = np.asarray(ours)[:steps], np.asarray(reference)[:steps]
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-30)))


def turns(runs: dict, rounds: int, seconds: float) -> dict:
    """Time each run() -> (losses, seconds) by turns: `rounds` rounds, in each of which every
    run in turn makes passes for at least `seconds` (one pass at least), each turn starting
    after SETTLE_SECONDS. All stacks are so measured over the same stretches of a noisy shared
    machine, and short passes get many tries. Per name: the first pass's losses and the least
    time (the least disturbed). A run that raises ImportError (a peer that is not installed)
    is left out."""
    runs, results = dict(runs), {}
    for _ in range(rounds):
        for name, run in list(runs.items()):
            time.sleep(SETTLE_SECONDS)
            spent = 0.0
            while spent == 0.0 or spent < seconds:
                try:
                    losses, elapsed = run()
                except ImportError:
                    del runs[name]
                    break
                first, least = results.get(name, (losses, elapsed))
                results[name] = (first, min(least, elapsed))
                spent += elapsed
    return results


def measure(workload: str, dtype: str, quick: bool, rounds: int, seconds: float,
            threads: int) -> list[dict]:
    """One workload in one dtype: diffc, numpy and the peers that are installed, and for W1 the
    step called from Python per sample, timed by turns; on more than one thread diffc also
    takes turns on one thread (the `vs 1thr` column)."""
    import numpy as np
    import peers
    import workloads as w

    import diffc
    dt = {"f32": diffc.f32, "f64": diffc.f64}[dtype]
    rng = np.random.default_rng(0)
    if workload == "W1":
        n, batch = (300 if quick else 2000), None
        params = w.he_params(rng, [784, 128, 10], dt.np_dtype)
        data = w.data(rng, n, dt.np_dtype, one_hot=True)
        function, baseline, others = w.w1_function(dt), w.w1_numpy, (peers.w1_torch,
                                                                      peers.w1_jax)
    else:
        n, batch = (6400 if quick else 60000), 64
        params = w.he_params(rng, [784, 128, 64, 10], dt.np_dtype)
        data = w.data(rng, n, dt.np_dtype, one_hot=False)
        function, baseline, others = w.w2_function(dt), w.w2_numpy, (peers.w2_torch,
                                                                      peers.w2_jax)
    extra = (batch,) if batch else ()
    copy = lambda: [p.copy() for p in params]  # noqa: E731
    step, (cold, cached) = w.diffc_compile(function, params)

    def on(count, run):
        """run, with diffc on `count` threads."""
        def run_on():
            diffc.set_num_threads(count)
            return run()
        return run_on

    diffc_runs = {"fit": lambda: w.diffc_fit(step, copy(), data, batch)}
    if workload == "W1":
        diffc_runs["step"] = lambda: w.diffc_step_calls(step, copy(), data)
    runs = {"numpy": lambda: baseline(copy(), *data, *extra)}
    for name, run in diffc_runs.items():
        runs[name] = on(threads, run)
        if threads > 1:
            runs[name + "_1"] = on(1, run)
    for peer in others:
        runs[peer.__name__.split("_")[1]] = lambda peer=peer: peer(copy(), *data, *extra)
    results = turns(runs, rounds, seconds)
    ref_losses, ref_seconds = results["numpy"]
    us = lambda name: results[name][1] / n * 1e6  # noqa: E731

    def diffc_row(name, title):
        losses = results[name][0]
        row = {"workload": title, "dtype": dtype, "n": n, "numpy": us("numpy"),
               "diffc": us(name), "error": trajectory_error(losses, ref_losses, dtype)}
        if threads > 1:
            row["diffc_1"] = us(name + "_1")
            row["identical"] = bool(np.array_equal(losses, results[name + "_1"][0]))
        return row

    row = diffc_row("fit", workload) | {"cold": cold, "cached": cached}
    for name in ("torch", "jax"):
        if name in results:
            peer_losses = results[name][0]
            row[name] = us(name)
            row[name + "_error"] = trajectory_error(peer_losses, ref_losses[:len(peer_losses)],
                                                    dtype)
    return [row] + ([diffc_row("step", "W1 step()")] if workload == "W1" else [])


def child(args) -> None:
    """Measure in this process, on as many cores as threads: peers that start their own thread
    pools (XLA does, whatever OMP_NUM_THREADS says) get no more cores than diffc."""
    (threads,) = args.threads
    if hasattr(os, "sched_setaffinity"):  # Linux
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < threads:
            raise SystemExit(f"{threads} threads asked for, {len(cores)} cores available")
        os.sched_setaffinity(0, cores[:threads])
    rows = [row for wl in args.workloads for dt in ("f64", "f32")
            for row in measure(wl, dt, args.quick, args.rounds, args.seconds, threads)]
    print(json.dumps({"openblas": openblas_kernel(), "rows": rows}))


def openblas_kernel() -> str:
    """The kernel (core type) of the OpenBLAS that numpy loaded, asked of the library itself."""
    import ctypes

    import numpy  # noqa: F401  (loads its BLAS)
    with open("/proc/self/maps") as maps:
        paths = sorted({line.split()[-1] for line in maps if "openblas" in line.lower()})
    for path in paths:
        for name in ("openblas_get_corename", "scipy_openblas_get_corename64_",
                     "scipy_openblas_get_corename"):
            function = getattr(ctypes.CDLL(path), name, None)
            if function is not None:
                function.restype = ctypes.c_char_p
                return function().decode()
    return "unknown (no OpenBLAS found)"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller data sets")
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--workloads", nargs="+", default=["W1", "W2"], choices=["W1", "W2"])
    parser.add_argument("--rounds", type=int, default=5,
                        help="rounds of turns; each stack's least time is reported")
    parser.add_argument("--seconds", type=float, default=0.2,
                        help="each stack's passes in a turn last at least this long")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0
    print(f"{'workload':9} {'dtype':5} {'thr':>3} {'numpy us':>9} {'diffc us':>9} "
          f"{'ratio':>6} {'torch us':>9} {'jax us':>9} {'vs peer':>7} {'vs 1thr':>7} "
          f"{'compile s':>15}  loss check")
    failed = False
    for threads in args.threads:
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
                   MKL_NUM_THREADS=str(threads), DIFFC_NUM_THREADS=str(threads))
        for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
            env.pop(name, None)
        command = [sys.executable, os.path.join(HERE, "run.py"), "--child", "--threads",
                   str(threads), "--workloads", *args.workloads]
        command += ["--quick"] if args.quick else []
        command += ["--rounds", str(args.rounds), "--seconds", str(args.seconds)]
        out = subprocess.run(command, env=env, capture_output=True, text=True, cwd=HERE)
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            return 1
        result = json.loads(out.stdout.strip().splitlines()[-1])
        for r in result["rows"]:
            failed |= not report(r, threads)
        print(f"    ({threads} thread{'s' * (threads > 1)}: numpy's OpenBLAS kernel "
              f"{result['openblas']}, OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset)")
    print("us = microseconds per sample; ratio = numpy time / diffc time, same process run;\n"
          "vs peer = the fastest of numpy, torch and jax / diffc, at the same thread count;\n"
          "vs 1thr = diffc on 1 thread / diffc on this many (same process, passes in turn);\n"
          "W1 step() = diffc's step called from Python once per sample (numpy's loop is too);\n"
          "compile = the train step's compile, cold / from the on-disk cache")
    return 1 if failed else 0


def report(r: dict, threads: int) -> bool:
    """Print one row; whether its checks passed: the loss trajectory against numpy's and, on
    more than one thread, diffc's losses bit for bit against its own on one thread."""
    limit = TOLERANCE[r["dtype"]][0]
    identical = r.get("identical", True)
    ok = r["error"] <= limit and identical
    peer = lambda k: f"{r[k]:9.1f}" if k in r else f"{'-':>9}"  # noqa: E731
    diffc_us = f"{r['diffc']:9.1f}" if ok else f"{'MISMATCH':>9}"
    ratio = f"{r['numpy'] / r['diffc']:5.2f}x" if ok else f"{'-':>6}"
    best = min(r[k] for k in ("numpy", "torch", "jax") if k in r)
    vs_peer = f"{best / r['diffc']:6.2f}x" if ok and r["workload"] != "W1 step()" else f"{'-':>7}"
    vs_one = f"{r['diffc_1'] / r['diffc']:6.2f}x" if ok and "diffc_1" in r else f"{'-':>7}"
    compiled = f"{r['cold']:6.3f} / {r['cached']:6.3f}" if "cold" in r else f"{'-':>15}"
    check = f"max rel diff {r['error']:.1e} (limit {limit:.0e})"
    if "identical" in r:
        check += ", = 1 thread" if identical else ", NOT bit-identical to 1 thread"
    print(f"{r['workload']:9} {r['dtype']:5} {threads:3d} {r['numpy']:9.1f} {diffc_us} "
          f"{ratio} {peer('torch')} {peer('jax')} {vs_peer} {vs_one} {compiled}  {check}")
    return ok


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    sys.exit(main())
