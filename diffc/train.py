"""`train_step`: loss, gradients and optimizer update compiled into one native function.

Input: a scalar-valued `Function`, the names of its params and an optimizer. Output: a
`TrainStep`, called like the function: it validates the arguments (params must be writable,
C-contiguous and of the declared dtype), runs one native call that updates the params in place,
and returns the loss before the update. It owns its native state, the step count and the
optimizer state, which that same call updates, so they always agree with the params; `lr` is
passed at every call, so setting `step.lr` needs no recompiling. One lock per step serializes
everything that reads or writes that state: calls, `fit` (for its whole run) and `reset`.
"""
from __future__ import annotations

import ctypes
import sys
import threading
import time
from dataclasses import dataclass

import numpy as np

from .ad import vjp
from .errors import ArgumentError, SignatureError
from .function import CompiledFunction
from .optim import SGD, STEP_COUNT, Adam, train_program
from .runtime.call import (
    _data_address,
    aligned_workspace,
    check_count,
    describe,
    empty,
    native_function,
)
from .trace import is_finite_number
from .transforms import _as_function, _wrt_names
from .types import ArrayType, Param, Signature

# what each input of the step entry is to the native fit loop (compiler/fitloop.py)
FIXED, SAMPLE, BATCH = "fixed", "sample", "batch"
CHUNK_SECONDS = 0.1  # fit's native calls last about this long: how soon a Ctrl-C is seen


DEFAULT_OPTIMIZER = SGD(lr=0.01)


@dataclass(frozen=True)
class FitSpec:
    kinds: tuple[str, ...]  # per entry input: FIXED, SAMPLE or BATCH
    batch_symbol: str | None  # the symbol the BATCH inputs' leading dim is declared with


class TrainStep(CompiledFunction):
    """Loss, gradients and optimizer update of `params` in one native call; also `fit`.

    `lr` is the learning rate the next call (or fit's next native chunk) uses, `steps` the
    number of updates applied, `fit_losses` the losses of the steps the last fit call ran (an
    empty float64 array before one) and `reset()` zeroes the count and the optimizer state.
    """

    def __init__(self, f, params, optimizer=DEFAULT_OPTIMIZER):
        f = _as_function(f)
        if isinstance(params, str) or params is None:
            raise SignatureError(f"train_step: params must be a sequence of parameter names, "
                                 f"got {params!r}")
        self.params, _ = _wrt_names(f, params)
        if optimizer is not None and not isinstance(optimizer, SGD | Adam):
            raise ArgumentError(f"optimizer: expected an optimizer object such as "
                                f"diffc.SGD(lr=0.01) or diffc.Adam(), got {describe(optimizer)}")
        self.optimizer = optimizer if optimizer is not None else DEFAULT_OPTIMIZER
        indices = [f.signature.names.index(n) for n in self.params]
        for n in self.params:
            t = f.signature.param(n).type
            if t.symbols:
                raise SignatureError(f"train_step: param {n!r} has symbolic dims ({t}); params "
                                     f"need static shapes")
            if t.ndim == 0:
                raise SignatureError(f"train_step: param {n!r} is a scalar ({t}); params are "
                                     f"arrays updated in place: declare it {t.dtype}[1]")
        program = train_program(vjp(f.program, indices), indices, self.optimizer)
        self.function = f  # the traced function (None for a step loaded from an export)
        self._state = _zero_state(f.signature, self.params, self.optimizer)
        scalar = ArrayType(f.signature.param(self.params[0]).type.dtype, ())
        extra = [Param("lr", scalar), Param("step_count", STEP_COUNT)] + [
            Param(f"{n}.{s}", f.signature.param(n).type)
            for n in self.params for s in self.optimizer.state_names]
        signature = Signature(f.signature.params + tuple(extra), f.signature.result)
        super().__init__(f"train_step_{f.name}", signature, program)
        self.user_signature = f.signature
        self.lr = self.optimizer.lr
        self._lock = threading.RLock()  # reentrant: code run within fit (a callback) may call it
        self.fit_losses = np.empty(0)
        others = [i for i, p in enumerate(f.signature.params) if p.name not in self.params]
        self._batch_symbol = _batch_symbol([f.signature.params[i] for i in others])
        self._data = [i for i in others if self._batch_symbol is None or
                      f.signature.params[i].type.shape[:1] == (self._batch_symbol,)]

    @property
    def signature(self) -> Signature:
        """f's signature: the step is called as f is (lr, step count and state are its own)."""
        return self.user_signature

    def _compile_options(self) -> dict:
        data_kind = BATCH if self._batch_symbol else SAMPLE
        kinds = [data_kind if i in self._data else FIXED
                 for i in range(len(self.user_signature.params))]
        kinds += [FIXED] * (1 + len(self._state))  # lr, the step count, the optimizer state
        return {"fit_spec": FitSpec(tuple(kinds), self._batch_symbol)}

    def _export_kind(self) -> str:
        return "train_step"

    def _export_options(self) -> dict:
        optimizer = {"type": type(self.optimizer).__name__, **vars(self.optimizer)}
        return {"params": list(self.params), "optimizer": optimizer, "lr": self.lr,
                "user_params": len(self.user_signature.params), "data": self._data,
                "batch_symbol": self._batch_symbol}

    def _restore_options(self, options: dict) -> None:
        settings = dict(options["optimizer"])
        kind = {"SGD": SGD, "Adam": Adam}[settings.pop("type")]
        if "betas" in settings:
            settings["betas"] = tuple(settings["betas"])
        self.optimizer = kind(**settings)
        self.params = tuple(options["params"])
        self.user_signature = Signature(self._entry_signature.params[:options["user_params"]],
                                        self._entry_signature.result)
        self._data, self._batch_symbol = options["data"], options["batch_symbol"]
        self._state = _zero_state(self.user_signature, self.params, self.optimizer)
        self.lr = options["lr"]  # as set when exported
        self._lock = threading.RLock()
        self.fit_losses = np.empty(0)
        self.function = None

    @property
    def lr(self) -> float:
        return self._lr

    @lr.setter
    def lr(self, value) -> None:
        if not is_finite_number(value) or value < 0:
            raise ArgumentError(f"lr: expected a finite number >= 0, got {describe(value)}")
        self._lr = float(value)

    @property
    def steps(self) -> int:
        """The number of updates applied since construction (or load) or `reset()`: kept in the
        native state, counted by the native call that applies the update. Read without the
        lock (one aligned float64): during a fit in another thread, the steps done so far."""
        return int(self._state[0][0])

    def reset(self) -> None:
        """Zero the optimizer state and the step count."""
        with self._lock:
            for s in self._state:
                s.fill(0)

    def __call__(self, *args, **kwargs) -> float:
        """One step: the loss at the params as given; params, state and count updated."""
        compiled = self._compiled or self.compile()._compiled
        values = compiled.invoker.bind(args, kwargs, len(self.user_signature.params))
        with self._lock:  # lr and the state are read where the call uses them
            (loss,) = compiled(*values, self._lr, *self._state)
        return loss

    def fit(self, *args, batch_size: int | None = None, epochs: int = 1, shuffle: bool = True,
            seed: int = 0, progress: bool = False, **kwargs) -> np.ndarray:
        """Train over a data set in native code; returns the loss of every step (float64).

        The data arguments carry a leading sample axis of length N. In a batched function (data
        declared with a symbolic leading dim, e.g. "B") they are the non-param arrays with that
        leading dim, each step takes `batch_size` samples (default 32) and the last step of an
        epoch the rest; other non-param arguments are passed to every step as they are. In a
        per-sample function every non-param argument is data and each step takes one sample. Epoch e
        of this call visits the samples in the order of a permutation drawn from (seed, e), or
        in order without `shuffle`.

        The losses are also kept as `step.fit_losses`. An exception while fit runs (a
        KeyboardInterrupt, seen within ~0.1 s: the native loop runs in chunks that long) stops
        it after whole steps and propagates: the params, the optimizer state and `steps` then
        agree (each step's native call updates all three), and `fit_losses` holds the losses
        of the steps this call completed. Calls from other threads wait until fit ends.
        """
        compiled = self._compiled or self.compile()._compiled
        values = compiled.invoker.bind(args, kwargs, len(self.user_signature.params))
        n, batch, dims = self._check_fit(compiled.invoker, values, batch_size, epochs, seed,
                                         shuffle, progress)
        per_epoch = -(-n // batch)
        losses = empty(epochs * per_epoch, self.signature.result.dtype.np_dtype,
                       f"epochs: the losses of {epochs} epochs of {per_epoch} steps")
        native = _NativeFit(compiled, self, values, batch, dims)
        bar = _Progress(epochs * per_epoch, batch) if progress else None
        orders = ((np.random.default_rng([seed, epoch]).permutation(n) if shuffle
                   else np.arange(n)).astype(np.int64) for epoch in range(epochs))
        with self._lock:
            start = self._state[0][0]
            try:
                _fit_epochs(native, orders, losses.reshape(epochs, per_epoch), n, bar)
            finally:  # steps complete in order: the first ones in `losses` are those done
                self.fit_losses = losses[:int(self._state[0][0] - start)].astype(np.float64)
                if bar is not None:
                    bar.close()
        return self.fit_losses

    def _check_fit(self, invoker, values: list, batch_size, epochs, seed, shuffle,
                   progress) -> tuple[int, int, tuple]:
        """Validate fit's arguments as one step's (on the first sample or batch), then as a
        whole (sample counts, label ranges, overlap with the params); nothing runs before.
        ndarray subclasses in `values` are replaced by plain views of their memory."""
        check_count("epochs", epochs, 0)
        check_count("seed", seed, 0)
        for name, flag in (("shuffle", shuffle), ("progress", progress)):
            if not isinstance(flag, bool | np.bool_):
                raise ArgumentError(f"{name}: expected True or False, got {describe(flag)}")
        self._check_fit_signature(invoker)
        for i, a in enumerate(values):  # numpy's own shape, dtype and flags, not a subclass's
            if isinstance(a, np.ndarray) and a.__class__ is not np.ndarray:
                values[i] = np.ndarray.view(a, np.ndarray)
        names = self.user_signature.names
        counts = {}
        for i in self._data:
            a, t = values[i], self.user_signature.params[i].type
            if not isinstance(a, np.ndarray) or a.ndim < 1:
                raise ArgumentError(f"{names[i]}: expected a numpy array with a leading sample "
                                    f"axis, got {describe(a)}")
            if a.dtype != t.dtype.np_dtype:  # the native loop reads every sample as t.dtype
                kind = "rows" if self._batch_symbol else "samples"
                raise ArgumentError(f"{names[i]}: expected {t.dtype} data ({kind} of {t}), "
                                    f"got {a.dtype} {a.shape}")
            counts[names[i]] = a.shape[0]
        if len(set(counts.values())) != 1 or 0 in counts.values():
            raise ArgumentError(f"{', '.join(counts)}: the data arguments need one common "
                                f"number of samples >= 1, got {counts}")
        n = next(iter(counts.values()))
        if self._batch_symbol is None:
            if batch_size is not None and check_count("batch_size", batch_size, 1) != 1:
                raise ArgumentError(f"batch_size: {self.name} takes one sample per "
                                    f"step (it has no symbolic batch dim), got {batch_size!r}")
            batch = 1
        else:
            batch = min(32 if batch_size is None else check_count("batch_size", batch_size, 1), n)
        one = [values[i][:batch] if i in self._data and self._batch_symbol else
               values[i][0] if i in self._data else values[i] for i in range(len(values))]
        extra = [self._lr, *self._state]
        symbols = invoker.check(one + extra)
        dims = tuple(symbols[d] for d in invoker.abi.symbols)
        invoker.workspace_size(dims)  # refuses dims that make a value too large
        for i in self._data:
            if not values[i].flags.c_contiguous:
                raise ArgumentError(f"{names[i]}: expected a C-contiguous array, got a "
                                    f"non-contiguous {values[i].dtype} {values[i].shape}")
            if i in invoker.labels:
                invoker.check_labels(i, values[i], symbols)
        invoker.check_written(values + extra)
        return n, batch, dims

    def _check_fit_signature(self, invoker) -> None:
        """fit gathers each step's rows of the data along their leading axis and shortens the
        batch dim for an epoch's last batch: a function that uses the batch dim any other way
        (a fixed argument or another axis sized by it, labels indexing it) cannot be fitted."""
        b = self._batch_symbol
        if b is None:
            return
        for i, p in enumerate(self.user_signature.params):
            axes = p.type.shape[1:] if i in self._data else p.type.shape
            if b in axes:
                what = "a data argument's other axes" if i in self._data else "a fixed argument"
                raise SignatureError(f"fit: {p.name}: {p.type} uses the batch dim {b} in "
                                     f"{what}; fit takes {b} rows of the data per step (fewer "
                                     f"in an epoch's last batch), so {b} may only be the "
                                     f"data's leading axis; loop over step() instead")
        for i, classes in invoker.labels.items():
            if b in classes:
                raise SignatureError(f"fit: {invoker.names[i]}: its labels index the batch dim "
                                     f"{b}, which an epoch's last batch shortens; loop over "
                                     f"step() instead")
        if any(d == b for _, d in invoker.literal_labels):
            raise SignatureError(f"fit: a constant label indexes the batch dim {b}, which an "
                                 f"epoch's last batch shortens; loop over step() instead")


def _zero_state(signature: Signature, params, optimizer) -> list[np.ndarray]:
    """The step's native state, zeroed: the step count, then the optimizer's arrays (one per
    param and state slot, in that order)."""
    return [np.zeros(STEP_COUNT.shape, STEP_COUNT.dtype.np_dtype)] + [
        np.zeros(signature.param(n).type.shape, signature.param(n).type.dtype.np_dtype)
        for n in params for _ in optimizer.state_names]


def _batch_symbol(others) -> str | None:
    """The batch symbol: the symbolic leading dim of the non-param arrays that have one (those
    are then the data; the rest stay fixed), or None for a per-sample function."""
    leading = {p.type.shape[0] for p in others if p.type.ndim and isinstance(p.type.shape[0], str)}
    if len(leading) > 1:
        names = ", ".join(p.name for p in others)
        raise SignatureError(f"train_step: the data parameters ({names}) must share one "
                             f"symbolic leading (batch) dim, got {sorted(leading)}")
    return leading.pop() if leading else None


def _fit_epochs(native, orders, losses: np.ndarray, n: int, bar) -> None:
    """Epoch e visits the samples in orders[e] and writes its losses to losses[e]; the native
    loop runs in chunks of about CHUNK_SECONDS: Python runs signal handlers (Ctrl-C) between
    native calls."""
    chunk, total, begin = 1, 0, time.perf_counter()
    for order, epoch_losses in zip(orders, losses, strict=True):
        done = 0
        while done < len(epoch_losses):
            last = min(len(epoch_losses), done + chunk)
            native.run(order, done, last, n, epoch_losses)
            total += last - done
            elapsed = max(time.perf_counter() - begin, 1e-9)
            chunk = max(1, int(CHUNK_SECONDS * total / elapsed))
            if bar is not None:
                bar.update(last - done, float(epoch_losses[last - 1]), elapsed)
            done = last


class _NativeFit:
    """The pointer tables, buffers and workspace of one fit call, and the native loop."""

    def __init__(self, compiled, step: TrainStep, values: list, batch: int, dims: tuple):
        native = compiled.native
        abi = native.fit_abi  # the step the loop runs
        self.step = step
        self.lr = np.array(step.lr, abi.inputs[len(values)].dtype.np_dtype)
        inputs = values + [self.lr] + step._state
        for r in native.fit_rewrites:  # the carried W @ x, and the data the next x comes from
            inputs += [np.empty(abi.inputs[r.carry].shape, abi.inputs[r.carry].dtype.np_dtype),
                       values[r.data]]
        self.buffers = [a if isinstance(a, np.ndarray) else np.array(a, t.dtype.np_dtype)
                        for a, t in zip(inputs, abi.inputs, strict=True)]
        self.table = np.array([_data_address(a) for a in self.buffers], np.uint64)
        self.staging = [np.empty((batch,) + a.shape[1:], a.dtype)
                        if i in step._data and step._batch_symbol else None
                        for i, a in enumerate(self.buffers)]
        self.staging_table = np.array([0 if a is None else _data_address(a)
                                       for a in self.staging], np.uint64)
        size = native_function(compiled.addresses, abi.workspace_size, ctypes.c_int64,
                               [ctypes.c_int64] * len(dims))(*dims)
        self.workspace, self.workspace_address = aligned_workspace(
            size, f"{compiled.invoker.describe_dims(dims)}: the workspace for these sizes")
        self.batch, self.dims = batch, dims
        argtypes = [ctypes.c_void_p] * 2 + [ctypes.c_int64] * 4 + [ctypes.c_void_p] * 2
        self.fn = native_function(compiled.addresses, native.abi.fit_entry, None,
                                  argtypes + [ctypes.c_int64] * len(dims) + [ctypes.c_void_p])

    def run(self, order: np.ndarray, first: int, last: int, n: int, losses: np.ndarray) -> None:
        """Steps first <= s < last of an epoch at the step's current lr (under its lock)."""
        self.lr[()] = self.step.lr
        self.fn(self.table.ctypes.data, order.ctypes.data, first, last, self.batch, n,
                losses.ctypes.data, self.staging_table.ctypes.data, *self.dims,
                self.workspace_address)


class _Progress:
    """A one-line progress bar on stderr: steps, last loss, samples per second."""

    def __init__(self, total: int, batch: int):
        self.total, self.batch, self.done = total, batch, 0

    def update(self, steps: int, loss: float, elapsed: float) -> None:
        self.done += steps
        width = 30
        filled = width * self.done // max(self.total, 1)
        sys.stderr.write(f"\r[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                         f"steps  loss {loss:.4f}  {self.done * self.batch / elapsed:,.0f} "
                         f"samples/s")
        sys.stderr.flush()

    def close(self) -> None:
        sys.stderr.write("\n")
        sys.stderr.flush()


def train_step(f, params, optimizer=DEFAULT_OPTIMIZER) -> TrainStep:
    """One native function: loss, gradients and the optimizer update of `params` (in place)."""
    return TrainStep(f, params, optimizer)
