"""The call path: check every argument against the signature, then call the native entry.

Input: the `Abi` and `Signature` of compiled code and its entry addresses. Output: `Invoker`, a
callable taking the function's arguments (positional or keyword) and returning its outputs.
Invariants: nothing native runs until every argument has passed (dtype, shape, symbolic dims
bound one way, C-contiguity, integer labels in range, scalars that are numbers), so a rejected
call writes nothing and Python input can never crash the process; errors are `ArgumentError`s
naming the parameter, what was expected and what was given. Uses numpy and ctypes only.
"""
from __future__ import annotations

import ctypes
import threading

import numpy as np

from ..errors import ArgumentError
from ..types import ArrayType, Signature

_CTYPES = {"f32": ctypes.c_float, "f64": ctypes.c_double, "i32": ctypes.c_int32,
           "i64": ctypes.c_int64}
_INT_RANGE = {"i32": (-2 ** 31, 2 ** 31 - 1), "i64": (-2 ** 63, 2 ** 63 - 1)}
_BOOLS, _INTEGERS, _NUMBERS = (bool, np.bool_), (int, np.integer), (int, float, np.integer,
                                                                    np.floating)


def _numpy_data_offset_ok() -> bool:
    """Whether numpy's array struct holds its data pointer right after the object header."""
    a = np.empty(3)
    return ctypes.c_void_p.from_address(id(a) + 16).value == a.ctypes.data


NUMPY_LAYOUT_OK = _numpy_data_offset_ok()
_from_address = ctypes.c_void_p.from_address


def _data_address(a: np.ndarray) -> int:
    """The address of an array's data (~0.3 us, where `a.ctypes.data` takes ~1.7 us)."""
    if NUMPY_LAYOUT_OK:
        return _from_address(id(a) + 16).value or 0
    return a.__array_interface__["data"][0]


def _owner(a: np.ndarray):
    """The object that owns a's memory: an array that owns its data, or a foreign buffer."""
    while isinstance(a, np.ndarray) and not a.flags.owndata:
        a = a.base
    return a


# primitives reading integer labels (operand 1) that index the last axis of an array
_LABELLED = ("pick", "unpick", "softmax_cross_entropy", "softmax_cross_entropy_grad")
_MOVES = ("reshape", "transpose", "broadcast_in_dim")  # carry a label value unchanged


def aligned_workspace(size: int) -> tuple[np.ndarray, int]:
    """A buffer holding `size` bytes from a 64-byte aligned address, and that address."""
    buffer = np.empty(size + 64, np.uint8)
    return buffer, (buffer.ctypes.data + 63) & -64


def label_bounds(program) -> dict[int, tuple]:
    """Input index -> the class counts (ints or symbols) each integer-label input indexes.

    Every equation that indexes with labels counts, including the gradient-only ones (`unpick`,
    `softmax_cross_entropy_grad`), and labels are followed back through equations that only
    move values to the input they come from: an unchecked label would index out of bounds.
    """
    index = {id(v): i for i, v in enumerate(program.inputs)}
    producer = {id(v): e for e in program.eqns for v in e.outputs}
    bounds: dict[int, tuple] = {}
    for e in program.eqns:
        if e.prim.name not in _LABELLED or e.inputs[1].type.dtype.is_float:
            continue
        classes = (e.outputs[0] if e.prim.name == "unpick" else e.inputs[0]).type.shape[-1]
        label = e.inputs[1]
        while id(label) in producer and producer[id(label)].prim.name in _MOVES:
            label = producer[id(label)].inputs[0]
        if id(label) in index and classes not in bounds.get(index[id(label)], ()):
            bounds[index[id(label)]] = bounds.get(index[id(label)], ()) + (classes,)
    return bounds


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


def _describe(a) -> str:
    if isinstance(a, np.ndarray):
        return f"{a.dtype} {a.shape}"
    return f"{type(a).__name__} {a!r}"[:60]


class Invoker:
    """Validates arguments and calls the native entry of one compiled program."""

    def __init__(self, abi, signature: Signature, addresses: dict, labels: dict,
                 written: tuple[int, ...] = ()):
        self.abi, self.signature, self.labels = abi, signature, labels
        self.written = frozenset(written)
        self.names = signature.names
        # per parameter: (name, type, is_array, numpy dtype, shape or None if symbolic)
        self._plans = [(p.name, t, t.ndim > 0, t.dtype.np_dtype, None if t.symbols else t.shape)
                       for p, t in zip(signature.params, abi.inputs, strict=True)]
        # per output: (numpy dtype, shape) for arrays, a reused 0-d buffer for scalars
        self._outs = [(t.dtype.np_dtype, t.shape) if t.ndim else np.empty((), t.dtype.np_dtype)
                      for t in abi.outputs]
        self._static_outs = not any(t.symbols for t in abi.outputs)
        self.lock = threading.Lock()  # one workspace: one native call at a time
        scalar_args = [_CTYPES[t.dtype.name] for t in abi.inputs]
        if NUMPY_LAYOUT_OK:  # arrays go to the entry that reads their data pointers itself
            array_arg, self._pass = ctypes.py_object, None
            address = addresses[abi.py_entry]
        else:
            array_arg, self._pass = ctypes.c_void_p, (lambda a: a.ctypes.data)
            address = addresses[abi.entry]
        inputs = [array_arg if t.ndim else c
                  for t, c in zip(abi.inputs, scalar_args, strict=True)]
        argtypes = (inputs + [array_arg] * len(abi.outputs) +
                    [ctypes.c_int64] * len(abi.symbols) + [ctypes.c_void_p])
        self._entry = ctypes.CFUNCTYPE(None, *argtypes)(address)
        self._size = ctypes.CFUNCTYPE(ctypes.c_int64, *[ctypes.c_int64] * len(abi.symbols))(
            addresses[abi.workspace_size])
        self._sizes: dict[tuple, int] = {}
        self._workspace = np.empty(0, np.uint8)
        self._workspace_address = 0

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
            if not isinstance(a, np.ndarray):
                raise ArgumentError(f"{name}: expected a numpy array {t}, got {_describe(a)}")
            if a.dtype is not np_dtype and a.dtype != np_dtype:
                raise ArgumentError(f"{name}: expected {t}, got {_describe(a)}")
            if a.shape != static_shape:
                self._check_symbolic(name, t, a, symbols)
            if not a.flags.c_contiguous:
                raise ArgumentError(f"{name}: expected a C-contiguous array, got a "
                                    f"non-contiguous {_describe(a)} (np.ascontiguousarray "
                                    f"makes one)")
        for i in self.labels:
            self.check_labels(i, values[i], symbols)
        if self.written:
            self.check_written(values)
        return symbols

    def _check_symbolic(self, name: str, t: ArrayType, a, symbols: dict) -> None:
        """Shape check of an array whose type has symbolic dims (or a wrong static shape)."""
        shape = a.shape
        if len(shape) != len(t.shape):
            raise ArgumentError(f"{name}: expected {t}, got {_describe(a)}")
        for d, s in zip(t.shape, shape, strict=True):
            if d.__class__ is int:
                if d != s:
                    raise ArgumentError(f"{name}: expected {t}, got {_describe(a)}")
                continue
            bound = symbols.get(d)
            if bound is None:
                if s < 1:
                    raise ArgumentError(f"{name}: dimension {d} must be >= 1, got "
                                        f"{_describe(a)}")
                symbols[d] = s
            elif bound != s:
                first = next(p.name for p, v in zip(self.signature.params, self.abi.inputs,
                                                        strict=True) if d in v.shape)
                raise ArgumentError(f"{name}: expected {t} with {d}={bound} (as bound by "
                                    f"{first}), got {_describe(a)}")

    def check_written(self, values: list) -> None:
        """Arrays updated in place must be writable and share memory with no other argument."""
        for i in self.written:
            if not values[i].flags.writeable:
                raise ArgumentError(f"{self.names[i]}: expected a writable array (it is updated "
                                    f"in place), got a read-only {_describe(values[i])}")
        arrays = [a for a in values if isinstance(a, np.ndarray) and a.ndim]
        roots = [_owner(a) for a in arrays]
        if len({id(r) for r in roots}) == len(roots) and all(
                isinstance(r, np.ndarray) for r in roots):
            return  # arrays with distinct owners of their memory cannot overlap
        spans = []
        for i, a in enumerate(values):
            if isinstance(a, np.ndarray) and a.ndim:
                start = _data_address(a)
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
        if isinstance(a, np.ndarray) and a.ndim == 0:
            a = a[()]
        if isinstance(a, _BOOLS):
            raise ArgumentError(f"{name}: expected a {t} number, got {_describe(a)}")
        if t.dtype.is_float:
            if not isinstance(a, _NUMBERS):
                raise ArgumentError(f"{name}: expected a {t} number, got {_describe(a)}")
            if isinstance(a, int):
                try:
                    float(a)
                except OverflowError:
                    raise ArgumentError(f"{name}: expected a {t} number, got an int too large "
                                        f"for a float ({_describe(a)})") from None
            return
        lo, hi = _INT_RANGE[t.dtype.name]
        if not isinstance(a, _INTEGERS) or not lo <= a <= hi:
            raise ArgumentError(f"{name}: expected a {t} integer, got {_describe(a)}")

    def check_labels(self, i: int, a, symbols: dict) -> None:
        """Integer labels for input i must index every class axis they are used with."""
        name, n = self.names[i], min(symbols.get(c, c) for c in self.labels[i])
        a = np.asarray(a)
        if a.size and (a.min() < 0 or a.max() >= n):
            raise ArgumentError(f"{name}: labels must lie in [0, {n}), got values from "
                                f"{a.min()} to {a.max()}")

    # ------------------------------------------------------------------ calling

    def _workspace_for(self, dims: tuple) -> int:
        """The aligned address of a workspace large enough for these dims (grown, never shrunk)."""
        size = self._sizes.get(dims)
        if size is None:
            size = self._sizes[dims] = self._size(*dims)
            if self._workspace.nbytes < size + 64:
                self._workspace, self._workspace_address = aligned_workspace(size)
        return self._workspace_address

    def __call__(self, *args, **kwargs) -> list:
        values = args if not kwargs and len(args) == len(self.names) else self.bind(args, kwargs)
        symbols = self.check(values)
        dims = tuple([symbols[s] for s in self.abi.symbols])
        outs = [o if o.__class__ is np.ndarray else np.empty(
            o[1] if self._static_outs else tuple([symbols.get(d, d) for d in o[1]]), o[0])
            for o in self._outs]
        if self._pass is not None:
            values = [self._pass(a) if plan[2] else a
                      for a, plan in zip(values, self._plans, strict=True)]
            outs_args = [self._pass(o) for o in outs]
        else:
            outs_args = outs
        with self.lock:
            self._entry(*values, *outs_args, *dims, self._workspace_for(dims))
            return [o if o.ndim else o.item() for o in outs]
