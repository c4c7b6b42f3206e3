"""The native training loop's Python side: its tables, buffers and workspace, run in chunks.

Input: a `NativeProgram` with a fit entry (compiler/fitloop.py), the step's arguments (data
arrays with a leading sample axis), its lr and state, and the batch size. Output: `FitLoop`,
whose `run` calls the native loop for steps `first <= s < last` of an epoch, and `run_epochs`,
which runs whole epochs in chunks of about `CHUNK_SECONDS`.
Invariants: the native loop reads `table[i]` for entry input i of the fit abi (data: the whole
data set; the cross-step carries and next-sample data after the step's own inputs) and writes
step s's loss to `losses[s]`; each step updates params, count and state in place, so a chunk
boundary (where Python runs signal handlers: Ctrl-C) always falls between whole steps.
"""
from __future__ import annotations

import ctypes
import time

import numpy as np

from .call import NativeProgram
from .native import Workspace, aligned_workspace, data_address, native_function

CHUNK_SECONDS = 0.1  # fit's native calls last about this long: how soon a Ctrl-C is seen


class FitLoop:
    """The pointer tables, buffers and workspace of one fit call, and the native loop."""

    def __init__(self, program: NativeProgram, values: list, lr: float, state: list,
                 batched: list[int], batch: int, dims: tuple):
        native = program.native
        abi = native.fit_abi  # the step the loop runs
        self.lr = np.array(lr, abi.inputs[len(values)].dtype.np_dtype)
        inputs = values + [self.lr] + state
        for r in native.fit_rewrites:  # the carried W @ x, and the data the next x comes from
            inputs += [np.empty(abi.inputs[r.carry].shape, abi.inputs[r.carry].dtype.np_dtype),
                       values[r.data]]
        self.buffers = [a if isinstance(a, np.ndarray) else np.array(a, t.dtype.np_dtype)
                        for a, t in zip(inputs, abi.inputs, strict=True)]
        self.table = np.array([data_address(a) for a in self.buffers], np.uint64)
        staged = [aligned_workspace(batch * a.itemsize * int(np.prod(a.shape[1:])),
                                    "fit's batch staging")
                  if i in batched else (None, 0) for i, a in enumerate(self.buffers)]
        self.staging = [buffer for buffer, _ in staged]  # keeps the staging addresses valid
        self.staging_table = np.array([address for _, address in staged], np.uint64)
        size = native_function(program.addresses, abi.workspace_size, ctypes.c_int64,
                               abi.size_args())
        self.workspace = Workspace(size, program.invoker.describe_dims)
        self.workspace_address = self.workspace.address(dims)  # kept alive by self.workspace
        self.batch, self.dims = batch, dims
        self.fn = native_function(program.addresses, native.abi.fit_entry, None,
                                  native.abi.fit_args())

    def run(self, order: np.ndarray, first: int, last: int, n: int, losses: np.ndarray,
            lr: float) -> None:
        """Steps first <= s < last of an epoch over n samples in `order`, at learning rate lr."""
        self.lr[()] = lr
        self.fn(self.table.ctypes.data, order.ctypes.data, first, last, self.batch, n,
                losses.ctypes.data, self.staging_table.ctypes.data, *self.dims,
                self.workspace_address)


def run_epochs(loop: FitLoop, orders, losses: np.ndarray, n: int, lr, every: int | None):
    """Epoch e visits the samples in orders[e] and writes its losses to losses[e], in native
    chunks of about CHUNK_SECONDS that end at every epoch's end and every `every`-th step;
    `lr()` gives each chunk's learning rate. Yields after each chunk: (steps run so far,
    epoch, the last step's loss, seconds so far)."""
    chunk, total, begin = 1, 0, time.perf_counter()
    for epoch, (order, epoch_losses) in enumerate(zip(orders, losses, strict=True)):
        done = 0
        while done < len(epoch_losses):
            last = min(len(epoch_losses), done + chunk)
            if every is not None:
                last = min(last, done + every - total % every)
            loop.run(order, done, last, n, epoch_losses, lr())
            total += last - done
            elapsed = max(time.perf_counter() - begin, 1e-9)
            chunk = max(1, int(CHUNK_SECONDS * total / elapsed))
            done = last
            yield total, epoch, float(epoch_losses[last - 1]), elapsed
