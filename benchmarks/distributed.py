"""Data-parallel `fit(comm=...)` timed on 1 and 2 MPI ranks: W2 and a wide network.

    python benchmarks/distributed.py [--quick] [--ranks 1 2]

For each rank count P it runs itself under `mpiexec -n P` (the one next to this Python: the
`mpi` extra's MPICH). Per network (W2: 784 -> 128 -> 64 -> 10; wide: 784 -> 1024 -> 1024 -> 10,
float32, SGD, integer labels) and global batch it prints milliseconds per step of
single-process `fit` (the fused native loop), of `fit(comm=...)` on each P (the slowest rank's
time; each time the least of REPEAT runs), the speedup of the P-rank run over single-process
fit, each rank's share of the work trained alone (batch / P, all P ranks at once: what the
machine gives P processes) and an `Allreduce` of the gradient buffer alone (the same number of
bytes, on P ranks). Before its time is used, each P-rank run's losses are checked against
single-process fit's (1e-5 relative, float32); a mismatch is reported instead of a time and
makes the exit status 1.

Then the scaling model of docs/distributed.md, from these measurements: the compute time per
step T_c(b) = c0 + c1 * b fitted to single-process fit's times, the split path's own cost T_o
(one rank's fit(comm=...) minus single-process fit, at batch 64) and a ring all-reduce of the
gradient buffer, 2 (P - 1) / P * bytes / bandwidth + 2 (P - 1) * latency, on the LINKS below;
it prints the predicted efficiency T_c(B) / (P * (T_c(B / P) + T_o + all-reduce)) of P
machines at global batch B. (T_c is the line through the smallest and largest batch's times.)
"""
import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import diffc
from diffc import f32, i32, nn

NETWORKS = {"W2": [784, 128, 64, 10], "wide": [784, 1024, 1024, 10]}
BATCHES = {"W2": [64, 256, 1024], "wide": [64, 256, 1024]}
TOLERANCE = 1e-5
REPEAT = 5  # each time is the least of this many runs (the machine may be shared)
# the networks of the model: (bandwidth in bytes/s, latency per message in seconds)
LINKS = {"10 Gb/s TCP": (10e9 / 8, 25e-6), "25 Gb/s TCP": (25e9 / 8, 15e-6),
         "100 Gb/s RDMA": (100e9 / 8, 2e-6)}
MODEL_RANKS = [2, 4, 8, 16, 32, 64]
MODEL_BATCHES = [64, 1024, 8192]


def network(sizes):
    """The float32 MLP loss over these layer sizes (relu, softmax cross-entropy)."""
    a, h1, h2, c = sizes

    @diffc.function(name=f"mlp_{a}_{h1}_{h2}_{c}")
    def loss(W1: f32[h1, a], b1: f32[h1], W2: f32[h2, h1], b2: f32[h2], W3: f32[c, h2],
             b3: f32[c], x: f32["B", a], y: i32["B"]) -> f32:
        return nn.softmax_cross_entropy(
            nn.dense(W3, nn.relu(nn.dense(W2, nn.relu(nn.dense(W1, x, b1)), b2)), b3), y)
    return loss


def measure(comm, name: str, batch: int, steps: int) -> dict:
    """One network and batch on comm's ranks: ms per step of fit(comm=...), of an Allreduce of
    as many bytes, and (on rank 0) of single-process fit, with the loss check."""
    import numpy as np
    from mpi4py import MPI
    sizes = NETWORKS[name]
    rng = np.random.default_rng(0)
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        params += [(rng.standard_normal((n_out, n_in)) * np.sqrt(2 / n_in)).astype(np.float32),
                   np.zeros(n_out, np.float32)]
    x = rng.random((batch * steps, sizes[0])).astype(np.float32)
    y = rng.integers(0, sizes[-1], batch * steps).astype(np.int32)
    loss, names = network(sizes), ["W1", "b1", "W2", "b2", "W3", "b3"]
    step = diffc.train_step(loss, names, diffc.SGD(lr=0.01))
    start = [p.copy() for p in params]
    step.fit(*[p.copy() for p in params], x[:2 * batch], y[:2 * batch], batch_size=batch,
             comm=comm)  # compiles the gradient and update programs
    runs = [timed(comm, lambda: step.fit(*params, x, y, batch_size=batch, shuffle=False,
                                         comm=comm)) for _ in range(REPEAT)]
    part = batch // comm.Get_size()  # each rank's compute alone, all ranks at once
    alone = [timed(comm, lambda: step.fit(*params, x[:part * steps], y[:part * steps],
                                          batch_size=part, shuffle=False, comm=MPI.COMM_SELF))
             for _ in range(REPEAT)]
    count = sum(p.size for p in params) + 1
    buffer = np.zeros(count, np.float32)
    allreduce = min(timed(comm, lambda: [comm.Allreduce(MPI.IN_PLACE, buffer, op=MPI.SUM)
                                         for _ in range(50)])[1] / 50 for _ in range(REPEAT))
    row = {"network": name, "batch": batch, "params": count - 1, "ranks": comm.Get_size(),
           "comm_ms": min(t for _, t in runs) / steps * 1e3, "allreduce_ms": allreduce * 1e3,
           "alone_ms": min(t for _, t in alone) / steps * 1e3}
    if comm.Get_rank() == 0:  # the reference: single-process fit, alone on the machine
        single = diffc.train_step(loss, names, diffc.SGD(lr=0.01)).compile()
        fused = [timed(None, lambda: single.fit(*[p.copy() for p in start], x, y,
                                                batch_size=batch, shuffle=False))
                 for _ in range(REPEAT)]
        row["fused_ms"] = min(t for _, t in fused) / steps * 1e3
        expected, losses = fused[0][0], runs[0][0]
        row["error"] = float(np.max(np.abs(losses - expected) / np.abs(expected)))
    comm.Barrier()
    return row


def timed(comm, run) -> tuple:
    """run()'s result and seconds: on comm's ranks (after a barrier), the slowest rank's."""
    from mpi4py import MPI
    if comm is not None:
        comm.Barrier()
    begin = time.perf_counter()
    result = run()
    seconds = time.perf_counter() - begin
    return result, seconds if comm is None else comm.allreduce(seconds, op=MPI.MAX)


def worker(quick: bool) -> None:
    from mpi4py import MPI
    comm = MPI.COMM_WORLD
    rows = []
    for name, batches in BATCHES.items():
        for batch in batches:
            work = batch * sum(a * b for a, b in zip(NETWORKS[name], NETWORKS[name][1:],
                                                     strict=False))
            steps = max(5, min(400, int((2e9 if quick else 2e10) / (6 * work))))
            rows.append(measure(comm, name, batch, steps))
    if comm.Get_rank() == 0:
        print(json.dumps(rows))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps")
    parser.add_argument("--ranks", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args.quick)
        return 0
    mpiexec = Path(sys.executable).parent / "mpiexec"
    results = {}
    for ranks in args.ranks:
        command = [str(mpiexec), "-n", str(ranks), sys.executable, os.path.abspath(__file__),
                   "--worker"] + (["--quick"] if args.quick else [])
        env = dict(os.environ, DIFFC_NUM_THREADS="1", OMP_NUM_THREADS="1")
        out = subprocess.run(command, capture_output=True, text=True, env=env)
        if out.returncode != 0:
            print(out.stderr, file=sys.stderr)
            return 1
        for row in json.loads(out.stdout.strip().splitlines()[-1]):
            results[row["network"], row["batch"], ranks] = row
    failed = report(results, args.ranks)
    if 1 in args.ranks:
        model(results)
    return failed


def report(results: dict, ranks: list[int]) -> int:
    """The table; 1 if a loss check failed."""
    failed = False
    heads = "".join(f"{f'{p} rank' + ('s' if p > 1 else ''):>10}{'speedup':>8}"
                    f"{'compute':>9}{'allreduce':>10}" for p in ranks)
    print(f"{'network':8}{'batch':>6}{'params':>10}{'MB':>6}{'fit 1p':>9}{heads}  loss check")
    for name, batches in BATCHES.items():
        for batch in batches:
            rows = [results[name, batch, p] for p in ranks]
            fused = rows[0]["fused_ms"]
            line = (f"{name:8}{batch:6d}{rows[0]['params']:10,d}"
                    f"{rows[0]['params'] * 4 / 1e6:6.1f}{fused:9.3f}")
            worst = max(r["error"] for r in rows)
            for r in rows:
                ok = r["error"] <= TOLERANCE
                failed |= not ok
                line += (f"{r['comm_ms']:10.3f}{fused / r['comm_ms']:7.2f}x"
                         if ok else f"{'MISMATCH':>10}{'-':>8}")
                line += f"{r['alone_ms']:9.3f}{r['allreduce_ms']:10.3f}"
            print(f"{line}  max rel diff {worst:.1e} (limit {TOLERANCE:.0e})")
    print("ms per step; fit 1p = single-process fit (the fused native loop); N rank(s) = "
          "fit(comm=...) under mpiexec -n N,\nthe slowest rank; speedup = fit 1p / that; "
          "compute = each rank's share (batch / N) trained alone, all N at once;\n"
          "allreduce = one Allreduce of the gradient buffer (params + 1 floats) on N ranks")
    return 1 if failed else 0


def model(results: dict) -> None:
    """The predicted efficiency of P machines, from the one-rank measurements."""
    print(f"\npredicted efficiency (speedup / P) at global batch B; T_c(b) = c0 + c1 b, T_o "
          f"measured\n{'network':8}{'B':>6} {'link':15}" +
          "".join(f"{f'P={p}':>7}" for p in MODEL_RANKS))
    for name, batches in BATCHES.items():
        rows = [results[name, b, 1] for b in batches]
        times = [r["fused_ms"] * 1e-3 for r in rows]  # the line through the end points:
        c1 = (times[-1] - times[0]) / (batches[-1] - batches[0])  # per sample
        c0 = max(times[0] - c1 * batches[0], 0.0)  # per step
        overhead = max(rows[0]["comm_ms"] - rows[0]["fused_ms"], 0.0) * 1e-3
        size = (rows[0]["params"] + 1) * 4

        def compute(b, c0=c0, c1=c1):
            return c0 + c1 * b
        print(f"{name}: T_c(b) = {c0 * 1e3:.3f} ms + {c1 * 1e6:.2f} us * b, T_o = "
              f"{overhead * 1e3:.3f} ms, gradient {size / 1e6:.2f} MB")
        for batch in MODEL_BATCHES:
            for link, (bandwidth, latency) in LINKS.items():
                cells = ""
                for p in MODEL_RANKS:
                    ring = 2 * (p - 1) / p * size / bandwidth + 2 * (p - 1) * latency
                    step = compute(batch / p) + overhead + ring
                    cells += f"{compute(batch) / (p * step):7.0%}"
                print(f"{'':8}{batch:6d} {link:15}{cells}")


if __name__ == "__main__":
    sys.exit(main())
