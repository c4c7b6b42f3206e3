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

from ..runtime import threads
from ..runtime.call import check_count


def set_num_threads(n: int) -> None:
    """Run native code on up to n threads (the caller's included) from now on."""
    threads.set_count(check_count("n", n, 1))


def get_num_threads() -> int:
    """The number of threads native code runs on, the caller's included."""
    return threads.count()


def start_pool() -> None:
    """Compile (or take from the cache) and link the worker pool, once per process; on targets
    it does not support, programs keep running on the calling thread."""
    if threads.attached():
        return
    from ..compiler import llvm, pipeline, pool  # imports llvmlite: only when compiling
    target = llvm.host_target()
    if not pool.supported(target):
        return
    handle, addresses = llvm.link(pipeline.pool_object(target), list(pool.SYMBOLS),
                                  "diffc_pool", libc=True)
    threads.attach(handle, addresses[pool.PARALLEL_SYMBOL], addresses[pool.THREADS_SYMBOL],
                   addresses[pool.MIN_WORK_SYMBOL])
