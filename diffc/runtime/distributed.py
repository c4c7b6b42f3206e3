"""Data-parallel training's step over MPI processes: this rank's rows, the gradient, one
all-reduce, the update; and the agreement on the setup before any step.

Input: an mpi4py communicator, the compiled weighted-gradient program (inputs: the step's
arguments, then `weight`; outputs: weight * loss and weight * each param's gradient:
transforms/parallel.py) and update program (params, gradients, lr, state: optim.py's
`update_program`), the step's checked arguments and its state. Output: `ParallelLoop`, whose
`step(rows, total, lr)` trains one global batch, `agree`, `split` and `abort`.
Invariants: the gradient call writes straight into one contiguous buffer (a view per output),
which one in-place `Allreduce` sums: with weight = this rank's rows / the global batch's rows,
the sum is the global batch's mean loss and its gradient. Every rank then applies the same
update code to the same sums, so params and state stay identical on every rank. The step runs
from Python (gather, gradient call, Allreduce, update call); arguments are checked once, before
the first step, and every step reuses the checked buffers. mpi4py is imported here only when a
loop or an abort needs it.
"""
from __future__ import annotations

import sys
import time
import traceback

import numpy as np

from ..core.errors import ArgumentError
from ..core.types import ArrayType
from .call import NativeProgram

ALIGN = 64  # bytes: each output's view in the buffer starts on a cache line


def split(n: int, parts: int, index: int) -> tuple[int, int]:
    """Rows [lo, hi) of part `index` of n rows cut into `parts` contiguous parts the way
    np.array_split cuts them (the first n % parts parts one row longer)."""
    q, r = divmod(n, parts)
    lo = index * q + min(index, r)
    return lo, lo + q + (index < r)


def flat_views(types: list[ArrayType], dtype) -> tuple[np.ndarray, list[np.ndarray]]:
    """One zeroed buffer of `dtype` and a C-contiguous view of each type's shape in it, each
    starting at a multiple of ALIGN bytes (the zero gaps sum to zero)."""
    item, sizes = np.dtype(dtype).itemsize, [int(np.prod(t.shape)) for t in types]
    starts, end = [], 0
    for size in sizes:
        starts.append(end)
        end += -(-size * item // ALIGN) * ALIGN // item
    buffer = np.zeros(end + ALIGN // item, dtype)
    first = (-buffer.ctypes.data % ALIGN) // item  # the first aligned element
    buffer = buffer[first:first + end]
    return buffer, [buffer[s:s + n].reshape(t.shape)
                    for s, n, t in zip(starts, sizes, types, strict=True)]


def agree(comm, shared: dict | None, own, error: BaseException | None) -> list:
    """Compare every rank's setup in one allgather: a rank's error, or an entry of `shared`
    that differs across ranks, is the same ArgumentError on every rank (so no rank goes on to
    wait for the others). Returns every rank's `own` (what may differ, such as its number of
    samples)."""
    mine = ("error", f"{type(error).__name__}: {error}") if error is not None else (
        "ok", (shared, own))
    gathered = comm.allgather(mine)
    failed: dict[str, list[int]] = {}  # each error's text -> the ranks that raised it
    for r, (kind, text) in enumerate(gathered):
        if kind == "error":
            failed.setdefault(text, []).append(r)
    if failed:
        count = sum(map(len, failed.values()))
        reasons = "; ".join(f"rank {', '.join(map(str, ranks))}: {text}"
                            for text, ranks in failed.items())
        raise ArgumentError(f"fit(comm=...): the arguments were refused on {count} of "
                            f"{len(gathered)} ranks: {reasons}"[:2000]) from error
    for key in shared:
        values = [s[key] for _, (s, _) in gathered]
        if any(v != values[0] for v in values):
            listed = ", ".join(f"rank {r}: {v}" for r, v in enumerate(values))
            raise ArgumentError(f"fit(comm=...): {key} must be the same on every rank, got "
                                f"{listed}"[:2000])
    return [o for _, (_, o) in gathered]


def abort(comm, error: BaseException) -> None:
    """End every rank of comm's job (MPI_Abort): a rank that leaves the step loop on its own
    would leave the others waiting forever in the all-reduce. Prints why first."""
    rank = comm.Get_rank()
    text = "".join(traceback.format_exception(type(error), error, error.__traceback__))
    sys.stderr.write(f"diffc: rank {rank} of {comm.Get_size()} stopped fit(comm=...) with\n"
                     f"{text}diffc: ending every rank of the job (MPI_Abort)\n")
    sys.stderr.flush()
    time.sleep(0.5)  # the launcher forwards stderr from a pipe that the abort cuts: let it drain
    comm.Abort(1)


class ParallelLoop:
    """One fit(comm=...) call's buffers and its step. `values` are the step's checked
    arguments; `data` the indices of the data arguments (rows of which each step gathers into
    staging buffers of `max_rows` rows); `params` the indices of the params; `state` the
    step's count and optimizer state. `check()` must pass before the first `step`."""

    def __init__(self, comm, grad: NativeProgram, update: NativeProgram, values: list,
                 data: list[int], params: list[int], state: list, batch_symbol: str,
                 max_rows: int):
        from mpi4py import MPI
        self.comm, self.sum, self.in_place = comm, MPI.SUM, MPI.IN_PLACE
        self.grad, self.update = grad.invoker, update.invoker
        self.data = {i: values[i] for i in data}
        self.staging = {i: values[i][:max_rows].copy() for i in data}  # valid rows to check
        self.args = values + [1.0]  # the gradient program's: weight last
        for i, stage in self.staging.items():
            self.args[i] = stage
        dtype = values[params[0]].dtype
        self.buffer, self.outs = flat_views(list(self.grad.abi.outputs), dtype)
        self.loss = self.outs[0]
        self.update_args = [values[i] for i in params] + self.outs[1:] + [0.0] + state
        self.lr_index = 2 * len(params)
        self.batch_symbol, self.symbols, self._dims = batch_symbol, {}, {}

    def check(self) -> None:
        """Check both programs' arguments as the steps pass them (staging: `max_rows` rows)
        and bind the dims; refuses dims whose workspace would be too large."""
        self.symbols = self.grad.check(self.args)
        self.grad.workspace.size(self.dims(self.symbols[self.batch_symbol]))
        self.update.check(self.update_args)

    def dims(self, rows: int) -> tuple:
        """The gradient program's dims for a step of `rows` rows on this rank."""
        dims = self._dims.get(rows)
        if dims is None:
            dims = self._dims[rows] = tuple(rows if s == self.batch_symbol else self.symbols[s]
                                            for s in self.grad.abi.symbols)
        return dims

    def step(self, rows: np.ndarray, total: int, lr: float) -> float:
        """Train on a global batch of `total` rows of which this rank holds `rows` (indices
        into its data); returns the global batch's loss."""
        m = len(rows)
        if m:
            for i, stage in self.staging.items():
                view = stage[:m]
                np.take(self.data[i], rows, axis=0, out=view, mode="clip")  # rows are in range
                self.args[i] = view
            self.args[-1] = m / total
            self.grad.call_into(self.args, self.outs, self.dims(m))
        else:  # no rows of this batch here: this rank adds nothing
            self.buffer.fill(0)
        self.comm.Allreduce(self.in_place, self.buffer, op=self.sum)
        self.update_args[self.lr_index] = lr
        self.update.call_into(self.update_args, [], ())
        return float(self.loss)
