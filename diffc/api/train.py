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

import sys
import threading
from dataclasses import replace

import numpy as np

from ..core.errors import ArgumentError, SignatureError
from ..core.trace import is_finite_number
from ..core.types import ArrayType, Param, Signature
from ..passes import dce
from ..runtime.call import check_count, describe, dtype_hint
from ..runtime.fit import FitLoop, run_epochs
from ..runtime.load import Export
from ..runtime.native import empty
from ..runtime.record import Record
from ..transforms.ad import vjp
from ..transforms.optim import SGD, STEP_COUNT, Adam, train_program
from .distributed import fit_distributed
from .function import CompiledFunction
from .grad import as_function, wrt_names

DEFAULT_OPTIMIZER = SGD(lr=0.01)


class TrainStep(CompiledFunction):
    """Loss, gradients and optimizer update of `params` in one native call; also `fit`.

    `lr` is the learning rate the next call (or fit's next native chunk) uses, `steps` the
    number of updates applied, `fit_losses` the losses of the steps the last fit call ran (an
    empty float64 array before one) and `reset()` zeroes the count and the optimizer state.
    """

    def __init__(self, f, params, optimizer=DEFAULT_OPTIMIZER):
        f = as_function(f)
        if isinstance(params, str) or params is None:
            raise SignatureError(f"train_step: params must be a sequence of parameter names, "
                                 f"got {params!r}")
        names, _ = wrt_names(f, params)
        if optimizer is not None and not isinstance(optimizer, SGD | Adam):
            raise ArgumentError(f"optimizer: expected an optimizer object such as "
                                f"diffc.SGD(lr=0.01) or diffc.Adam(), got {describe(optimizer)}")
        optimizer = optimizer if optimizer is not None else DEFAULT_OPTIMIZER
        _check_params(f.signature, names)
        indices = [f.signature.names.index(n) for n in names]
        program = train_program(dce(vjp(f.program, indices)), indices, optimizer)
        super().__init__(_record(f, names, optimizer), program)
        self.function = f  # the traced function (None for a step loaded from an export)
        self._start(optimizer.lr)

    @classmethod
    def from_export(cls, export: Export) -> TrainStep:
        step = super().from_export(export)
        step.function = None
        step._start(export.record.options["lr"])  # the lr it had when exported
        return step

    def _start(self, lr) -> None:
        """The step's own state: zeroed, with learning rate lr."""
        self._state = _zero_state(self.signature, self.params, self.optimizer)
        self.lr = lr
        self._lock = threading.RLock()  # reentrant: code run within fit (a callback) may call it
        self.fit_losses = np.empty(0)

    @property
    def params(self) -> tuple[str, ...]:
        """The names of the parameters the step updates."""
        return tuple(self.record.options["params"])

    @property
    def optimizer(self):
        """The optimizer's hyperparameters (the learning rate in use is `lr`)."""
        settings = dict(self.record.options["optimizer"])
        kind = {"SGD": SGD, "Adam": Adam}[settings.pop("type")]
        if "betas" in settings:
            settings["betas"] = tuple(settings["betas"])
        return kind(**settings)

    @property
    def lr(self) -> float:
        return self._lr

    @lr.setter
    def lr(self, value) -> None:
        if not is_finite_number(value) or value < 0:
            raise ArgumentError(f"lr: expected a finite number >= 0, got {describe(value)}")
        self._lr = float(value)

    @property
    def state(self) -> dict[str, np.ndarray]:
        """The optimizer's state arrays by name (`"W1.exp_avg"`, ...), as the native code
        updates them: zero at the start and after `reset()`."""
        names = [f"{n}.{s}" for n in self.params for s in self.optimizer.state_names]
        return dict(zip(names, self._state[1:], strict=True))

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
        native = self._native or self.compile()._native
        values = native.invoker.bind(args, kwargs, len(self.signature.params))
        with self._lock:  # lr and the state are read where the call uses them
            (loss,) = native(*values, self._lr, *self._state)
        return loss

    def fit(self, *args, batch_size: int | None = None, epochs: int = 1, shuffle: bool = True,
            seed: int = 0, progress: bool = False, drop_last: bool = False, callback=None,
            callback_every: int | None = None, comm=None, sharded: bool = False,
            **kwargs) -> np.ndarray:
        """Train over a data set in native code; returns the loss of every step (float64).

        The data arguments carry a leading sample axis of length N. In a batched function (data
        declared with a symbolic leading dim, e.g. "B") they are the non-param arrays with that
        leading dim, each step takes `batch_size` samples (default 32) and the last step of an
        epoch the rest; other non-param arguments are passed to every step as they are. In a
        per-sample function every non-param argument is data and each step takes one sample.
        `drop_last` skips an epoch's short last batch. Epoch e of this call visits the samples
        in the order of a permutation drawn from (seed, e), or in order without `shuffle`.

        `callback(step, epoch, loss)` is called between steps: after every `callback_every`-th
        step of this call, or (by default) after each epoch's last; `step` counts this call's
        steps from 0 and `loss` is that step's. The losses are also kept as `step.fit_losses`.
        An exception while fit runs (raised by the callback, or a KeyboardInterrupt, seen
        within ~0.1 s: the native loop runs in chunks that long) stops it after whole steps and
        propagates: the params, the optimizer state and `steps` then agree (each step's native
        call updates all three), and `fit_losses` holds the losses of the steps this call
        completed. Calls from other threads wait until fit ends.

        `comm` (an mpi4py communicator, in a program run by `mpiexec -n P`) trains
        data-parallel: every rank runs this call with the same arguments, each step's batch is
        split across the ranks and their gradients summed with one all-reduce; the params stay
        identical on every rank and equal, up to rounding, to a single-process fit on the same
        data. Every rank passes the whole data set, or with `sharded=True` only its own part
        (`diffc.distributed.shard`): the parts in rank order are the data set.
        docs/distributed.md says more (api/distributed.py runs it).
        """
        if comm is not None or sharded is not False:  # data-parallel: api/distributed.py
            return fit_distributed(self, comm, sharded, args, kwargs, dict(
                batch_size=batch_size, epochs=epochs, shuffle=shuffle, seed=seed,
                progress=progress, drop_last=drop_last, callback=callback,
                callback_every=callback_every), _Progress)
        native, values, n, batch, dims, every = self._fit_checks(
            args, kwargs, batch_size, epochs, shuffle, seed, progress, drop_last, callback,
            callback_every)
        per_epoch = n // batch if drop_last else -(-n // batch)
        losses = empty(epochs * per_epoch, self.signature.result.dtype.np_dtype,
                       f"epochs: the losses of {epochs} epochs of {per_epoch} steps")
        batched = self._data if self._batch_symbol else []
        bar = _Progress(epochs * per_epoch, batch) if progress else None
        orders = ((np.random.default_rng([seed, epoch]).permutation(n) if shuffle
                   else np.arange(n)).astype(np.int64) for epoch in range(epochs))
        with self._lock:
            loop = FitLoop(native, values, self._lr, self._state, batched, batch, dims)
            start = self._state[0][0]
            try:
                for done, epoch, loss, elapsed in run_epochs(
                        loop, orders, losses.reshape(epochs, per_epoch), n, lambda: self._lr,
                        every or (None if callback is None else per_epoch)):
                    if bar is not None:
                        bar.update(done, loss, elapsed)
                    if callback is not None and done % (every or per_epoch) == 0:
                        callback(done - 1, epoch, loss)
            finally:  # steps complete in order: the first ones in `losses` are those done
                self.fit_losses = losses[:int(self._state[0][0] - start)].astype(np.float64)
                if bar is not None:
                    bar.close()
        return self.fit_losses

    def export(self, path: str) -> list[str]:
        """Write path.o, path.h, path.json (and path.so where a C compiler exists); the loaded
        step starts with this step's current lr."""
        return self._export(path, replace(self.record, options={**self.record.options,
                                                                 "lr": self.lr}))

    @property
    def _data(self) -> list[int]:
        return self.record.options["data"]

    @property
    def _batch_symbol(self) -> str | None:
        return self.record.options["batch_symbol"]

    def _fit_checks(self, args, kwargs, batch_size, epochs, shuffle, seed, progress, drop_last,
                    callback, callback_every) -> tuple:
        """fit's arguments checked (nothing runs before): (native program, argument values,
        samples, batch, dims, steps between callbacks)."""
        native = self._native or self.compile()._native
        values = native.invoker.bind(args, kwargs, len(self.signature.params))
        every = _check_callback(callback, callback_every, drop_last)
        n, batch, dims = self._check_fit(native.invoker, values, batch_size, epochs, seed,
                                         shuffle, progress, drop_last)
        return native, values, n, batch, dims, every

    def _check_fit(self, invoker, values: list, batch_size, epochs, seed, shuffle,
                   progress, drop_last) -> tuple[int, int, tuple]:
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
        names = self.signature.names
        counts = {}
        for i in self._data:
            values[i] = self._check_data(names[i], values[i], self.signature.params[i].type)
            counts[names[i]] = values[i].shape[0]
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
            batch = 32 if batch_size is None else check_count("batch_size", batch_size, 1)
            if drop_last and batch > n:
                raise ArgumentError(f"batch_size: with drop_last, {n} samples make no whole "
                                    f"batch of {batch}")
            batch = min(batch, n)
        one = [values[i][:batch] if i in self._data and self._batch_symbol else
               values[i][0] if i in self._data else values[i] for i in range(len(values))]
        extra = [self._lr, *self._state]
        symbols = invoker.check(one + extra)
        dims = tuple(symbols[d] for d in invoker.abi.symbols)
        invoker.workspace.size(dims)  # refuses dims that make a value too large
        for i in self._data:
            if not values[i].flags.c_contiguous:
                raise ArgumentError(f"{names[i]}: expected a C-contiguous array, got a "
                                    f"non-contiguous {values[i].dtype} {values[i].shape}")
            if i in invoker.labels:
                invoker.check_labels(i, values[i], symbols)
        invoker.check_written(values + extra)
        return n, batch, dims

    def _check_data(self, name: str, a, t: ArrayType) -> np.ndarray:
        """A data argument checked for rank, static dims and dtype (the native loop reads every
        sample as t's dtype); per-sample scalars given as a column (N, 1) come back as (N,)."""
        if not isinstance(a, np.ndarray) or a.ndim < 1:
            raise ArgumentError(f"{name}: expected a numpy array with a leading sample axis, "
                                f"got {describe(a)}")
        row = t.shape[1:] if self._batch_symbol else t.shape  # one sample's shape
        if row == () and a.shape[1:] == (1,):
            a = a[:, 0]  # a view: non-contiguous if the column was
        if a.ndim != len(row) + 1 or any(d.__class__ is int and d != s
                                         for d, s in zip(row, a.shape[1:], strict=True)):
            shape = ", ".join(map(str, ("N",) + row)) + ("," if not row else "")
            raise ArgumentError(f"{name}: expected {len(row) + 1}-d data of shape ({shape}) "
                                f"(one {ArrayType(t.dtype, row)} per sample), got {describe(a)}")
        if a.dtype != t.dtype.np_dtype:
            kind = "rows" if self._batch_symbol else "samples"
            raise ArgumentError(f"{name}: expected {t.dtype} data ({kind} of {t}), got "
                                f"{describe(a)}{dtype_hint(a.dtype, t.dtype.np_dtype)}")
        return a

    def _check_fit_signature(self, invoker) -> None:
        """fit gathers each step's rows of the data along their leading axis and shortens the
        batch dim for an epoch's last batch: a function that uses the batch dim any other way
        (a fixed argument or another axis sized by it, labels indexing it) cannot be fitted."""
        b = self._batch_symbol
        if b is None:
            return
        for i, p in enumerate(self.signature.params):
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
            raise SignatureError(f"fit: a constant label or index indexes the batch dim {b}, "
                                 f"which an epoch's last batch shortens; loop over step() "
                                 f"instead")


def _check_params(signature: Signature, names) -> None:
    for n in names:
        t = signature.param(n).type
        if t.symbols:
            raise SignatureError(f"train_step: param {n!r} has symbolic dims ({t}); params "
                                 f"need static shapes")
        if t.ndim == 0:
            raise SignatureError(f"train_step: param {n!r} is a scalar ({t}); params are "
                                 f"arrays updated in place: declare it {t.dtype}[1]")


def _record(f, names, optimizer) -> Record:
    """The step's record: its entry takes f's arguments, then lr, the step count and the
    optimizer state; the non-param arrays that carry the batch dim (or all, per sample) are
    fit's data."""
    sig = f.signature
    scalar = ArrayType(sig.param(names[0]).type.dtype, ())
    extra = [Param("lr", scalar), Param("step_count", STEP_COUNT)] + [
        Param(f"{n}.{s}", sig.param(n).type) for n in names for s in optimizer.state_names]
    others = [i for i, p in enumerate(sig.params) if p.name not in names]
    batch_symbol = _batch_symbol([sig.params[i] for i in others])
    data = [i for i in others if batch_symbol is None or
            sig.params[i].type.shape[:1] == (batch_symbol,)]
    options = {"params": list(names), "lr": optimizer.lr, "data": data,
               "batch_symbol": batch_symbol,
               "optimizer": {"type": type(optimizer).__name__, **vars(optimizer)}}
    return Record("train_step", f"train_step_{f.name}", sig,
                  Signature(sig.params + tuple(extra), sig.result), options)


def _check_callback(callback, every, drop_last) -> int | None:
    """Checks fit's callback, callback_every and drop_last; the steps between callbacks."""
    if not isinstance(drop_last, bool | np.bool_):
        raise ArgumentError(f"drop_last: expected True or False, got {describe(drop_last)}")
    if callback is not None and not callable(callback):
        raise ArgumentError(f"callback: expected a function of (step, epoch, loss) or None, "
                            f"got {describe(callback)}")
    if every is None:
        return None
    if callback is None:
        raise ArgumentError("callback_every: given without a callback")
    return check_count("callback_every", every, 1)


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


class _Progress:
    """A one-line progress bar on stderr: steps, last loss, samples per second."""

    def __init__(self, total: int, batch: int):
        self.total, self.batch, self.done = total, batch, 0

    def update(self, done: int, loss: float, elapsed: float) -> None:
        self.done = done
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
