"""How many threads native code runs on, and the worker pool's place in this process.

Input: `DIFFC_NUM_THREADS` (default: the cores this process may run on), `set_num_threads`,
`DIFFC_PARALLEL_MIN_WORK` (the least work a region must have to run on the pool, default
MIN_WORK) and, once the API has linked the pool (compiler/pool.py), the addresses of its
dispatcher and settings. Output: the count, and `install`, which points a program's parallel
hook (compiler/codegen.py `add_hook`) at the pool.
Invariants: the count and the threshold live in the pool's globals once it is attached, so
changing them needs no recompiling and reaches every program; a program linked or loaded before
the pool was attached keeps its serial hook (one thread). Results do not depend on the count.
The pool's code is never unmapped: its workers run it for the rest of the process.
Uses ctypes only.
"""
from __future__ import annotations

import ctypes
import os

from ..core.errors import ArgumentError

MIN_WORK = 65536  # the work (~multiply-adds) below which a region gains nothing on 2 threads
ENV_THREADS, ENV_MIN_WORK = "DIFFC_NUM_THREADS", "DIFFC_PARALLEL_MIN_WORK"

_count: int | None = None  # set_num_threads' count (None: the default)
_pool: dict | None = None  # the pool's addresses, once attached


def default_count() -> int:
    """DIFFC_NUM_THREADS, else the number of cores this process may run on."""
    value = os.environ.get(ENV_THREADS)
    if value is None:
        cores = os.sched_getaffinity(0) if hasattr(os, "sched_getaffinity") else None
        return len(cores) if cores else os.cpu_count() or 1
    return _env_int(ENV_THREADS, value, 1)


def _env_int(name: str, value: str, low: int) -> int:
    try:
        n = int(value)
    except ValueError:
        n = low - 1
    if n < low:
        raise ArgumentError(f"{name}: expected an int >= {low}, got {value!r}")
    return n


def count() -> int:
    """The number of threads native code may run on, the caller's included."""
    global _count
    if _count is None:
        _count = default_count()
    return _count


def set_count(n: int) -> None:
    global _count
    _count = n
    if _pool is not None:
        _int64(_pool["threads"]).value = n


def attached() -> bool:
    return _pool is not None


def settings() -> tuple[int, int]:
    """(the thread count, the least work of a region on the pool), from the environment unless
    set since; an ArgumentError names a variable that holds no valid value."""
    value = os.environ.get(ENV_MIN_WORK)
    return count(), MIN_WORK if value is None else _env_int(ENV_MIN_WORK, value, 0)


def attach(keepalive, parallel: int, threads: int, min_work: int) -> None:
    """Record the linked pool (its dispatcher's address and those of its thread count and
    threshold) and write the settings into it. `keepalive` (what keeps its code mapped) is
    never released: workers run that code until the process ends."""
    global _pool
    _int64(threads).value, _int64(min_work).value = settings()
    ctypes.pythonapi.Py_IncRef(ctypes.py_object(keepalive))
    _pool = {"parallel": parallel, "threads": threads, "min_work": min_work}


def install(hook: int) -> None:
    """Point the parallel hook at `hook` (an address) to the pool's dispatcher, if attached."""
    if _pool is not None:
        ctypes.c_void_p.from_address(hook).value = _pool["parallel"]


def _int64(address: int) -> ctypes.c_int64:
    return ctypes.c_int64.from_address(address)
