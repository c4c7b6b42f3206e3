"""Threads: `set_num_threads` / `get_num_threads`, results bit-identical for every thread count,
an idle pool costs no CPU, a forked child, Python threads training at once, loaded code on the
pool and exported code on a C program's own threads (the pool itself: test_pool.py).

The test session runs every region of more than one part on the pool (conftest.py sets
DIFFC_PARALLEL_MIN_WORK=0), so the small networks here run threaded.
"""
import ctypes
import json
import os
import shutil
import subprocess
import sys
import time

import numpy as np
import pytest
from models import BATCH_NETS, MLP, init, pool_dispatcher, run_in_threads

import diffc
from diffc import ArgumentError, f32, f64, i32, nn

COUNTS = (1, 2, 3)
HAVE_PROC = os.path.isdir("/proc/self/task")


@pytest.fixture(autouse=True)
def keep_count():
    before = diffc.get_num_threads()
    yield
    diffc.set_num_threads(before)


def same_bits(a, b) -> bool:
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def workers() -> list[str]:
    """The ids of this process's pool workers (threads named diffc-worker)."""
    tasks = os.listdir("/proc/self/task")
    return [t for t in tasks if open(f"/proc/self/task/{t}/comm").read().strip() ==
            "diffc-worker"]


# ----------------------------------------------------------------------------- the count

@pytest.mark.parametrize("bad", [0, -2, 1.5, "2", True, None, np.float64(2.0)])
def test_set_num_threads_refuses_what_is_not_a_count(bad):
    diffc.set_num_threads(2)
    with pytest.raises(ArgumentError, match=r"^n: expected an int >= 1, got "):
        diffc.set_num_threads(bad)
    assert diffc.get_num_threads() == 2


def test_set_num_threads_takes_ints():
    diffc.set_num_threads(3)
    assert diffc.get_num_threads() == 3
    diffc.set_num_threads(np.int64(1))
    assert diffc.get_num_threads() == 1 and type(diffc.get_num_threads()) is int


COUNT_SCRIPT = """
import json, os, sys
if sys.argv[1] == "one core":
    os.sched_setaffinity(0, sorted(os.sched_getaffinity(0))[:1])
import diffc
try:
    print(json.dumps([diffc.get_num_threads(), len(os.sched_getaffinity(0))]))
except diffc.ArgumentError as e:
    print(json.dumps(str(e)))
"""


@pytest.mark.skipif(not hasattr(os, "sched_getaffinity"), reason="no affinity on this OS")
@pytest.mark.parametrize("env, affinity, expected", [
    ("3", "all", 3), (None, "all", "cores"), (None, "one core", 1), ("1", "all", 1),
    ("0", "all", "DIFFC_NUM_THREADS: expected an int >= 1, got '0'"),
    ("two", "all", "DIFFC_NUM_THREADS: expected an int >= 1, got 'two'")])
def test_default_count_is_the_env_var_else_the_cores_we_may_use(env, affinity, expected):
    environ = {k: v for k, v in os.environ.items() if k != "DIFFC_NUM_THREADS"}
    if env is not None:
        environ["DIFFC_NUM_THREADS"] = env
    done = subprocess.run([sys.executable, "-c", COUNT_SCRIPT, affinity], env=environ,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    got = json.loads(done.stdout.splitlines()[-1])
    if expected == "cores":
        assert got[0] == got[1]
    else:
        assert got == expected if isinstance(expected, str) else got[0] == expected


# ----------------------------------------------------------------------------- bit-identical

def per_sample_run(dt, count):
    """fit over 24 samples, then 4 step() calls, on `count` threads: losses and params."""
    diffc.set_num_threads(count)
    rng = np.random.default_rng(7)
    params = init(rng, [784, 128, 10], dt.np_dtype)
    x = rng.random((24, 784)).astype(dt.np_dtype)
    y = np.eye(10, dtype=dt.np_dtype)[rng.integers(0, 10, 24)]
    step = diffc.train_step(MLP[dt], ["W1", "b1", "W2", "b2"], diffc.SGD(lr=0.05))
    losses = list(step.fit(*params, x, y, seed=3))
    losses += [step(*params, x[i], y[i]) for i in range(4)]
    return losses, params


@pytest.mark.parametrize("dt", [f64, f32])
def test_per_sample_training_is_bit_identical_for_every_count(dt):
    """W1 (the per-sample network, whose fit fuses each sample's update with the next
    sample's forward product, rows split across threads): fit and step() calls."""
    first, *others = [per_sample_run(dt, n) for n in COUNTS]
    for other in others:
        assert all(same_bits(a, b) for a, b in zip(first[0], other[0], strict=True))
        assert all(same_bits(a, b) for a, b in zip(first[1], other[1], strict=True))


def batch_run(dt, count, optimizer):
    """fit over 200 samples in batches of 48 (the last one of 8) on `count` threads, then the
    value and gradients at the result: losses, params, loss, gradients."""
    diffc.set_num_threads(count)
    rng = np.random.default_rng(11)
    params = init(rng, [784, 128, 64, 10], dt.np_dtype)
    x = rng.random((200, 784)).astype(dt.np_dtype)
    labels = rng.integers(0, 10, 200).astype(np.int32)
    names = ["W1", "b1", "W2", "b2", "W3", "b3"]
    step = diffc.train_step(BATCH_NETS[dt], names, optimizer)
    losses = step.fit(*params, x, labels, batch_size=48, epochs=2, seed=5)
    value, grads = diffc.value_and_grad(BATCH_NETS[dt], wrt=names)(*params, x[:100],
                                                                  labels[:100])
    return losses, params, value, grads


@pytest.mark.parametrize("dt", [f64, f32])
@pytest.mark.parametrize("optimizer", [lambda: diffc.SGD(lr=0.05), lambda: diffc.Adam(lr=1e-3)],
                         ids=["sgd", "adam"])
def test_batch_training_is_bit_identical_for_every_count(dt, optimizer):
    """W2 (784 -> 128 -> 64 -> 10 in batches: split GEMMs, fused epilogues and updates,
    bias-gradient sums, row kernels) with SGD and Adam, and its gradients."""
    first, *others = [batch_run(dt, n, optimizer()) for n in COUNTS]
    for other in others:
        assert same_bits(first[0], other[0]) and same_bits(first[2], other[2])
        for a, b in zip(first[1] + list(first[3]), other[1] + list(other[3]), strict=True):
            assert same_bits(a, b)


@pytest.mark.skipif(not HAVE_PROC, reason="no /proc")
def test_the_pool_works_and_is_idle_without_a_call():
    """After training on 3 threads the pool has 2 workers, and a second without calls costs
    the process (all its threads) less than 1% of a core."""
    batch_run(f64, 3, diffc.SGD(lr=0.05))
    assert len(workers()) >= 2
    time.sleep(0.05)  # workers stay hot for a moment after the last region
    before = os.times()
    time.sleep(1.0)
    after = os.times()
    busy = (after.user - before.user) + (after.system - before.system)
    assert busy < 0.01, f"{busy:.3f} s of CPU in an idle second"


FORK_SCRIPT = """
import json, os, sys
sys.path.insert(0, sys.argv[1])
import numpy as np
import diffc
from test_threads import batch_run
diffc.set_num_threads(2)
first = batch_run(diffc.f64, 2, diffc.SGD(lr=0.05))
read, write = os.pipe()
child = os.fork()
if child == 0:  # the pool's workers are not in the child: its regions run on one thread
    again = batch_run(diffc.f64, 2, diffc.SGD(lr=0.05))
    same = again[0].tobytes() == first[0].tobytes() and all(
        a.tobytes() == b.tobytes() for a, b in zip(again[1], first[1]))
    os.write(write, json.dumps(same).encode())
    os._exit(0)
os.close(write)
_, status = os.waitpid(child, 0)
print(json.dumps({"status": status, "same": json.loads(os.read(read, 100))}))
"""


@pytest.mark.skipif(not hasattr(os, "fork"), reason="no fork")
def test_a_forked_child_trains_like_its_parent():
    """A child forked after the pool started (its workers stay in the parent) trains to the
    same bits, on its own thread, without hanging."""
    folder = os.path.dirname(os.path.abspath(__file__))
    done = subprocess.run([sys.executable, "-c", FORK_SCRIPT, folder], capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"status": 0, "same": True}


def test_a_bad_min_work_is_refused_by_name():
    script = ("import diffc\n@diffc.function\ndef f(x: diffc.f64[2]) -> diffc.f64:\n"
              "    return x.sum()\ntry:\n    f.compile()\nexcept diffc.ArgumentError as e:\n"
              "    print(e)\n")
    environ = dict(os.environ, DIFFC_PARALLEL_MIN_WORK="-1", DIFFC_CACHE="0")
    done = subprocess.run([sys.executable, "-c", script], env=environ, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "DIFFC_PARALLEL_MIN_WORK: expected an int >= 0, got '-1'"


def test_python_threads_training_different_steps_at_once():
    """Three Python threads fitting their own steps while the pool serves one of them at a
    time: each gets what it gets alone."""
    diffc.set_num_threads(2)
    alone = [batch_run(f64, 2, diffc.SGD(lr=0.01 * (i + 1))) for i in range(3)]
    results = [None] * 3

    def train(i):
        results[i] = batch_run(f64, 2, diffc.SGD(lr=0.01 * (i + 1)))

    run_in_threads(train, 3)
    for got, expected in zip(results, alone, strict=True):
        assert same_bits(got[0], expected[0])
        assert all(same_bits(a, b) for a, b in zip(got[1], expected[1], strict=True))


# ----------------------------------------------------------------------------- C programs

C_PROGRAM = r"""
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "hooknet.h"

#define B 40
#define STEPS 6
enum { NW1 = 64 * 256, NB1 = 64, NW2 = 10 * 64, NB2 = 10, NX = STEPS * B * 256 };
static double W1[NW1], b1[NB1], W2[NW2], b2[NB2], X[NX];
static int32_t labels[STEPS * B];

typedef void (*task_t)(void *, int64_t);
struct job { task_t task; void *ctx; int64_t parts, first; };
static long calls, helped;

static void *every_other(void *arg) {  /* parts first, first + 2, ... */
    struct job *j = arg;
    for (int64_t p = j->first; p < j->parts; p += 2) j->task(j->ctx, p);
    return NULL;
}

static void two_threads(task_t task, void *ctx, int64_t parts, int64_t work) {
    struct job odd = {task, ctx, parts, 1}, even = {task, ctx, parts, 0};
    pthread_t helper;
    (void)work;
    if (pthread_create(&helper, NULL, every_other, &odd) != 0) exit(3);
    every_other(&even);
    pthread_join(helper, NULL);
    calls++;
    helped += parts > 1;
}

static void train(const char *out) {
    FILE *in = fopen("inputs.bin", "rb");
    if (!in || fread(W1, sizeof W1, 1, in) != 1 || fread(b1, sizeof b1, 1, in) != 1 ||
        fread(W2, sizeof W2, 1, in) != 1 || fread(b2, sizeof b2, 1, in) != 1 ||
        fread(X, sizeof X, 1, in) != 1 || fread(labels, sizeof labels, 1, in) != 1) exit(2);
    fclose(in);
    void *workspace = aligned_alloc(64, (diffc_train_step_hooknet_workspace_size(B) + 63) & -64);
    double losses[STEPS], count[1] = {0};
    for (int s = 0; s < STEPS; s++)
        diffc_train_step_hooknet(W1, b1, W2, b2, &X[s * B * 256], &labels[s * B], 0.1, count,
                                 &losses[s], B, workspace);
    free(workspace);
    FILE *f = fopen(out, "wb");
    fwrite(losses, sizeof losses, 1, f);
    fwrite(W1, sizeof W1, 1, f); fwrite(b1, sizeof b1, 1, f);
    fwrite(W2, sizeof W2, 1, f); fwrite(b2, sizeof b2, 1, f);
    fclose(f);
}

int main(void) {
    train("serial.bin");
    diffc_train_step_hooknet_parallel = two_threads;
    train("threads.bin");
    printf("%ld %ld\n", calls, helped);
    return 0;
}
"""


@diffc.function(name="hooknet")
def hooknet(W1: f64[64, 256], b1: f64[64], W2: f64[10, 64], b2: f64[10], X: f64["B", 256],
            labels: i32["B"]) -> f64:
    return nn.softmax_cross_entropy(nn.dense(W2, nn.relu(nn.dense(W1, X, b1)), b2), labels)


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler: no .so to load")
def test_loaded_code_runs_on_the_pool(tmp_path):
    """An export loaded in a process that started the pool gets it in its hook, and trains
    to the bits of the step it was exported from."""
    step = diffc.train_step(hooknet, ["W1", "b1", "W2", "b2"], diffc.SGD(lr=0.1))
    step.export(str(tmp_path / "hooknet"))
    loaded = diffc.load(str(tmp_path / "hooknet"))
    native = loaded.native
    hook = native.addresses[native.native.abi.parallel_hook]
    pool = ctypes.cast(pool_dispatcher(), ctypes.c_void_p).value
    assert ctypes.c_void_p.from_address(hook).value == pool
    rng = np.random.default_rng(5)
    params = init(rng, [256, 64, 10], np.float64)
    x, labels = rng.random((200, 256)), rng.integers(0, 10, 200).astype(np.int32)
    diffc.set_num_threads(2)
    results = []
    for s in (step, loaded):
        p = [a.copy() for a in params]
        results.append((s.fit(*p, x, labels, batch_size=40, seed=1), p))
    assert same_bits(results[0][0], results[1][0])
    assert all(same_bits(a, b) for a, b in zip(results[0][1], results[1][1], strict=True))


@pytest.mark.skipif(shutil.which("cc") is None, reason="no C compiler")
def test_exported_code_runs_on_a_c_programs_threads(tmp_path):
    """The header declares the hook; a C program runs the exported step serially and with
    its own two-thread parallel-for in the hook: both equal the step run in Python on the
    pool, bit for bit."""
    names = ["W1", "b1", "W2", "b2"]
    step = diffc.train_step(hooknet, names, diffc.SGD(lr=0.1))
    step.export(str(tmp_path / "hooknet"))
    header = (tmp_path / "hooknet.h").read_text()
    hook = "diffc_train_step_hooknet_parallel"
    assert f"extern void (*{hook})(\n    void (*task)(void *ctx, int64_t part), void *ctx, " \
           "int64_t parts, int64_t work);" in header
    assert "runs on the calling thread alone unless you give it more" in header
    rng = np.random.default_rng(3)
    params = init(rng, [256, 64, 10], np.float64)
    x = rng.random((6 * 40, 256))
    labels = rng.integers(0, 10, 6 * 40).astype(np.int32)
    (tmp_path / "inputs.bin").write_bytes(b"".join(a.tobytes() for a in params + [x, labels]))
    (tmp_path / "main.c").write_text(C_PROGRAM)
    build = subprocess.run(["cc", "-O1", "-pthread", "-o", "main", "main.c", "hooknet.o"],
                           cwd=tmp_path, capture_output=True, text=True)
    assert build.returncode == 0, build.stderr
    done = subprocess.run(["./main"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    calls, helped = map(int, done.stdout.split())
    assert calls > 0 and helped > 0  # the hook was used, with parts for both threads
    diffc.set_num_threads(2)
    losses = [step(*params, x[s * 40:(s + 1) * 40], labels[s * 40:(s + 1) * 40])
              for s in range(6)]
    expected = np.array(losses).tobytes() + b"".join(p.tobytes() for p in params)
    assert (tmp_path / "serial.bin").read_bytes() == expected
    assert (tmp_path / "threads.bin").read_bytes() == expected
