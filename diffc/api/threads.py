"""`diffc.set_num_threads` / `diffc.get_num_threads`, and starting the worker pool.

Input: a thread count (default `DIFFC_NUM_THREADS`, else the cores this process may run on).
Output: the count native code uses from its next parallel region on (runtime/threads.py).
Invariants: results (losses, params, gradients) are bit-identical for every count. The pool
(compiler/pool.py) is compiled and linked on the first compile of the process
(`start_pool`, from `CompiledFunction.compile`); its threads start on the first region that
wants them, and park when idle. Code loaded with `diffc.load` (which compiles nothing) uses the
pool when this process has started it before the load, else runs on one thread.
"""
from __future__ import annotations

import threading
import warnings

from ..runtime import threads
from ..runtime.call import check_count


def set_num_threads(n: int) -> None:
    """Run native code on up to n threads (the caller's included) from now on."""
    threads.set_count(check_count("n", n, 1))


def get_num_threads() -> int:
    """The number of threads native code runs on, the caller's included."""
    return threads.count()


_unavailable = False  # the pool cannot run here: programs run on the calling thread
_starting = threading.Lock()  # one pool per process, whichever threads compile at once


def start_pool() -> None:
    """Compile (or take from the cache) and link the worker pool, once per process; on targets
    it does not support, or if this process's libc lacks what it calls, programs keep running
    on the calling thread. A bad DIFFC_NUM_THREADS or DIFFC_PARALLEL_MIN_WORK is an
    ArgumentError, raised before anything is linked."""
    with _starting:
        if not (threads.attached() or _unavailable):
            _start()


def _start() -> None:
    global _unavailable
    threads.settings()
    from ..compiler import llvm, pipeline, pool  # imports llvmlite: only when compiling
    target = llvm.host_target()
    _unavailable = not pool.supported(target)
    if _unavailable:
        return
    try:
        handle, addresses = llvm.link(pipeline.pool_object(target), list(pool.SYMBOLS),
                                      "diffc_pool", libc=True)
    except RuntimeError as e:  # a symbol the pool calls is missing from this process
        warnings.warn(f"diffc: the worker pool could not be linked, native code runs on one "
                      f"thread ({e})", RuntimeWarning, stacklevel=4)
        _unavailable = True
        return
    threads.attach(handle, addresses[pool.PARALLEL_SYMBOL], addresses[pool.THREADS_SYMBOL],
                   addresses[pool.MIN_WORK_SYMBOL])
