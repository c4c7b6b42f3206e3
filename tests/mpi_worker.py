"""The program that tests/test_distributed.py runs under `mpiexec -n P`: one scenario per run,
named by argv[1]. Every rank writes its findings to argv[2]/rank<r>.json; the test reads them.
The single-process references are computed here, on every rank, in the same process."""
import hashlib
import json
import os
import signal
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from models import MLP, SMALL_NETS, SMALL_PARAMS, init, small_batch_net  # noqa: E402
from mpi4py import MPI  # noqa: E402

import diffc  # noqa: E402
from diffc import f32, f64  # noqa: E402

COMM = MPI.COMM_WORLD
RANK = COMM.Get_rank()
OPTIMIZERS = {"sgd": lambda: diffc.SGD(0.1),
              "momentum": lambda: diffc.SGD(0.1, momentum=0.9, nesterov=True, weight_decay=0.01),
              "adam": lambda: diffc.Adam(0.01)}


def problem(dt, n=37, seed=0, hidden=16):
    """Params (the same on every rank), data and the fixed gain of the small net."""
    rng = np.random.default_rng(seed)
    params = init(rng, [12, hidden, 5], dt.np_dtype)
    X = rng.standard_normal((n, 12)).astype(dt.np_dtype)
    return params, X, rng.integers(0, 5, n).astype(np.int32), 0.7


def digest(arrays) -> str:
    return hashlib.sha256(b"".join(np.ascontiguousarray(a).tobytes() for a in arrays)).hexdigest()


def rel(a, b) -> float:
    return float(np.linalg.norm(np.asarray(a, np.float64) - b) / max(np.linalg.norm(b), 1e-300))


def trajectories():
    """fit(comm=...) against single-process fit: every optimizer, dtype and data mode."""
    return [trajectory(dt, name, sharded) for dt in (f64, f32) for name in OPTIMIZERS
            for sharded in (False, True)]


def trajectory(dt, optimizer: str, sharded: bool) -> dict:
    """37 samples in batches of 12 (the last of one row: with 2 or 3 ranks, some have none),
    2 epochs, a callback every 2 steps."""
    params, X, y, gain = problem(dt)
    options = dict(batch_size=12, epochs=2, seed=5, callback_every=2)
    reference = [p.copy() for p in params]
    single = diffc.train_step(SMALL_NETS[dt], SMALL_PARAMS, OPTIMIZERS[optimizer]())
    calls, seen = [], []
    single_losses = single.fit(*reference, gain, X, y, callback=lambda *a: calls.append(a),
                               **options)
    mine = [p.copy() if RANK == 0 else p + 1 for p in params]  # rank 0's are broadcast
    step = diffc.train_step(SMALL_NETS[dt], SMALL_PARAMS, OPTIMIZERS[optimizer]())
    data = [diffc.distributed.shard(a, COMM) for a in (X, y)] if sharded else [X, y]
    losses = step.fit(*mine, gain, *data, comm=COMM, sharded=sharded,
                      callback=lambda *a: seen.append(a), **options)
    states = zip(step.state.values(), single.state.values(), strict=True)
    return {"dtype": dt.name, "optimizer": optimizer, "sharded": sharded,
            "loss_error": rel(losses, single_losses),
            "param_error": max(rel(a, b) for a, b in zip(mine, reference, strict=True)),
            "state_error": max([rel(a, b) for a, b in states] or [0.0]),
            "steps": [len(losses), step.steps, single.steps],
            "callbacks": [len(seen), len(calls), [s[:2] for s in seen] == [c[:2] for c in calls],
                          rel([s[2] for s in seen], [c[2] for c in calls])],
            "fit_losses": bool(np.array_equal(step.fit_losses, losses)),
            "digest": digest(mine + list(step.state.values()) + [losses])}


def refused(case, fit):
    """Run a fit that every rank must refuse; what this rank raised."""
    try:
        fit()
    except Exception as e:
        return {"case": case, "error": type(e).__name__, "message": str(e)}
    return {"case": case, "error": None}


def mismatches():
    """Setups that differ across ranks, and a bad argument on one rank: errors on every rank,
    after which the ranks go on together."""
    params, X, y, gain = problem(f64)
    out = []

    def fit(net=SMALL_NETS[f64], optimizer=None, data=(X, y), sizes=params, **options):
        step = diffc.train_step(net, SMALL_PARAMS, optimizer or diffc.SGD(0.1))
        return step.fit(*[p.copy() for p in sizes], gain, *data, comm=COMM, **options)

    other = RANK == COMM.Get_size() - 1  # the rank that differs
    out.append(refused("rows", lambda: fit(data=(X[:-1], y[:-1]) if other else (X, y))))
    out.append(refused("data", lambda: fit(data=(X + 1, y) if other else (X, y))))
    out.append(refused("batch_size", lambda: fit(batch_size=8 if other else 12)))
    out.append(refused("seed", lambda: fit(seed=int(other))))
    out.append(refused("optimizer", lambda: fit(
        optimizer=diffc.Adam(0.01) if other else diffc.SGD(0.1))))
    wider = problem(f64, hidden=17)[0]
    out.append(refused("shapes", lambda: fit(net=small_batch_net(f64, 17) if other else
                                             SMALL_NETS[f64], sizes=wider if other else params)))
    out.append(refused("same_shards", lambda: fit(sharded=True)))
    out.append(refused("bad_input", lambda: fit(data=(X.astype(np.float32) if other else X, y))))
    out.append(refused("per_sample", lambda: diffc.train_step(MLP[f64], ["W1", "b1", "W2", "b2"])
                       .fit(*init(np.random.default_rng(0), [784, 128, 10], np.float64),
                            np.zeros((4, 784)), np.zeros((4, 10)), comm=COMM)))
    # a callback raising on one rank: every rank raises after it, at the same step
    step = diffc.train_step(SMALL_NETS[f64], SMALL_PARAMS, diffc.SGD(0.1))
    mine = [p.copy() for p in params]

    def callback(i, epoch, loss):
        if other and i == 3:
            raise ValueError("stop here")
    result = refused("callback", lambda: step.fit(*mine, gain, X, y, comm=COMM, batch_size=4,
                                                  callback=callback, callback_every=1))
    result["steps"] = step.steps
    out.append(result)
    # the ranks are still together: a fit now works, and the params agree
    losses = step.fit(*mine, gain, X, y, comm=COMM, batch_size=8)
    out.append({"case": "after", "steps": step.steps, "digest": digest(mine + [losses])})
    return out


def failing(how):
    """Rank 1 dies (kill: SIGKILL) or is interrupted (interrupt: SIGINT) during a long fit; the
    others must not wait forever."""
    params, X, y, gain = problem(f64, n=64)
    step = diffc.train_step(SMALL_NETS[f64], SMALL_PARAMS, diffc.SGD(0.01))

    def callback(i, epoch, loss):
        if RANK == 1 and i == 5:
            os.kill(os.getpid(), signal.SIGKILL if how == "kill" else signal.SIGINT)
    step.fit(*params, gain, X, y, comm=COMM, batch_size=8, epochs=10 ** 6, callback=callback,
             callback_every=1)
    return [{"finished": True}]


if __name__ == "__main__":
    scenario = sys.argv[1]
    results = {"trajectories": trajectories, "mismatches": mismatches,
               "kill": lambda: failing("kill"), "interrupt": lambda: failing("interrupt")}[
        scenario]()
    with open(os.path.join(sys.argv[2], f"rank{RANK}.json"), "w") as f:
        json.dump(results, f)
