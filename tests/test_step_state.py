"""A train step's state under interrupts and threads: the step count, the optimizer state and
the params always agree, whole steps only.

Each check compares against a replay: a fresh step run for exactly `step.steps` calls from the
same params must give the same params, optimizer state and losses, bit for bit (the same native
code runs). An interrupt arriving right after native code returns is simulated at one seam per
path, wrapped to raise once the real native call is done: the step's compiled program
(`step._compiled`, what a call runs) and `diffc.train._NativeFit.run` (one chunk of fit's
native loop). A real SIGINT stops a long fit in a subprocess.
"""
import json
import subprocess
import sys
import threading

import numpy as np
import pytest

import diffc
import diffc.train
from diffc import f32, f64, i32, nn

D, H, C = 6, 16, 3
PARAMS = ["W1", "b1", "W2"]
OPTIMIZERS = {"adam": lambda: diffc.Adam(lr=0.01, weight_decay=0.01),
              "momentum": lambda: diffc.SGD(lr=0.05, momentum=0.9)}


def _loss(dt):
    @diffc.function(name=f"state_loss_{dt.name}")
    def loss(W1: dt[H, D], b1: dt[H], W2: dt[C, H], x: dt["B", D], y: i32["B"]) -> dt:
        return nn.softmax_cross_entropy(nn.dense(W2, nn.relu(nn.dense(W1, x, b1))), y)
    return loss


LOSSES = {dt: _loss(dt) for dt in (f32, f64)}


def make_step(config, dt=f64):
    return diffc.train_step(LOSSES[dt], PARAMS, OPTIMIZERS[config]())


def init_params(dt=f64, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 0.5, s).astype(dt.np_dtype) for s in ((H, D), (H,), (C, H))]


def dataset(n, dt=f64, seed=1):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((n, D)).astype(dt.np_dtype), rng.integers(0, C, n).astype(np.int32)


def fit_batches(X, Y, batch, seed, epochs):
    """The (x, y) of every step of `fit(..., batch_size=batch, seed=seed, epochs=epochs)`."""
    out = []
    for epoch in range(epochs):
        order = np.random.default_rng([seed, epoch]).permutation(len(X))
        out += [(X[order[s:s + batch]], Y[order[s:s + batch]]) for s in range(0, len(X), batch)]
    return out


def replay(config, dt, initial, batches):
    """A fresh step run once per batch from copies of `initial`: (step, params, losses)."""
    step, params = make_step(config, dt), [p.copy() for p in initial]
    losses = np.array([step(*params, x, y) for x, y in batches], np.float64)
    return step, params, losses


def assert_same_state(step, params, other_step, other_params):
    assert step.steps == other_step.steps
    for a, b in zip(params + step._state, other_params + other_step._state, strict=True):
        np.testing.assert_array_equal(a, b)


class InterruptAfter:
    """A step's compiled program whose calls raise KeyboardInterrupt right after the real call
    returns, as a Ctrl-C arriving then would."""

    def __init__(self, program):
        self.program = program

    def __getattr__(self, name):
        return getattr(self.program, name)

    def __call__(self, *args):
        self.program(*args)
        raise KeyboardInterrupt


# ----------------------------------------------------------------------------- interrupts

@pytest.mark.parametrize("dt", [f32, f64], ids=str)
@pytest.mark.parametrize("config", list(OPTIMIZERS))
def test_interrupted_calls_count_the_updates_they_applied(config, dt):
    """Three calls interrupted as they return, then one more: four whole steps, as four calls
    (Adam's bias corrections use the count, so a count behind the moments shows here)."""
    step, params = make_step(config, dt), init_params(dt)
    X, Y = dataset(16, dt)
    batches = [(X[4 * k:4 * k + 4], Y[4 * k:4 * k + 4]) for k in range(4)]
    compiled = step.compile()._compiled
    step._compiled = InterruptAfter(compiled)
    for k, (x, y) in enumerate(batches[:3]):
        with pytest.raises(KeyboardInterrupt):
            step(*params, x, y)
        assert step.steps == k + 1
    step._compiled = compiled
    loss = step(*params, *batches[3])
    other, other_params, losses = replay(config, dt, init_params(dt), batches)
    assert loss == losses[3] and step.steps == 4
    assert_same_state(step, params, other, other_params)


@pytest.mark.parametrize("error", [KeyboardInterrupt, RuntimeError])
@pytest.mark.parametrize("config", list(OPTIMIZERS))
def test_fit_stopped_after_a_native_chunk_keeps_whole_steps(monkeypatch, config, error):
    """An exception right after fit's second native chunk returns propagates; the params,
    state and count are those of `steps` whole steps and fit_losses holds their losses."""
    real_run, runs = diffc.train._NativeFit.run, []

    def run_then_raise(native, *args):
        real_run(native, *args)
        runs.append(args[1:3])  # (first, last)
        if len(runs) == 2:
            raise error("stopped after a chunk")

    monkeypatch.setattr(diffc.train._NativeFit, "run", run_then_raise)
    step, params = make_step(config), init_params()
    X, Y = dataset(40)
    with pytest.raises(error):
        step.fit(*params, X, Y, batch_size=4, epochs=2, seed=3)
    done = step.steps
    assert done == sum(last - first for first, last in runs) >= 2  # two whole chunks ran
    assert step.fit_losses.dtype == np.float64 and len(step.fit_losses) == done
    batches = fit_batches(X, Y, 4, 3, 2)
    other, other_params, losses = replay(config, f64, init_params(), batches[:done])
    np.testing.assert_array_equal(step.fit_losses, losses)
    assert_same_state(step, params, other, other_params)
    monkeypatch.undo()
    step(*params, *batches[done])  # the count matches the moments: training goes on alike
    other(*other_params, *batches[done])
    assert_same_state(step, params, other, other_params)


def test_fit_losses_are_those_fit_returned():
    step, params = make_step("adam"), init_params()
    assert step.fit_losses.shape == (0,) and step.fit_losses.dtype == np.float64
    X, Y = dataset(10)
    losses = step.fit(*params, X, Y, batch_size=3, epochs=2, seed=4)
    assert losses is step.fit_losses and losses.dtype == np.float64 and losses.shape == (8,)
    _, _, want = replay("adam", f64, init_params(), fit_batches(X, Y, 3, 4, 2))
    np.testing.assert_array_equal(losses, want)


SIGINT_SCRIPT = """
import json, os, signal, sys, threading, time
import numpy as np
import diffc
from diffc import f32, i32, nn

signal.signal(signal.SIGINT, signal.default_int_handler)  # even if started with SIGINT ignored
N, D, H, C, BATCH, SEED = 100000, 64, 4096, 10, 32, 5


@diffc.function
def loss(W1: f32[H, D], b1: f32[H], W2: f32[C, H], x: f32["B", D], y: i32["B"]) -> f32:
    return nn.softmax_cross_entropy(nn.dense(W2, nn.relu(nn.dense(W1, x, b1))), y)


def make():
    return diffc.train_step(loss, ["W1", "b1", "W2"], diffc.Adam(lr=1e-3)).compile()


rng = np.random.default_rng(0)
initial = [(rng.standard_normal(s) * 0.1).astype(np.float32) for s in ((H, D), (H,), (C, H))]
X = rng.standard_normal((N, D)).astype(np.float32)
Y = rng.integers(0, C, N).astype(np.int32)
step, params, sent = make(), [p.copy() for p in initial], []


def interrupt():
    time.sleep(0.5)
    sent.append(time.perf_counter())
    os.kill(os.getpid(), signal.SIGINT)


threading.Thread(target=interrupt, daemon=True).start()
begin = time.perf_counter()
try:
    step.fit(*params, X, Y, batch_size=BATCH, epochs=100, seed=SEED)
    stopped = None
except KeyboardInterrupt:
    stopped = time.perf_counter()
done, per_epoch = step.steps, -(-N // BATCH)
other, other_params, losses = make(), [p.copy() for p in initial], []
for epoch in range(-(-done // per_epoch)):
    order = np.random.default_rng([SEED, epoch]).permutation(N)
    for s in range(min(per_epoch, done - epoch * per_epoch)):
        rows = order[s * BATCH:(s + 1) * BATCH]
        losses.append(other(*other_params, X[rows], Y[rows]))
same = [np.array_equal(a, b) for a, b in zip(params + step._state, other_params + other._state)]
print(json.dumps({"interrupted": stopped is not None, "delay": (stopped or 0) - sent[0],
                  "steps": done, "replayed": other.steps, "fit_losses": len(step.fit_losses),
                  "same_losses": bool(np.array_equal(step.fit_losses, losses)),
                  "same_state": same}))
"""


def test_sigint_stops_a_long_fit_within_a_second_with_whole_steps():
    """Ctrl-C (SIGINT from a timer thread) 0.5 s into a fit whose epochs take seconds: fit
    stops within a second, and params, state and count equal a replay of `steps` calls."""
    done = subprocess.run([sys.executable, "-c", SIGINT_SCRIPT], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["interrupted"], report
    assert report["delay"] < 1.0, report
    assert report["steps"] >= 1 and report["replayed"] == report["steps"], report
    assert report["fit_losses"] == report["steps"] and report["same_losses"], report
    assert all(report["same_state"]) and len(report["same_state"]) == 3 + 1 + 6, report


# ----------------------------------------------------------------------------- threads

@pytest.mark.parametrize("config", list(OPTIMIZERS))
def test_threads_sharing_a_step_apply_whole_serial_steps(config):
    """8 threads call one step on one batch: every serial order of the calls gives the same
    result, that of as many calls in a row (duplicate step numbers would differ)."""
    threads, calls = 8, 150
    step, params = make_step(config), init_params()
    X, Y = dataset(8)
    step.compile()
    start, errors = threading.Barrier(threads), []

    def work():
        try:
            start.wait()
            for _ in range(calls):
                step(*params, X, Y)
        except BaseException as e:  # reported below: a thread's exception is otherwise lost
            errors.append(e)

    pool = [threading.Thread(target=work) for _ in range(threads)]
    for t in pool:
        t.start()
    for t in pool:
        t.join()
    assert errors == []
    assert step.steps == threads * calls
    other, other_params, _ = replay(config, f64, init_params(), [(X, Y)] * (threads * calls))
    assert_same_state(step, params, other, other_params)

