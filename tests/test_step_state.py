"""A train step's state under interrupts and threads: the step count, the optimizer state and
the params always agree, whole steps only.

Each check compares against a replay: a fresh step run for exactly `step.steps` calls from the
same params must give the same params, optimizer state and losses, bit for bit (the same native
code runs). Real SIGINTs interrupt a loop of calls and a long fit in subprocesses; a callback
raising between fit's native chunks stops it as an interrupt would.
"""
import json
import subprocess
import sys

import numpy as np
import pytest
from models import run_in_threads

import diffc
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
    mine = params + list(step.state.values())
    for a, b in zip(mine, other_params + list(other_step.state.values()), strict=True):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- interrupts

CALLS_SCRIPT = """
import json, os, signal, sys, threading, time
import numpy as np
import diffc
from diffc import f64, i32, nn

D, H, C, CALLS = 128, 1024, 3, 3000
armed, caught = [False], []


def handler(signum, frame):  # Ctrl-C's KeyboardInterrupt, once per arming (not in `except`)
    if armed[0]:
        armed[0] = False
        raise KeyboardInterrupt


signal.signal(signal.SIGINT, handler)
sys.setswitchinterval(1000)  # the interrupter runs only while the GIL is released: in native code


@diffc.function
def loss(W1: f64[H, D], b1: f64[H], W2: f64[C, H], x: f64["B", D], y: i32["B"]) -> f64:
    return nn.softmax_cross_entropy(nn.dense(W2, nn.relu(nn.dense(W1, x, b1))), y)


def make():
    return diffc.train_step(loss, ["W1", "b1", "W2"], diffc.Adam(lr=0.01)).compile()


rng = np.random.default_rng(0)
initial = [rng.normal(0, 0.5, s) for s in ((H, D), (H,), (C, H))]
X, Y = rng.standard_normal((CALLS, 8, D)), rng.integers(0, C, (CALLS, 8)).astype(np.int32)
step, params, stop = make(), [p.copy() for p in initial], threading.Event()


def interrupt():  # SIGINTs during native calls: handled as they return
    delays = np.random.default_rng(1)
    while not stop.is_set():
        time.sleep(delays.uniform(0, 2e-3))
        os.kill(os.getpid(), signal.SIGINT)


threading.Thread(target=interrupt, daemon=True).start()
def train():
    while step.steps < CALLS:  # the updates applied so far: the next call takes that sample
        step(*params, X[step.steps], Y[step.steps])


while True:
    try:
        armed[0] = True
        train()
        armed[0] = False
        break
    except KeyboardInterrupt:
        caught.append(step.steps)
stop.set()
time.sleep(0.01)
other, other_params = make(), [p.copy() for p in initial]
for k in range(CALLS):
    other(*other_params, X[k], Y[k])
mine = params + list(step.state.values())
theirs = other_params + list(other.state.values())
print(json.dumps({"interrupts": len(caught), "steps": step.steps,
                  "same": [bool(np.array_equal(a, b)) for a, b in zip(mine, theirs)]}))
"""


def test_interrupted_calls_count_the_updates_they_applied():
    """SIGINTs at random moments of a loop of Adam steps that continues from `steps`: each
    update is applied once, so the result is the uninterrupted run's (a count lagging behind
    an applied update would apply a sample twice, and Adam's moments would not match it)."""
    done = subprocess.run([sys.executable, "-c", CALLS_SCRIPT], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report["interrupts"] >= 20, report
    assert report["steps"] == 3000 and all(report["same"]) and len(report["same"]) == 9, report


class Stop(Exception):
    """What the test's callback raises."""


@pytest.mark.parametrize("error", [KeyboardInterrupt, Stop])
@pytest.mark.parametrize("config", list(OPTIMIZERS))
def test_fit_stopped_by_its_callback_keeps_whole_steps(config, error):
    """A callback raising at its second call (after every 3rd step) stops fit; the params,
    state and count are those of `steps` whole steps and fit_losses holds their losses."""
    calls = []

    def callback(s, epoch, loss):
        calls.append((s, epoch, loss))
        if len(calls) == 2:
            raise error("stopped after a chunk")

    step, params = make_step(config), init_params()
    X, Y = dataset(40)
    with pytest.raises(error):
        step.fit(*params, X, Y, batch_size=4, epochs=2, seed=3, callback=callback,
                 callback_every=3)
    done = step.steps
    assert done == 6 and [c[:2] for c in calls] == [(2, 0), (5, 0)]
    assert step.fit_losses.dtype == np.float64 and len(step.fit_losses) == done
    assert [c[2] for c in calls] == [step.fit_losses[2], step.fit_losses[5]]
    batches = fit_batches(X, Y, 4, 3, 2)
    other, other_params, losses = replay(config, f64, init_params(), batches[:done])
    np.testing.assert_array_equal(step.fit_losses, losses)
    assert_same_state(step, params, other, other_params)
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
mine = params + list(step.state.values())
same = [np.array_equal(a, b) for a, b in zip(mine, other_params + list(other.state.values()))]
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
    assert all(report["same_state"]) and len(report["same_state"]) == 3 + 6, report


# ----------------------------------------------------------------------------- threads

@pytest.mark.parametrize("config", list(OPTIMIZERS))
def test_threads_sharing_a_step_apply_whole_serial_steps(config):
    """8 threads call one step on one batch: every serial order of the calls gives the same
    result, that of as many calls in a row (duplicate step numbers would differ)."""
    threads, calls = 8, 150
    step, params = make_step(config), init_params()
    X, Y = dataset(8)
    step.compile()

    def work(_):
        for _ in range(calls):
            step(*params, X, Y)

    run_in_threads(work, threads)
    assert step.steps == threads * calls
    other, other_params, _ = replay(config, f64, init_params(), [(X, Y)] * (threads * calls))
    assert_same_state(step, params, other, other_params)

