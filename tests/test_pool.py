"""The worker pool itself: every part of a region runs once, on as many threads as asked for
(the caller's among them), regions below the threshold on the caller alone, concurrent
callers are served, and the pool is built for the systems it supports.

The pool is called directly (from Python, through ctypes, with Python tasks) at the address a
compiled program's parallel hook holds.
"""
import ctypes
import json
import os
import subprocess
import sys
import threading
import time

import pytest
from models import pool_dispatcher, run_in_threads

import diffc

TASK = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64)


@pytest.fixture(autouse=True)
def keep_count():
    before = diffc.get_num_threads()
    yield
    diffc.set_num_threads(before)


@pytest.fixture(scope="module")
def dispatcher():
    return pool_dispatcher()


class Recorder:
    """A task recording which thread ran each part (optionally taking `pause` seconds)."""

    def __init__(self, pause: float = 0.0):
        self.pause, self.runs, self.lock = pause, [], threading.Lock()
        self.task = TASK(self.run)

    def run(self, ctx, part):
        if self.pause:
            time.sleep(self.pause)
        with self.lock:
            self.runs.append((ctx or 0, part, threading.get_native_id()))


@pytest.mark.parametrize("count, parts", [(2, 1), (2, 2), (2, 7), (3, 16), (5, 3), (1, 9)])
def test_pool_runs_every_part_once_on_the_threads_asked_for(dispatcher, count, parts):
    diffc.set_num_threads(count)
    recorder = Recorder(pause=0.03)  # long enough for a worker to join (on a busy machine)
    dispatcher(recorder.task, None, parts, 10 ** 9)
    assert sorted(p for _, p, _ in recorder.runs) == list(range(parts))
    used = {t for _, _, t in recorder.runs}
    assert (len(used) >= 2 if min(count, parts) >= 2 else used == {threading.get_native_id()})
    assert len(used) <= min(count, parts)


THRESHOLD_SCRIPT = """
import ctypes, json, sys, threading, time
sys.path.insert(0, sys.argv[1])
import diffc
from models import pool_dispatcher
parallel = pool_dispatcher()
diffc.set_num_threads(2)
used = {}
def run(ctx, part):
    time.sleep(0.03)
    used.setdefault(ctx, set()).add(threading.get_native_id())
task = ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_int64)(run)
for work in (999, 1000):
    parallel(task, work, 4, work)
print(json.dumps({work: len(threads) for work, threads in used.items()}))
"""


def test_regions_below_the_threshold_run_on_the_caller():
    """With DIFFC_PARALLEL_MIN_WORK=1000, a region of work 999 runs on its caller alone and
    one of 1000 on the pool."""
    environ = dict(os.environ, DIFFC_PARALLEL_MIN_WORK="1000")
    folder = os.path.dirname(os.path.abspath(__file__))
    done = subprocess.run([sys.executable, "-c", THRESHOLD_SCRIPT, folder], env=environ,
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == {"999": 1, "1000": 2}


def test_pool_serves_concurrent_callers(dispatcher):
    """Python threads calling the pool at once (one runs on it, the others inline)."""
    diffc.set_num_threads(2)
    recorder, calls = Recorder(), 30

    def call(caller):
        for c in range(calls):
            dispatcher(recorder.task, caller * calls + c + 1, 9, 10 ** 9)

    run_in_threads(call, 4)
    by_call: dict[int, list[int]] = {}
    for ctx, part, _ in recorder.runs:
        by_call.setdefault(ctx, []).append(part)
    assert sorted(by_call) == list(range(1, 4 * calls + 1))
    assert all(sorted(parts) == list(range(9)) for parts in by_call.values())


def test_the_pool_is_built_for_linux_on_x86_64_and_aarch64_only():
    import llvmlite.binding as llvm

    from diffc.compiler import pool
    from diffc.compiler.llvm import compile_module
    from diffc.compiler.target import Target
    llvm.initialize_all_targets()
    llvm.initialize_all_asmprinters()
    arm = Target("aarch64-unknown-linux-gnu", "generic", "+neon")
    assert pool.supported(arm)
    assert "llvm.aarch64.hint" in compile_module(pool.build(arm), arm).llvm_ir
    for triple in ("x86_64-apple-darwin", "x86_64-pc-windows-msvc", "riscv64-unknown-linux-gnu"):
        assert not pool.supported(Target(triple, "generic", ""))
