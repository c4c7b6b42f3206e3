"""Tracing: run a Python function on `Tracer`s and record the primitives it applies.

Input: a function and its `Signature`. Output: a `Program` with one equation per primitive
application, each carrying the user's `file:line`.
Invariants: numpy broadcasting and Python numbers become explicit IR (`broadcast_in_dim`,
`reshape`, `Lit`); the same operation functions run eagerly on numpy arrays (`bind` calls the
primitive's numpy implementation when no operand is traced), so `diffc.nn` is one code path for
both; errors about the user's code are `ShapeError` / `DTypeError` / `TraceError` whose message
starts with the user's `file:line`.
"""
from __future__ import annotations

import math
import os
import sys

import numpy as np

from . import ops
from .errors import DiffcError, DTypeError, ShapeError, TraceError
from .ir import Eqn, Lit, Program, Var
from .types import ArrayType, DType, Signature, check_size, def_location, dtype_of_numpy

_PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__)) + os.sep


def user_location() -> str:
    """`file:line` of the innermost frame outside the diffc package."""
    frame = sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(
            _PACKAGE_DIR):
        frame = frame.f_back
    return f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame else "<unknown>"


def _at_user(error_type, message: str) -> DiffcError:
    return error_type(f"{user_location()}: {message}")


class TraceContext:
    """The equations recorded so far by one trace."""

    def __init__(self):
        self.eqns: list[Eqn] = []
        self.source: str | None = None  # set by transforms: the user line new equations stem from

    def emit(self, prim: ops.Primitive, inputs, params: dict) -> tuple[Var, ...]:
        types = [a.type for a in inputs]
        try:
            out = prim.shape_rule(*types, **params)
            outs = tuple(Var(check_size(t)) for t in (out if isinstance(out, tuple) else (out,)))
        except (ShapeError, DTypeError) as e:
            raise type(e)(f"{self.source or user_location()}: {e}") from None
        self.eqns.append(Eqn(prim, tuple(inputs), params, outs, self.source or user_location()))
        return outs


class Tracer:
    """A traced array: the stand-in for an argument or intermediate value during tracing."""

    __slots__ = ("ctx", "var")
    __array_priority__ = 1000  # numpy defers binary operators to us

    def __init__(self, ctx: TraceContext, var: Var):
        self.ctx = ctx
        self.var = var

    type = property(lambda self: self.var.type)
    shape = property(lambda self: self.var.type.shape)
    dtype = property(lambda self: self.var.type.dtype)
    ndim = property(lambda self: self.var.type.ndim)
    T = property(lambda self: transpose(self))

    def __repr__(self) -> str:
        return f"Tracer({self.var.type})"

    def sum(self, axis=None):
        return reduce_sum(self, axis)

    def mean(self, axis=None):
        return mean(self, axis)

    __add__ = lambda self, other: elementwise("add", self, other)  # noqa: E731
    __radd__ = lambda self, other: elementwise("add", other, self)  # noqa: E731
    __sub__ = lambda self, other: elementwise("sub", self, other)  # noqa: E731
    __rsub__ = lambda self, other: elementwise("sub", other, self)  # noqa: E731
    __mul__ = lambda self, other: elementwise("mul", self, other)  # noqa: E731
    __rmul__ = lambda self, other: elementwise("mul", other, self)  # noqa: E731
    __truediv__ = lambda self, other: elementwise("div", self, other)  # noqa: E731
    __rtruediv__ = lambda self, other: elementwise("div", other, self)  # noqa: E731
    __matmul__ = lambda self, other: matmul(self, other)  # noqa: E731
    __rmatmul__ = lambda self, other: matmul(other, self)  # noqa: E731
    __neg__ = lambda self: elementwise("neg", self)  # noqa: E731
    __pos__ = lambda self: self  # noqa: E731

    def __pow__(self, exponent):
        if isinstance(exponent, Tracer) or not _is_number(exponent):
            raise _at_user(TraceError, f"'**' takes a constant Python number as exponent, got "
                                       f"{_describe(exponent)}")
        y = float(exponent)
        return elementwise("pow", self, y=int(y) if y.is_integer() else y)

    def __rpow__(self, base):
        raise _at_user(TraceError, "a traced value as an exponent is not supported; write "
                                   "nn.exp(x * log(base)) instead")

    def _refuse(self, what: str):
        raise _at_user(TraceError, f"{what} on a traced value cannot be traced: the value is "
                                   f"not known until the compiled function runs (no Python "
                                   f"control flow on traced values)")

    __bool__ = lambda self: self._refuse("truth testing (if/while/and/or/not)")  # noqa: E731
    __len__ = lambda self: self._refuse("len()")  # noqa: E731
    __iter__ = lambda self: self._refuse("iteration")  # noqa: E731
    __index__ = lambda self: self._refuse("use as an index")  # noqa: E731
    __int__ = lambda self: self._refuse("int()")  # noqa: E731
    __float__ = lambda self: self._refuse("float()")  # noqa: E731
    __complex__ = lambda self: self._refuse("complex()")  # noqa: E731
    __lt__ = __le__ = __gt__ = __ge__ = lambda self, other: self._refuse(  # noqa: E731
        "comparison (as in `if x > 0:`)")
    __eq__ = __ne__ = lambda self, other: self._refuse("comparison")  # noqa: E731
    __hash__ = object.__hash__
    __getitem__ = lambda self, index: self._refuse("indexing")  # noqa: E731
    __array__ = lambda self, *a, **k: self._refuse("conversion to a numpy array")  # noqa: E731

    def _unsupported(self, operation: str):
        raise _at_user(TraceError, f"{operation} on a traced array is not supported; supported: "
                                   f"+ - * / ** @ .T .sum .mean and diffc.nn")

    __floordiv__ = __rfloordiv__ = lambda self, *_: self._unsupported("'//'")  # noqa: E731
    __mod__ = __rmod__ = lambda self, *_: self._unsupported("'%'")  # noqa: E731
    __divmod__ = __rdivmod__ = lambda self, *_: self._unsupported("divmod()")  # noqa: E731
    __abs__ = lambda self: self._unsupported("abs()")  # noqa: E731
    __round__ = lambda self, *_: self._unsupported("round()")  # noqa: E731
    __trunc__ = __floor__ = __ceil__ = lambda self: self._unsupported(  # noqa: E731
        "rounding (math.trunc, floor, ceil)")
    __and__ = __rand__ = __or__ = __ror__ = __xor__ = __rxor__ = __lshift__ = __rlshift__ = \
        __rshift__ = __rrshift__ = __invert__ = lambda self, *_: self._unsupported(  # noqa: E731
            "a bitwise operator (& | ^ ~ << >>)")

    # numpy functions applied to a traced value: the arithmetic ones trace, others are refused
    _UFUNCS = {np.add: "add", np.subtract: "sub", np.multiply: "mul", np.true_divide: "div",
               np.negative: "neg", np.exp: "exp", np.log: "log", np.tanh: "tanh"}

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if method == "__call__" and not kwargs and ufunc in self._UFUNCS:
            return elementwise(self._UFUNCS[ufunc], *inputs)
        if method == "__call__" and ufunc is np.matmul and not kwargs:
            return matmul(*inputs)
        raise _at_user(TraceError, f"numpy function {ufunc.__name__} applied to a traced value "
                                   f"is not supported; use diffc.nn")

    def __array_function__(self, func, types, args, kwargs):
        raise _at_user(TraceError, f"numpy function {func.__name__} applied to a traced value "
                                   f"is not supported; use diffc.nn")

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise _at_user(TraceError, f"traced arrays have no attribute {name!r}; supported: "
                                   f"+ - * / ** @ .T .sum .mean .shape .dtype and diffc.nn")


# ----------------------------------------------------------------------------- operands

def _is_number(x) -> bool:
    return isinstance(x, int | float | np.integer | np.floating) and not isinstance(x, bool)


def is_finite_number(x) -> bool:
    """A real number (numpy scalars too, not bools) whose float value is finite."""
    try:
        return _is_number(x) and math.isfinite(x)
    except OverflowError:  # an int too large for a float
        return False


def _describe(x) -> str:
    if isinstance(x, Tracer | np.ndarray):
        return f"{type_of(x)} array" if isinstance(x, Tracer) else f"a numpy array {x.shape}"
    return f"{type(x).__name__} {x!r}"[:80]


def type_of(x) -> ArrayType | None:
    """The type of an operand; None for a Python number (it takes its partner's dtype)."""
    if isinstance(x, Tracer):
        return x.type
    if _is_number(x):
        return None
    if isinstance(x, np.ndarray):
        dtype = dtype_of_numpy(x.dtype)
        if dtype is None:
            raise _at_user(DTypeError, f"expected an array of f32, f64, i32 or i64, got dtype "
                                       f"{x.dtype}")
        return ArrayType(dtype, x.shape)
    raise _at_user(TraceError, f"expected a traced array, a numpy array or a number, got "
                               f"{_describe(x)}")


def _context(args) -> TraceContext | None:
    ctxs = {id(a.ctx): a.ctx for a in args if isinstance(a, Tracer)}
    if len(ctxs) > 1:
        raise _at_user(TraceError, "a traced value from another trace (leaked from an earlier "
                                   "call?) is mixed into this one")
    return next(iter(ctxs.values()), None)


def bind(prim: ops.Primitive, *args, **params):
    """Apply a primitive: record an equation when tracing, else run its numpy implementation."""
    ctx = _context(args)
    if ctx is None:
        arrays = [np.asarray(a) for a in args]
        try:
            prim.shape_rule(*[type_of(a) for a in arrays], **params)
        except (ShapeError, DTypeError) as e:
            raise _at_user(type(e), str(e)) from None
        return np.asarray(prim.impl(*arrays, **params))  # 0-d arrays, not numpy scalars: typed
    atoms = []
    for a in args:
        if isinstance(a, np.ndarray) and a.ndim == 0:  # a 0-d constant is a literal
            a = Lit(a.item(), type_of(a))
        else:
            _refuse_captured(a)
        atoms.append(a.var if isinstance(a, Tracer) else a)
    outs = ctx.emit(prim, atoms, params)
    return Tracer(ctx, outs[0]) if len(outs) == 1 else tuple(Tracer(ctx, v) for v in outs)


def _refuse_captured(x) -> None:
    if isinstance(x, np.ndarray) and x.ndim:
        raise _at_user(TraceError, f"a numpy array {x.shape} captured from outside the traced "
                                   f"function; pass it as a parameter instead")


def _constant(value, dtype: DType, ctx: TraceContext | None):
    return Lit(value, ArrayType(dtype, ())) if ctx else dtype.np_dtype.type(value)


# ----------------------------------------------------------------------------- operations

def broadcast_shapes(*types: ArrayType) -> tuple:
    """numpy's broadcasting of shapes, with symbolic dims matching only themselves (or 1)."""
    rank = max(t.ndim for t in types)
    out = []
    for i in range(rank):
        dims = {t.shape[i - rank + t.ndim] for t in types if i - rank + t.ndim >= 0} - {1}
        if len(dims) > 1:
            raise _at_user(ShapeError, f"cannot broadcast {' with '.join(map(str, types))}: "
                                       f"dimensions {sorted(map(str, dims))} differ")
        out.append(dims.pop() if dims else 1)
    return tuple(out)


def broadcast_to(x, shape: tuple):
    """x broadcast to shape with explicit reshape (dropping stretched 1s) + broadcast_in_dim."""
    t = type_of(x)
    if t.shape == shape:
        return x
    pad = len(shape) - t.ndim
    kept = [i for i, d in enumerate(t.shape) if not (d == 1 and shape[pad + i] != 1)]
    if len(kept) != t.ndim:
        x = bind(ops.PRIMITIVES["reshape"], x, shape=tuple(t.shape[i] for i in kept))
    return bind(ops.PRIMITIVES["broadcast_in_dim"], x, shape=tuple(shape),
                broadcast_dimensions=tuple(pad + i for i in kept))


def elementwise(name: str, *xs, **params):
    """An elementwise primitive with numpy broadcasting; Python numbers become constants."""
    types = [type_of(x) for x in xs]
    arrays = [t for t in types if t is not None]
    if not arrays:  # only numbers: in a numpy scalar's dtype if there is one, else float64
        dtype = next((x.dtype for x in xs if isinstance(x, np.generic)), np.dtype(np.float64))
        xs = [np.asarray(x, dtype) for x in xs]
        types = arrays = [type_of(x) for x in xs]
    ctx = _context(xs)
    if ctx is not None:
        for x in xs:
            _refuse_captured(x)
    shape = broadcast_shapes(*arrays)
    operands = [_constant(x, arrays[0].dtype, ctx) if t is None else
                x if t.ndim == 0 or t.shape == shape else broadcast_to(x, shape)
                for x, t in zip(xs, types, strict=True)]
    return bind(ops.PRIMITIVES[name], *operands, **params)


def _normalize_axes(t: ArrayType, axis) -> tuple[int, ...]:
    axes = tuple(range(t.ndim)) if axis is None else axis if isinstance(axis, tuple) else (axis,)
    out = []
    for a in axes:
        if not isinstance(a, int | np.integer) or not -t.ndim <= a < t.ndim:
            raise _at_user(ShapeError, f"axis {a!r} is out of range for {t}")
        out.append(int(a) % t.ndim)
    if len(set(out)) != len(out):
        raise _at_user(ShapeError, f"repeated axis in {axis!r}")
    return tuple(sorted(out))


def reduce_sum(x, axis=None):
    """numpy's x.sum(axis): the reduced axes dropped."""
    axes = _normalize_axes(type_of(x), axis)
    return bind(ops.PRIMITIVES["reduce_sum"], x, axes=axes) if axes else x


def mean(x, axis=None):
    """numpy's x.mean(axis); a symbolic axis divides by its size at run time."""
    t = type_of(x)
    axes = _normalize_axes(t, axis)
    total = reduce_sum(x, axes)
    static = 1
    for a in axes:
        if isinstance(t.shape[a], int):
            static *= t.shape[a]
        else:
            size = bind(ops.PRIMITIVES["dim_size"], x, axis=a, dtype=t.dtype)
            total = elementwise("div", total, size)
    return total if static == 1 else elementwise("div", total, float(static))


def transpose(x):
    """numpy's x.T: the axes reversed."""
    t = type_of(x)
    if t.ndim < 2:
        return x
    return bind(ops.PRIMITIVES["transpose"], x, perm=tuple(reversed(range(t.ndim))))


def matmul(a, b):
    """numpy's a @ b for operands of rank 1 and 2."""
    ta, tb = type_of(a), type_of(b)
    if ta is None or tb is None or ta.ndim not in (1, 2) or tb.ndim not in (1, 2):
        raise _at_user(ShapeError, f"'@' takes arrays of rank 1 or 2, got {ta or a} @ {tb or b}")
    if ta.ndim == 2 and tb.ndim == 2:
        return bind(ops.PRIMITIVES["matmul"], a, b, transpose_a=False, transpose_b=False)
    if ta.ndim == 2:
        return bind(ops.PRIMITIVES["matvec"], a, b, transpose_a=False)
    if tb.ndim == 2:
        return bind(ops.PRIMITIVES["matvec"], b, a, transpose_a=True)
    if ta.shape != tb.shape:
        raise _at_user(ShapeError, f"'@' of vectors needs equal lengths, got {ta} @ {tb}")
    return reduce_sum(elementwise("mul", a, b))


# ----------------------------------------------------------------------------- programs

def replay(ctx: TraceContext, program: Program, args: list) -> tuple[dict[int, Tracer], list]:
    """Re-emit a program's equations into ctx on the given traced args (sources kept).

    Returns the map from each of the program's vars to its new traced value, and the outputs.
    """
    env = {id(old): a for old, a in zip(program.inputs, args, strict=True)}

    def atom(a):
        return a if isinstance(a, Lit) else env[id(a)].var

    source = ctx.source
    for e in program.eqns:
        ctx.source = e.source
        outs = ctx.emit(e.prim, [atom(a) for a in e.inputs], e.params)
        env.update((id(old), Tracer(ctx, new)) for old, new in zip(e.outputs, outs, strict=True))
    ctx.source = source
    return env, [a if isinstance(a, Lit) else env[id(a)] for a in program.outputs]


def trace_program(fn, sig: Signature) -> Program:
    """Trace fn on one Tracer per parameter; the result must have the annotated return type."""
    ctx = TraceContext()
    inputs = tuple(Var(p.type) for p in sig.params)
    result = fn(*[Tracer(ctx, v) for v in inputs])
    return Program(inputs, ctx.eqns, (as_result(result, sig.result, ctx, fn),))


def as_result(result, expected: ArrayType, ctx: TraceContext, fn):
    """The output atom of a traced function, checked against its return annotation."""
    name = getattr(fn, "__qualname__", "the function")
    where = def_location(fn)
    if _is_number(result) and expected.ndim == 0 and expected.dtype.is_float:
        return Lit(result, expected)
    if not isinstance(result, Tracer) or result.ctx is not ctx:
        raise TraceError(f"{where}: {name} must return a value computed from its parameters "
                         f"(annotated {expected}), got {_describe(result)}")
    producer = next((e for e in ctx.eqns if result.var in e.outputs), None)
    where = producer.source if producer else where
    if result.dtype != expected.dtype:
        raise DTypeError(f"{where}: {name} returns {result.type}, its annotation says {expected}")
    if result.shape != expected.shape:
        raise ShapeError(f"{where}: {name} returns {result.type}, its annotation says {expected}")
    return result.var
