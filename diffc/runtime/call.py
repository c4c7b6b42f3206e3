"""The call path: check every argument against the signature, then call the native entry.

Input: the `Native` description and `Signature` of native code in the process (linked by the
compiler's JIT or loaded from an export) and its entry addresses. Output: `NativeProgram`, the
one way both are called (`fit` runs through it too: fit.py), and its `Invoker`, a callable
taking the function's arguments (positional or keyword) and returning its outputs.
Invariants: nothing native runs until every argument has passed (dtype, shape, symbolic dims
bound one way, C-contiguity, integer labels and constant labels in range, scalars that are
numbers, every value and the workspace small enough to allocate for the dims), so a rejected
call writes nothing and Python input can never crash the process; errors are `ArgumentError`s
naming the parameter (or the dims), what was expected and what was given. ndarray subclasses
are checked through plain views of their memory, so no overridden attribute can mislead a
check. Functions with more arguments than ctypes passes are called through their packed twins.
Uses numpy and ctypes only.
"""
from __future__ import annotations

import ctypes
import threading

import numpy as np

from ..core.errors import ArgumentError, ShapeError
from ..core.types import ArrayType, Signature
from . import threads
from .abi import MAX_ARGS, Native
from .native import NUMPY_LAYOUT_OK, Workspace, data_address, native_function

_INT_RANGE = {"i32": (-2 ** 31, 2 ** 31 - 1), "i64": (-2 ** 63, 2 ** 63 - 1)}
_BOOLS, _INTEGERS, _NUMBERS = (bool, np.bool_), (int, np.integer), (int, float, np.integer,
                                                                    np.floating)


def _owner(a: np.ndarray):
    """The object that owns a's memory: an array that owns its data, or a foreign buffer."""
    while isinstance(a, np.ndarray) and not a.flags.owndata:
        a = a.base
    return a


def bind_arguments(names, args, kwargs) -> list:
    """Positional and keyword arguments in the order of `names`, or an ArgumentError."""
    if len(args) > len(names):
        raise ArgumentError(f"takes {len(names)} arguments ({', '.join(names)}), got {len(args)}")
    values = dict(zip(names, args, strict=False))  # checked: no more args than names
    for k, v in kwargs.items():
        if k not in names:
            raise ArgumentError(f"{k}: unexpected argument; the parameters are "
                                f"{', '.join(names)}")
        if k in values:
            raise ArgumentError(f"{k}: given twice (by position and by keyword)")
        values[k] = v
    missing = [n for n in names if n not in values]
    if missing:
        raise ArgumentError(f"{', '.join(missing)}: missing argument")
    return [values[n] for n in names]


def describe(a) -> str:
    """A value as error messages show it: an array's dtype and shape, else type and repr."""
    if isinstance(a, np.ndarray):
        return f"{a.dtype} {a.shape}"
    return f"{type(a).__name__} {a!r}"[:60]


def dtype_hint(given: np.dtype, expected: np.dtype) -> str:
    """The fix for a numeric array of another dtype (int64 labels for i32, float64 data for
    f32: what numpy and scikit-learn give by default), as a message's tail; else ''."""
    if given.kind in "biuf" and expected.kind in "iuf":
        return f" (convert it with .astype(np.{expected.name}))"
    return ""


def check_count(name: str, value, low: int) -> int:
    """An int >= low (numpy integers too, not bools) as a Python int, or an ArgumentError."""
    if isinstance(value, _BOOLS) or not isinstance(value, _INTEGERS) or value < low:
        raise ArgumentError(f"{name}: expected an int >= {low}, got {describe(value)}")
    return int(value)


def _plain_views(values) -> list:
    """values with each ndarray subclass replaced by a plain ndarray of the same memory, whose
    shape, dtype and flags are numpy's own, whatever the subclass overrides."""
    return [np.ndarray.view(a, np.ndarray) if isinstance(a, np.ndarray) and
            a.__class__ is not np.ndarray else a for a in values]


def _literal_labels(pairs) -> tuple:
    """The constant labels to check at call time: those indexing symbolic class axes (a
    negative one, or one outside a static axis, is refused now: tracing refuses them first)."""
    for value, d in pairs:
        if value < 0 or (d.__class__ is int and value >= d):
            raise ShapeError(f"the constant label {value} is out of range for {d} classes")
    return tuple((value, d) for value, d in pairs if d.__class__ is str)


class Invoker:
    """Validates arguments and calls the native entry of one compiled program."""

    def __init__(self, native: Native, signature: Signature, addresses: dict):
        abi = self.abi = native.abi
        self.signature, self.labels = signature, native.labels
        self.written = frozenset(native.written)
        self.names = signature.names
        # the parameter that binds each symbolic dim (the first one that mentions it)
        self.bound_by = {d: p.name for p, t in reversed(list(zip(signature.params, abi.inputs,
                                                                  strict=True))) for d in t.symbols}
        self.literal_labels = _literal_labels(native.literal_labels)
        # per parameter: (name, type, is_array, numpy dtype, shape or None if symbolic)
        self._plans = [(p.name, t, t.ndim > 0, t.dtype.np_dtype, None if t.symbols else t.shape)
                       for p, t in zip(signature.params, abi.inputs, strict=True)]
        # per output: (numpy dtype, shape) for arrays, a reused 0-d buffer for scalars
        self._outs = [(t.dtype.np_dtype, t.shape) if t.ndim else np.empty((), t.dtype.np_dtype)
                      for t in abi.outputs]
        self._static_outs = not any(t.symbols for t in abi.outputs)
        self.lock = threading.Lock()  # one workspace: one native call at a time
        # arrays go as objects to the entry that reads their data pointers itself, if it can
        objects = NUMPY_LAYOUT_OK and abi.arity <= MAX_ARGS
        self._pass = None if objects else data_address
        self._entry = native_function(addresses, abi.py_entry if objects else abi.entry, None,
                                      abi.entry_args(), objects)
        size = native_function(addresses, abi.workspace_size, ctypes.c_int64,
                               abi.size_args())
        self.workspace = Workspace(size, self.describe_dims)
        if not abi.symbols and size() < 0:
            raise ShapeError(f"{signature}: the workspace for these static shapes would take "
                             f"more than 2**63 - 1 bytes")

    # ------------------------------------------------------------------ arguments

    def bind(self, args, kwargs, count: int | None = None) -> list:
        """The arguments for the first `count` parameters (default all) in parameter order."""
        names = self.names if count is None else self.names[:count]
        if not kwargs and len(args) == len(names):
            return list(args)
        return bind_arguments(names, args, kwargs)

    def check(self, values: list) -> dict[str, int]:
        """Validate every argument; returns the symbolic dims' values."""
        symbols: dict[str, int] = {}
        for (name, t, is_array, np_dtype, static_shape), a in zip(self._plans, values, strict=True):
            if not is_array:
                self._check_scalar(name, t, a)
                continue
            if a.__class__ is not np.ndarray:
                if isinstance(a, np.ndarray):  # a subclass: check numpy's own attributes
                    return self.check(_plain_views(values))
                raise ArgumentError(f"{name}: expected a numpy array {t}, got {describe(a)}")
            if a.dtype is not np_dtype and a.dtype != np_dtype:
                raise ArgumentError(f"{name}: expected {t}, got {describe(a)}"
                                    f"{dtype_hint(a.dtype, np_dtype)}")
            if a.shape != static_shape:
                self._check_symbolic(name, t, a, symbols)
            if not a.flags.c_contiguous:
                raise ArgumentError(f"{name}: expected a C-contiguous array, got a "
                                    f"non-contiguous {describe(a)} (np.ascontiguousarray "
                                    f"makes one)")
        for i in self.labels:
            self.check_labels(i, values[i], symbols)
        if self.literal_labels:
            self.check_literal_labels(symbols)
        if self.written:
            self.check_written(values)
        return symbols

    def _check_symbolic(self, name: str, t: ArrayType, a, symbols: dict) -> None:
        """Shape check of an array whose type has symbolic dims (or a wrong static shape)."""
        shape = a.shape
        if len(shape) != len(t.shape):
            column = len(shape) == len(t.shape) + 1 and shape[-1] == 1
            raise ArgumentError(f"{name}: expected {t}, got {describe(a)}"
                                f"{' (a column: .ravel() makes it 1-d)' if column else ''}")
        for d, s in zip(t.shape, shape, strict=True):
            if d.__class__ is int:
                if d != s:
                    raise ArgumentError(f"{name}: expected {t}, got {describe(a)}")
                continue
            bound = symbols.get(d)
            if bound is None:
                if s < 1:
                    raise ArgumentError(f"{name}: dimension {d} must be >= 1, got "
                                        f"{describe(a)}")
                symbols[d] = s
            elif bound != s:
                raise ArgumentError(f"{name}: expected {t} with {d}={bound} (as bound by "
                                    f"{self.bound_by[d]}), got {describe(a)}")

    def check_written(self, values: list) -> None:
        """Arrays updated in place must be writable and share memory with no other argument."""
        for i in self.written:
            if not values[i].flags.writeable:
                raise ArgumentError(f"{self.names[i]}: expected a writable array (it is updated "
                                    f"in place), got a read-only {describe(values[i])}")
        arrays = [a for a in values if isinstance(a, np.ndarray) and a.ndim]
        roots = [_owner(a) for a in arrays]
        if len({id(r) for r in roots}) == len(roots) and all(
                isinstance(r, np.ndarray) for r in roots):
            return  # arrays with distinct owners of their memory cannot overlap
        spans = []
        for i, a in enumerate(values):
            if isinstance(a, np.ndarray) and a.ndim:
                start = data_address(a)
                spans.append((start, start + a.nbytes, i))
        spans.sort()
        reach, owner = -1, -1  # the furthest end seen so far, and whose it is
        for start, end, i in spans:  # an array overlapping any earlier one overlaps `owner`'s
            if start < reach and (i in self.written or owner in self.written):
                name, other = (self.names[i], self.names[owner]) if i in self.written else (
                    self.names[owner], self.names[i])
                raise ArgumentError(f"{name}: shares memory with {other}; an array updated in "
                                    f"place must not overlap another argument")
            if end > reach:
                reach, owner = end, i

    @staticmethod
    def _check_scalar(name: str, t: ArrayType, a) -> None:
        if isinstance(a, np.ndarray) and a.ndim == 0 and a.dtype.kind in "biuf":
            a = a[()]  # a 0-d array of another kind (object, complex) is refused below
        kind = "number" if t.dtype.is_float else "integer"
        if isinstance(a, np.ndarray):
            raise ArgumentError(f"{name}: expected an {t} {kind} (a scalar parameter), got an "
                                f"array {describe(a)}")
        if isinstance(a, _BOOLS):
            raise ArgumentError(f"{name}: expected an {t} {kind}, got {describe(a)}")
        if t.dtype.is_float:
            if not isinstance(a, _NUMBERS):
                raise ArgumentError(f"{name}: expected an {t} number, got {describe(a)}")
            if isinstance(a, int):
                try:
                    float(a)
                except OverflowError:
                    raise ArgumentError(f"{name}: expected an {t} number, got an int too large "
                                        f"for a float ({describe(a)})") from None
            return
        lo, hi = _INT_RANGE[t.dtype.name]
        if not isinstance(a, _INTEGERS) or not lo <= a <= hi:
            raise ArgumentError(f"{name}: expected an {t} integer, got {describe(a)}")

    def check_labels(self, i: int, a, symbols: dict) -> None:
        """Integer labels for input i must index every class axis they are used with."""
        name, n = self.names[i], min(symbols.get(c, c) for c in self.labels[i])
        a = np.asarray(a)
        if a.size and (a.min() < 0 or a.max() >= n):
            raise ArgumentError(f"{name}: labels must lie in [0, {n}), got values from "
                                f"{a.min()} to {a.max()}")

    def check_literal_labels(self, symbols: dict) -> None:
        """Constant labels (and indices) must lie inside the symbolic axes they index."""
        for value, d in self.literal_labels:
            if value >= symbols[d]:
                raise ArgumentError(f"{self.bound_by[d]}: expected {d} > {value} (the constant "
                                    f"label or index {value} indexes an axis of size {d}), got "
                                    f"{d}={symbols[d]}")

    # ------------------------------------------------------------------ calling

    def describe_dims(self, dims: tuple) -> str:
        """The dims' values and the parameters that bound them (for error messages)."""
        return ", ".join(f"{d}={v} (bound by {self.bound_by[d]})"
                         for d, v in zip(self.abi.symbols, dims, strict=True)) or "static shapes"

    def __call__(self, *args, **kwargs) -> list:
        values = args if not kwargs and len(args) == len(self.names) else self.bind(args, kwargs)
        symbols = self.check(values)
        dims = tuple([symbols[s] for s in self.abi.symbols])
        self.workspace.size(dims)  # refuses dims that make a value too large, first
        try:
            outs = [o if o.__class__ is np.ndarray else np.empty(
                o[1] if self._static_outs else tuple([symbols.get(d, d) for d in o[1]]), o[0])
                for o in self._outs]
        except (MemoryError, ValueError):  # ValueError: more bytes than numpy can index
            raise ArgumentError(f"{self.describe_dims(dims)}: the outputs for these sizes "
                                f"would take more memory than this machine can allocate") from None
        if self._pass is not None:
            values = [self._pass(a) if plan[2] else a
                      for a, plan in zip(values, self._plans, strict=True)]
            outs_args = [self._pass(o) for o in outs]
        else:
            outs_args = outs
        with self.lock:
            self._entry(*values, *outs_args, *dims, self.workspace.address(dims))
            return [o if o.ndim else o.item() for o in outs]

    def call_into(self, values: list, outs: list, dims: tuple) -> None:
        """Run with the caller's output arrays and no checks: for a loop that checked its
        arguments once (`check`, the dims' `workspace.size`) and reuses their buffers.
        The caller guarantees: `values` passed `check` for `dims`, and each of `outs` is a
        plain, writable, C-contiguous ndarray of its output's dtype and shape for `dims`
        (views into one buffer are fine) overlapping no input."""
        if self._pass is not None:
            values = [self._pass(a) if plan[2] else a
                      for a, plan in zip(values, self._plans, strict=True)]
            outs = [self._pass(o) for o in outs]
        with self.lock:
            self._entry(*values, *outs, *dims, self.workspace.address(dims))


class NativeProgram:
    """Native code in the process and how to call it: the one call path of JIT-compiled and
    loaded programs, for calls (`__call__`) and `fit` (fit.py's `FitLoop` runs it). Its split
    kernels run on the worker pool if this process has attached it (threads.py), else on the
    calling thread.

    `keepalive` is whatever keeps the code mapped (a JIT handle, a loaded library)."""

    def __init__(self, native: Native, signature: Signature, addresses: dict, keepalive):
        self.native, self.addresses, self._keepalive = native, addresses, keepalive
        self.invoker = Invoker(native, signature, addresses)
        threads.install(addresses[native.abi.parallel_hook])  # the worker pool, if attached

    def __call__(self, *args, **kwargs) -> list:
        return self.invoker(*args, **kwargs)
