"""Run the benchmark workloads (W1, W2): diffc against a numpy baseline in the same run.

    python benchmarks/run.py [--quick] [--threads 1 2] [--workloads W1 W2] [--repeat 3]

Each thread count runs in its own process (BLAS reads its thread count at import), pinned to
that many cores, so that no library (XLA starts its own thread pool) uses more; diffc gets the
count through DIFFC_NUM_THREADS. OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE are unset there (some
machines set them, and they slow numpy), and the OpenBLAS kernel numpy runs is printed. Before
any time is printed, diffc's loss trajectory is checked against numpy's over the same steps
(float64: 1e-9 relative at every step; float32: 1e-4 over the first 50 steps); a mismatch is
reported instead of a time and makes the exit status 1. torch and jax columns appear when those
packages are installed. Each stack's pass runs --repeat times and the least time is reported
(the machines are shared and noisy). Compile time is the train step's, cold and from the
on-disk cache.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
TOLERANCE = {"f64": (1e-9, None), "f32": (1e-4, 50)}  # relative, over how many steps


def trajectory_error(ours, reference, dtype: str) -> float:
    import numpy as np
    _, steps = TOLERANCE[dtype]
    a, b = np.asarray(ours)[:steps], np.asarray(reference)[:steps]
    return float(np.max(np.abs(a - b) / np.maximum(np.abs(b), 1e-30)))


def best(run, repeat: int):
    """run() -> (losses, seconds, ...) repeated: the first run's losses (and the rest), the
    least seconds of all (the machines are shared: the least is the least disturbed)."""
    first = run()
    seconds = min([first[1]] + [run()[1] for _ in range(repeat - 1)])
    return (first[0], seconds, *first[2:])


def measure(workload: str, dtype: str, quick: bool, repeat: int) -> list[dict]:
    """One workload in one dtype: diffc, numpy and the peers that are installed; for W1 also
    a row for the step called from Python per sample. Each pass runs `repeat` times."""
    import numpy as np
    import peers
    import workloads as w

    from diffc import f32, f64
    dt = {"f32": f32, "f64": f64}[dtype]
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
    ref_losses, ref_seconds = best(lambda: baseline(copy(), *data, *extra), repeat)
    losses, seconds, (cold, cached) = best(lambda: w.diffc_fit(function, copy(), data, batch),
                                           repeat)
    row = {"workload": workload, "dtype": dtype, "n": n, "numpy": ref_seconds / n * 1e6,
           "diffc": seconds / n * 1e6, "cold": cold, "cached": cached,
           "error": trajectory_error(losses, ref_losses, dtype)}
    for peer in others:
        name = peer.__name__.split("_")[1]
        try:
            peer_losses, peer_seconds = best(lambda peer=peer: peer(copy(), *data, *extra),
                                             repeat)
        except ImportError:
            continue
        row[name] = peer_seconds / n * 1e6
        row[name + "_error"] = trajectory_error(peer_losses, ref_losses[:len(peer_losses)], dtype)
    if workload != "W1":
        return [row]
    losses, seconds = best(lambda: w.diffc_step_calls(function, copy(), data), repeat)
    return [row, {"workload": "W1 step()", "dtype": dtype, "n": n, "numpy": row["numpy"],
                  "diffc": seconds / n * 1e6, "error": trajectory_error(losses, ref_losses, dtype)}]


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
            for row in measure(wl, dt, args.quick, args.repeat)]
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
    parser.add_argument("--repeat", type=int, default=3,
                        help="passes of each stack; the least time is reported")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args)
        return 0
    print(f"{'workload':9} {'dtype':5} {'thr':>3} {'numpy us':>9} {'diffc us':>9} "
          f"{'ratio':>6} {'torch us':>9} {'jax us':>9} {'vs peer':>7} {'vs 1thr':>7} "
          f"{'compile s':>15}  loss check")
    failed, one_thread = False, {}
    for threads in args.threads:
        env = dict(os.environ, OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS=str(threads),
                   MKL_NUM_THREADS=str(threads), DIFFC_NUM_THREADS=str(threads))
        for name in ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE"):
            env.pop(name, None)
        command = [sys.executable, os.path.join(HERE, "run.py"), "--child", "--threads",
                   str(threads), "--workloads", *args.workloads]
        command += ["--quick"] if args.quick else []
        command += ["--repeat", str(args.repeat)]
        out = subprocess.run(command, env=env, capture_output=True, text=True, cwd=HERE)
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            return 1
        result = json.loads(out.stdout.strip().splitlines()[-1])
        for r in result["rows"]:
            failed |= not report(r, threads, one_thread)
        print(f"    ({threads} thread{'s' * (threads > 1)}: numpy's OpenBLAS kernel "
              f"{result['openblas']}, OPENBLAS_CORETYPE and OPENBLAS_L2_SIZE unset)")
    print("us = microseconds per sample; ratio = numpy time / diffc time, same process run;\n"
          "vs peer = the fastest of numpy, torch and jax / diffc, at the same thread count;\n"
          "vs 1thr = diffc on 1 thread / diffc on this many (same run, another process);\n"
          "W1 step() = diffc's step called from Python once per sample (numpy's loop is too);\n"
          "compile = the train step's compile, cold / from the on-disk cache")
    return 1 if failed else 0


def report(r: dict, threads: int, one_thread: dict) -> bool:
    """Print one row; whether its loss check passed. Remembers diffc's 1-thread times."""
    limit = TOLERANCE[r["dtype"]][0]
    ok = r["error"] <= limit
    key = (r["workload"], r["dtype"])
    if threads == 1 and ok:
        one_thread[key] = r["diffc"]
    peer = lambda k: f"{r[k]:9.1f}" if k in r else f"{'-':>9}"  # noqa: E731
    diffc_us = f"{r['diffc']:9.1f}" if ok else f"{'MISMATCH':>9}"
    ratio = f"{r['numpy'] / r['diffc']:5.2f}x" if ok else f"{'-':>6}"
    best = min(r[k] for k in ("numpy", "torch", "jax") if k in r)
    vs_peer = f"{best / r['diffc']:6.2f}x" if ok and r["workload"] != "W1 step()" else f"{'-':>7}"
    vs_one = f"{one_thread[key] / r['diffc']:6.2f}x" if ok and key in one_thread else f"{'-':>7}"
    compiled = f"{r['cold']:6.3f} / {r['cached']:6.3f}" if "cold" in r else f"{'-':>15}"
    print(f"{r['workload']:9} {r['dtype']:5} {threads:3d} {r['numpy']:9.1f} {diffc_us} "
          f"{ratio} {peer('torch')} {peer('jax')} {vs_peer} {vs_one} {compiled}  "
          f"max rel diff {r['error']:.1e} (limit {limit:.0e})")
    return ok


if __name__ == "__main__":
    sys.path.insert(0, HERE)
    sys.exit(main())
