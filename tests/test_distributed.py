"""Data-parallel training over MPI: `fit(..., comm=comm)`.

Multi-process tests run tests/mpi_worker.py under `mpiexec -n P` (the mpiexec of mpich's wheel,
next to this Python) with a timeout, and compare what every rank found with single-process
`fit` computed in the same worker: trajectories for P = 1, 2, 3, setups that differ across
ranks, and ranks that die or are interrupted. They skip, saying why, only where MPI cannot start
here. In-process tests check the pieces: the weighted gradient and update programs against the
fused train step's, the call path into caller-provided buffers, and fit's argument checks with
a one-process communicator.
"""
import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from models import SMALL_NETS, SMALL_PARAMS, init
from test_datasets import fake_mnist

import diffc
from diffc import f32, f64
from diffc.core.ir import eval_program
from diffc.passes import dce
from diffc.runtime.distributed import flat_views, split
from diffc.transforms.ad import vjp
from diffc.transforms.optim import train_program, update_program
from diffc.transforms.parallel import weighted_grad_program

WORKER = Path(__file__).with_name("mpi_worker.py")
EXAMPLE = Path(__file__).parents[1] / "examples" / "distributed_mlp.py"
MPIEXEC = Path(sys.executable).parent / "mpiexec"
TOLERANCE = {"f64": 1e-12, "f32": 1e-5}  # relative: norm of the difference / norm


@pytest.fixture(scope="module")
def mpiexec():
    """The mpiexec that runs this Python's mpi4py, if MPI starts here (else a skip)."""
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        pytest.skip("mpi4py is not installed (pip install -e '.[mpi]')")
    if not MPIEXEC.exists():
        pytest.skip(f"no mpiexec next to {sys.executable} (pip install mpich)")
    probe = [str(MPIEXEC), "-n", "2", sys.executable, "-c",
             "from mpi4py import MPI; MPI.COMM_WORLD.Barrier()"]
    try:
        done = subprocess.run(probe, capture_output=True, text=True, timeout=60)
    except subprocess.TimeoutExpired:
        pytest.skip("MPI cannot start here: a 2-process barrier did not end within 60 s")
    if done.returncode != 0:
        pytest.skip(f"MPI cannot start here: {(done.stderr or done.stdout).strip()[:300]}")
    return MPIEXEC


def launch(command: list, timeout: float) -> tuple[subprocess.CompletedProcess, float]:
    """Run mpiexec's command (in its own session) and the seconds it took; a run past the
    timeout is a hang: mpiexec and its ranks are killed and the test fails."""
    start = time.perf_counter()
    with subprocess.Popen([str(c) for c in command], stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True, start_new_session=True) as process:
        try:
            stdout, stderr = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.communicate()
            pytest.fail(f"{' '.join(map(str, command))} did not end within {timeout} s")
    seconds = time.perf_counter() - start
    return subprocess.CompletedProcess(command, process.returncode, stdout, stderr), seconds


def run_worker(mpiexec, processes: int, scenario: str, folder: Path, timeout: float = 90):
    """Run the worker's scenario on `processes` ranks: (the finished run, every rank's results
    (None for a rank that wrote none), seconds taken)."""
    done, seconds = launch([mpiexec, "-n", processes, sys.executable, WORKER, scenario, folder],
                           timeout)
    results = []
    for r in range(processes):
        path = folder / f"rank{r}.json"
        results.append(json.loads(path.read_text()) if path.exists() else None)
    return done, results, seconds


@pytest.mark.parametrize("processes", [1, 2, 3])
def test_trajectories_equal_single_process(mpiexec, tmp_path, processes):
    done, results, _ = run_worker(mpiexec, processes, "trajectories", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    for rank, rows in enumerate(results):
        assert len(rows) == 12  # f32/f64 x SGD, momentum, Adam x whole data, shards
        for row, first in zip(rows, results[0], strict=True):
            what = f"rank {rank}: {row['dtype']} {row['optimizer']} sharded={row['sharded']}"
            tolerance = TOLERANCE[row["dtype"]]
            assert row["loss_error"] <= tolerance, what
            assert row["param_error"] <= tolerance, what
            assert row["state_error"] <= tolerance, what
            assert row["steps"] == [8, 8, 8], what  # 2 epochs of 37 samples in batches of 12
            seen, expected, same_steps, loss_error = row["callbacks"]
            assert (seen, expected, same_steps) == (4, 4, True) and loss_error <= tolerance, what
            assert row["fit_losses"], what
            assert row["digest"] == first["digest"], f"{what}: differs from rank 0's"


def test_mismatched_setups_error_on_every_rank(mpiexec, tmp_path):
    done, results, _ = run_worker(mpiexec, 3, "mismatches", tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    expected = {"rows": "the number of samples (every rank passes the whole data set, without "
                        "sharded=True) must be the same on every rank, got rank 0: 37, rank 1: "
                        "37, rank 2: 36",
                "data": "the data (a hash of 64 of its rows; shards need sharded=True) "
                        "must be the same on every rank",
                "batch_size": "batch_size must be the same on every rank, got rank 0: 12, "
                              "rank 1: 12, rank 2: 8",
                "seed": "seed must be the same",
                "optimizer": "the optimizer must be the same",
                "shapes": "the step's signature must be the same",
                "same_shards": "sharded: True, but every rank passed the same data (37 "
                               "samples, the same rows)",
                "bad_input": "refused on 1 of 3 ranks: rank 2: ArgumentError: X: expected f64",
                "per_sample": "no batch to split across processes"}
    for rank, rows in enumerate(results):
        by_case = {row["case"]: row for row in rows}
        for case, text in expected.items():
            row = by_case[case]
            assert row["error"] == "ArgumentError" and text in row["message"], (rank, row)
            assert row["message"] == results[0][rows.index(row)]["message"]  # the same error
        # a callback raising on rank 2 only: every rank raises after the same step
        callback = by_case["callback"]
        assert callback["steps"] == 4
        if rank == 2:
            assert (callback["error"], callback["message"]) == ("ValueError", "stop here")
        else:
            assert callback["error"] == "RuntimeError"
            assert "rank 2: ValueError: stop here" in callback["message"]
        assert by_case["after"]["steps"] == 9  # and the ranks went on together
        assert by_case["after"]["digest"] == results[0][-1]["digest"]


@pytest.mark.parametrize("how", ["kill", "interrupt"])
def test_a_failing_rank_ends_the_job(mpiexec, tmp_path, how):
    """Rank 1 is killed (SIGKILL) or interrupted (SIGINT: a KeyboardInterrupt) at its 6th step
    of a fit that would run for minutes: every rank ends within seconds, none finishes."""
    done, results, seconds = run_worker(mpiexec, 2, how, tmp_path, timeout=60)
    assert done.returncode != 0
    assert results == [None, None]
    assert seconds < 30
    if how == "interrupt":
        assert "KeyboardInterrupt" in done.stderr
        assert "rank 1 of 2 stopped fit(comm=...)" in done.stderr
        assert "MPI_Abort" in done.stderr


def test_example_trains_like_one_process(mpiexec, tmp_path):
    """examples/distributed_mlp.py on 2 ranks (on a small fake MNIST) prints the accuracy that
    the same training in one process reaches, and params identical on both ranks."""
    fake_mnist(tmp_path / "mnist", 150, 40)
    done, _ = launch([mpiexec, "-n", 2, sys.executable, EXAMPLE, tmp_path / "mnist", "--epochs",
                      2, "--batch-size", 16, "--compare"], timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert "MNIST: 150 training and 40 test images; 2 processes, global batch 16" in out
    assert "params identical on all 2 ranks: yes" in out
    epochs = re.findall(r"^epoch +\d+  loss (\d+\.\d{4})  test accuracy (\d+\.\d\d%)$", out,
                        re.MULTILINE)
    assert len(epochs) == 2
    loss, accuracy = epochs[-1]
    alone = re.search(r"in one process: test accuracy (\S+), loss (\S+); largest relative param "
                      r"difference (\S+)$", out, re.MULTILINE)
    assert alone is not None, out
    assert alone[1] == accuracy and alone[2] == loss and float(alone[3]) < 1e-5


# ------------------------------------------------------------------ in one process

def small_problem(dt, n=21):
    rng = np.random.default_rng(1)
    params = init(rng, [12, 16, 5], dt.np_dtype)
    X = rng.standard_normal((n, 12)).astype(dt.np_dtype)
    return params, X, rng.integers(0, 5, n).astype(np.int32), 0.7


@pytest.mark.parametrize("dt", [f64, f32])
def test_weighted_gradient_program(dt):
    """weight * (loss, gradients), against value_and_grad of the same function."""
    net = SMALL_NETS[dt]
    params, X, y, gain = small_problem(dt)
    indices = list(range(len(SMALL_PARAMS)))
    program = weighted_grad_program(net.program, indices, dt)
    assert program.inputs[-1].type == dt[()]  # the weight
    loss, grads = diffc.value_and_grad(net, SMALL_PARAMS)(*params, gain, X, y)
    out = eval_program(program, *params, gain, X, y, 0.25)
    assert np.isclose(out[0], 0.25 * loss, rtol=TOLERANCE[dt.name])
    for got, g in zip(out[1:], grads, strict=True):
        np.testing.assert_allclose(got, 0.25 * g, rtol=TOLERANCE[dt.name] * 10,
                                   atol=TOLERANCE[dt.name] * np.abs(g).max())


@pytest.mark.parametrize("optimizer", [diffc.SGD(0.1, momentum=0.9, weight_decay=0.01),
                                       diffc.Adam(0.01)])
def test_update_program_is_the_train_steps_update(optimizer):
    """update_program applied to the gradients updates params, state and count exactly as
    train_program's fused step does (the same rules, factored out)."""
    net = SMALL_NETS[f64]
    params, X, y, gain = small_problem(f64)
    indices = list(range(len(SMALL_PARAMS)))
    fused = train_program(dce(vjp(net.program, indices)), indices, optimizer)
    state = [np.array([2.0])] + [np.full(p.shape, 0.01) for p in params
                                 for _ in optimizer.state_names]
    fused_args = [p.copy() for p in params] + [gain, X, y, 0.1] + [s.copy() for s in state]
    eval_program(fused, *fused_args)
    _, grads = diffc.value_and_grad(net, SMALL_PARAMS)(*params, gain, X, y)
    update = update_program([v.type for v in net.program.inputs[:4]], optimizer)
    assert update.outputs == ()
    args = [p.copy() for p in params] + list(grads) + [0.1] + [s.copy() for s in state]
    eval_program(update, *args)
    after_fused = fused_args[:4] + fused_args[8:]
    after = args[:4] + args[9:]
    assert after[4][0] == 3.0  # the count
    for a, b in zip(after, after_fused, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-13, atol=1e-15)


def test_split_cuts_like_array_split():
    for n in range(0, 30):
        for parts in range(1, 7):
            cuts = [split(n, parts, r) for r in range(parts)]
            expected = np.array_split(np.arange(n), parts)
            assert [list(range(lo, hi)) for lo, hi in cuts] == [list(e) for e in expected]


def test_flat_views_are_aligned_disjoint_views_of_one_buffer():
    types = [f32[()], f32[3, 5], f32[7], f32[16]]
    buffer, views = flat_views(types, np.float32)
    assert buffer.ctypes.data % 64 == 0 and buffer.flags.c_contiguous
    for v, t in zip(views, types, strict=True):
        assert v.shape == t.shape and v.base is not None and v.flags.c_contiguous
        assert v.ctypes.data % 64 == 0
        assert buffer.ctypes.data <= v.ctypes.data <= v.ctypes.data + v.nbytes <= (
            buffer.ctypes.data + buffer.nbytes)
    for i, v in enumerate(views):
        v[...] = i + 1
    assert buffer.sum() == sum((i + 1) * max(v.size, 1) for i, v in enumerate(views))


def test_call_into_writes_the_callers_buffers():
    """The call path with caller-provided outputs gives what the ordinary call returns."""
    net = SMALL_NETS[f64]
    params, X, y, gain = small_problem(f64)
    vg = diffc.value_and_grad(net, SMALL_PARAMS)
    loss, grads = vg(*params, gain, X, y)
    invoker = vg.native.invoker
    values = [*params, gain, X, y]
    symbols = invoker.check(values)
    dims = tuple(symbols[s] for s in invoker.abi.symbols)
    buffer, outs = flat_views(list(invoker.abi.outputs), np.float64)
    invoker.call_into(values, outs, dims)
    assert outs[0][()] == loss
    for got, g in zip(outs[1:], grads, strict=True):
        np.testing.assert_array_equal(got, g)


@pytest.fixture(scope="module")
def comm_self():
    MPI = pytest.importorskip("mpi4py.MPI", reason="mpi4py is not installed "
                              "(pip install -e '.[mpi]')")
    return MPI.COMM_SELF


def test_one_process_communicator_equals_fit(comm_self):
    params, X, y, gain = small_problem(f32)
    reference = [p.copy() for p in params]
    step = diffc.train_step(SMALL_NETS[f32], SMALL_PARAMS, diffc.Adam(0.01))
    expected = step.fit(*reference, gain, X, y, batch_size=4, epochs=2, drop_last=True)
    step.reset()
    shards = [diffc.distributed.shard(a, comm_self) for a in (X, y)]
    assert all(s.base is a for s, a in zip(shards, (X, y), strict=True))  # views, the whole
    losses = step.fit(*params, gain, *shards, batch_size=4, epochs=2, drop_last=True,
                      comm=comm_self, sharded=True)
    assert len(losses) == 10 and step.steps == 10
    np.testing.assert_allclose(losses, expected, rtol=1e-6)
    for a, b in zip(params, reference, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7)


def test_fit_comm_arguments(comm_self, tmp_path):
    params, X, y, gain = small_problem(f64)
    step = diffc.train_step(SMALL_NETS[f64], SMALL_PARAMS)
    with pytest.raises(diffc.ArgumentError, match="comm: expected an mpi4py communicator"):
        step.fit(*params, gain, X, y, comm=3)
    with pytest.raises(diffc.ArgumentError, match="comm: expected an mpi4py communicator.*"
                                                   "None"):
        step.fit(*params, gain, X, y, sharded=True)
    with pytest.raises(diffc.ArgumentError, match="sharded: expected True or False"):
        step.fit(*params, gain, X, y, comm=comm_self, sharded="yes")
    with pytest.raises(diffc.ArgumentError, match="X: expected a numpy array"):
        diffc.distributed.shard([1, 2], comm_self)
    with pytest.raises(diffc.ArgumentError, match="comm: expected an mpi4py"):
        diffc.distributed.shard(X, "world")
    step.export(str(tmp_path / "step"))
    loaded = diffc.load(str(tmp_path / "step"))
    with pytest.raises(diffc.ArgumentError, match="loaded from an export"):
        loaded.fit(*params, gain, X, y, comm=comm_self)
    before = [p.copy() for p in params]
    with pytest.raises(diffc.ArgumentError, match="batch_size: expected an int >= 1"):
        step.fit(*params, gain, X, y, comm=comm_self, batch_size=0)
    assert all(np.array_equal(a, b) for a, b in zip(params, before, strict=True))
    assert step.steps == 0


def test_mpi_is_imported_only_by_the_distributed_path():
    code = ("import sys, numpy as np, diffc\n"
            "from diffc import f64\n"
            "@diffc.function\n"
            "def f(w: f64[3], x: f64['B', 3]) -> f64:\n"
            "    return ((x * w) ** 2).mean()\n"
            "s = diffc.train_step(f, ['w'])\n"
            "s.fit(np.ones(3), np.ones((5, 3)))\n"
            "assert 'mpi4py' not in sys.modules, 'mpi4py imported'\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          timeout=120, env={**os.environ, "DIFFC_CACHE": "0"})
    assert done.returncode == 0, done.stderr[-2000:]
