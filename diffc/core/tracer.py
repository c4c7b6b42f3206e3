"""Traced arrays and traced programs.

`Tracer` is the array a traced function computes with: numpy's operators and methods, each
applying primitives (so tracing records them). `trace_program` runs a function on one Tracer per
parameter and returns its `Program`; `replay` re-emits a program into another trace (how
transforms build on a traced program).
Invariants: what cannot be traced (Python control flow on a value, an unsupported operator or
numpy function) raises `TraceError` at the user's line, naming the supported alternative.
"""
from __future__ import annotations

import math

import numpy as np

from . import shapes
from .elementwise import (
    COMPARISONS,
    LOGICAL,
    astype,
    clip,
    compare,
    elementwise,
    logical,
    size_value,
    where,
)
from .errors import DTypeError, ShapeError, TraceError
from .indexing import getitem
from .ir import Lit, Program, Var
from .linalg import matmul
from .reductions import arg, average, reduce, total
from .sizes import Size
from .structural import transpose
from .trace import TraceContext, Traced, at_user, describe, is_finite_number, is_number
from .types import ArrayType, Signature, def_location


def _binary(apply, *name):
    """A binary operator and its reflected form: apply(*name, self, other) and
    apply(*name, other, self)."""
    return (lambda self, other: apply(*name, self, other),
            lambda self, other: apply(*name, other, self))


class Tracer(Traced):
    """A traced array: the stand-in for an argument or intermediate value during tracing, with
    the operators and methods of a numpy array."""

    __slots__ = ()
    __array_priority__ = 1000  # numpy defers binary operators to us

    T = property(lambda self: transpose(self))

    def __repr__(self) -> str:
        return f"Tracer({self.var.type})"

    def sum(self, axis=None, keepdims=False):
        return total(self, axis, keepdims)

    def mean(self, axis=None, keepdims=False):
        return average(self, axis, keepdims)

    __add__, __radd__ = _binary(elementwise, "add")
    __sub__, __rsub__ = _binary(elementwise, "sub")
    __mul__, __rmul__ = _binary(elementwise, "mul")
    __truediv__, __rtruediv__ = _binary(elementwise, "div")
    __matmul__, __rmatmul__ = _binary(matmul)
    __neg__ = lambda self: elementwise("neg", self)  # noqa: E731
    __pos__ = lambda self: self  # noqa: E731

    def __pow__(self, exponent):
        if isinstance(exponent, Tracer) or not is_number(exponent):
            raise at_user(TraceError, f"'**' takes a constant Python number as exponent, got "
                                       f"{describe(exponent)}")
        y = float(exponent)
        return elementwise("pow", self, y=int(y) if y.is_integer() else y)

    def __rpow__(self, base):
        """c ** x for a positive constant c: exp(x * log(c)) (within the numerics tolerances;
        1 ** x is 1, nan and inf included, as numpy's)."""
        if not is_finite_number(base) or base <= 0:
            raise at_user(TraceError, f"a traced exponent needs a positive constant base "
                                       f"(c ** x is exp(x * log(c))), got {describe(base)}")
        if base == 1:  # ones of x's shape and dtype
            one = self.var.type.dtype.np_dtype.type(1)
            return where(compare("eq", self, self), one, one)
        return elementwise("exp", self * math.log(base))

    # ------------------------------------------------------------------ shapes and indexing
    @property
    def shape(self) -> tuple:
        """numpy's shape: ints for static dims, sizes (sizes.py) for symbolic ones."""
        return tuple(Size.of(self, k) if isinstance(d, str) else d
                     for k, d in enumerate(self.var.type.shape))

    def reshape(self, *shape):
        return shapes.reshape(self, shape[0] if len(shape) == 1 else shape)

    def transpose(self, *axes):
        return shapes.transpose(self, (axes[0] if len(axes) == 1 else axes) or None)

    def squeeze(self, axis=None):
        return shapes.squeeze(self, axis)

    def take(self, indices, axis=0):
        return shapes.take(self, indices, axis)

    __getitem__ = getitem

    def __setitem__(self, index, value):
        raise at_user(TraceError, "assignment into a traced array (x[i] = v) is not supported: "
                                  "traced arrays are values; make a new one with "
                                  "nn.where(mask, v, x), or build it with nn.concatenate / "
                                  "nn.stack")

    def __len__(self) -> int:
        if self.ndim == 0:
            raise at_user(TraceError, f"len() of a scalar ({self.type}); it has no axes")
        n = self.var.type.shape[0]
        if isinstance(n, str):
            raise at_user(TraceError, f"len() of {self.type}: its first axis is the symbolic "
                                      f"{n}, bound at call time; x.shape[0] is that size as a "
                                      f"number to compute with")
        return n

    def __iter__(self):
        """numpy's iteration over the first axis, when its size is static: x[0], x[1], ..."""
        n = self.var.type.shape[0] if self.ndim else None
        if not isinstance(n, int):
            raise at_user(TraceError, f"iteration over {self.type}: a loop needs a static "
                                      f"number of steps, and its first axis is "
                                      f"{n or 'missing'}; write the loop as array operations "
                                      f"(nn.sum(x, 0), x @ w)")
        return (self[i] for i in range(n))

    def _refuse(self, what: str, instead: str):
        raise at_user(TraceError, f"{what} on a traced value cannot be traced: Python control "
                                   f"flow needs the value, which exists only when the compiled "
                                   f"function runs; {instead}")

    __bool__ = lambda self: self._refuse(  # noqa: E731
        "truth testing (if/while/and/or/not on a value or a comparison, or max()/min() of "
        "arrays)",
        "compute both branches and select with nn.where(mask, a, b); for max(0, x) write "
        "nn.relu(x), for max(a, b) nn.maximum(a, b)")
    __index__ = lambda self: self._refuse(  # noqa: E731
        "use as a Python int (range(), a list index)",
        "index arrays with an i32/i64 array: x[idx] or take(x, idx)")
    __int__ = lambda self: self._refuse("int()", "keep computing with the array")  # noqa: E731
    __float__ = lambda self: self._refuse(  # noqa: E731
        "float()", "keep computing with the array (a diffc function returns a scalar result "
                   "as a Python float)")
    __complex__ = lambda self: self._refuse("complex()", "diffc computes in real numbers")  # noqa
    __array__ = lambda self, *a, **k: self._refuse(  # noqa: E731
        "conversion to a numpy array", "use diffc.nn's functions and the array's operators")

    def _unsupported(self, operation: str):
        raise at_user(TraceError, f"{operation} on a traced array is not supported; supported: "
                                   f"+ - * / ** @ abs() comparisons, & | ^ ~ on masks, "
                                   f"indexing, .T .reshape .sum .mean .max .min .clip .astype "
                                   f"and diffc.nn")

    # ---------------------------------------------------- comparisons, reductions, conversions
    def max(self, axis=None, keepdims=False):
        return reduce("max", self, axis, keepdims)

    def min(self, axis=None, keepdims=False):
        return reduce("min", self, axis, keepdims)

    def argmax(self, axis=None):
        return arg("argmax", self, axis)

    def argmin(self, axis=None):
        return arg("argmin", self, axis)

    def clip(self, lo=None, hi=None):
        return clip(self, lo, hi)

    def astype(self, dtype):
        return astype(self, dtype)

    __abs__ = lambda self: elementwise("abs", self)  # noqa: E731
    __lt__ = lambda self, other: compare("lt", self, other)  # noqa: E731
    __le__ = lambda self, other: compare("le", self, other)  # noqa: E731
    __gt__ = lambda self, other: compare("gt", self, other)  # noqa: E731
    __ge__ = lambda self, other: compare("ge", self, other)  # noqa: E731
    __eq__ = lambda self, other: compare("eq", self, other)  # noqa: E731
    __ne__ = lambda self, other: compare("ne", self, other)  # noqa: E731
    __hash__ = object.__hash__
    # on masks, as numpy's on boolean arrays: logical, element by element
    __and__, __rand__ = _binary(logical, "logical_and")
    __or__, __ror__ = _binary(logical, "logical_or")
    __xor__, __rxor__ = _binary(logical, "logical_xor")
    __invert__ = lambda self: logical("logical_not", self)  # noqa: E731

    # numpy functions applied to a traced value: these trace, others are refused
    _UFUNCS = {np.add: "add", np.subtract: "sub", np.multiply: "mul", np.true_divide: "div",
               np.negative: "neg", np.exp: "exp", np.log: "log", np.tanh: "tanh",
               np.sqrt: "sqrt", np.absolute: "abs", np.fabs: "abs", np.log1p: "log1p",
               np.expm1: "expm1", np.sin: "sin", np.cos: "cos", np.maximum: "maximum",
               np.minimum: "minimum", np.less: "lt", np.less_equal: "le", np.greater: "gt",
               np.greater_equal: "ge", np.equal: "eq", np.not_equal: "ne",
               np.logical_and: "logical_and", np.logical_or: "logical_or",
               np.logical_xor: "logical_xor", np.logical_not: "logical_not",
               np.bitwise_and: "logical_and", np.bitwise_or: "logical_or",
               np.bitwise_xor: "logical_xor", np.invert: "logical_not"}
    _FUNCTIONS = {np.where: where,
                  np.clip: lambda a, a_min=None, a_max=None: clip(a, a_min, a_max),
                  np.sum: total, np.mean: average, np.dot: matmul,  # dot is @ to rank 2
                  np.max: lambda *a, **k: reduce("max", *a, **k),
                  np.min: lambda *a, **k: reduce("min", *a, **k),
                  np.argmax: lambda *a, **k: arg("argmax", *a, **k),
                  np.argmin: lambda *a, **k: arg("argmin", *a, **k)}

    def __array_ufunc__(self, ufunc, method, *inputs, **kwargs):
        if method == "__call__" and not kwargs and ufunc in self._UFUNCS:
            name = self._UFUNCS[ufunc]
            if name in COMPARISONS:
                return compare(name, *inputs)
            return logical(name, *inputs) if name in LOGICAL else elementwise(name, *inputs)
        if method == "__call__" and not kwargs and ufunc is np.square:
            return elementwise("pow", *inputs, y=2)
        if method == "__call__" and not kwargs and ufunc is np.power:
            base, exponent = inputs
            return base.__pow__(exponent) if isinstance(base, Tracer) else \
                exponent.__rpow__(base)
        if method == "__call__" and ufunc is np.matmul and not kwargs:
            return matmul(*inputs)
        raise at_user(TraceError, f"numpy function {ufunc.__name__} applied to a traced value "
                                   f"is not supported; use diffc.nn")

    def __array_function__(self, func, types, args, kwargs):
        if func in self._FUNCTIONS:
            try:
                return self._FUNCTIONS[func](*args, **kwargs)
            except TypeError as e:  # an argument numpy has and diffc has not (out=, dtype=)
                raise at_user(TraceError, f"numpy function {func.__name__} applied to a "
                                           f"traced value: {e}; use diffc.nn") from None
        raise at_user(TraceError, f"numpy function {func.__name__} applied to a traced value "
                                   f"is not supported; use diffc.nn")


    __floordiv__ = __rfloordiv__ = lambda self, *_: self._unsupported("'//'")  # noqa: E731
    __mod__ = __rmod__ = lambda self, *_: self._unsupported("'%'")  # noqa: E731
    __divmod__ = __rdivmod__ = lambda self, *_: self._unsupported("divmod()")  # noqa: E731
    __round__ = lambda self, *_: self._unsupported("round()")  # noqa: E731
    __trunc__ = __floor__ = __ceil__ = lambda self: self._unsupported(  # noqa: E731
        "rounding (math.trunc, floor, ceil)")
    __lshift__ = __rlshift__ = __rshift__ = __rrshift__ = \
        lambda self, *_: self._unsupported("a shift (<< >>)")  # noqa: E731

    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        raise at_user(TraceError, f"traced arrays have no attribute {name!r}; supported: "
                                  f"+ - * / ** @ abs() comparisons, & | ^ ~ on masks, "
                                  f"indexing, .T .reshape .transpose .squeeze .take .sum "
                                  f".mean .max .min .argmax .argmin .clip .astype .shape "
                                  f".dtype and diffc.nn")


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
    if is_number(result) and expected.ndim == 0 and expected.dtype.is_float:
        return Lit(result, expected)
    if isinstance(result, Size) and expected.ndim == 0 and expected.dtype.is_float:
        result = size_value(result, expected.dtype)
    if not isinstance(result, Tracer) or result.ctx is not ctx:
        raise TraceError(f"{where}: {name} must return a value computed from its parameters "
                         f"(annotated {expected}), got {describe(result)}")
    producer = next((e for e in ctx.eqns if result.var in e.outputs), None)
    where = producer.source if producer else where
    if result.dtype != expected.dtype:
        raise DTypeError(f"{where}: {name} returns {result.type}, its annotation says {expected}")
    if result.type.shape != expected.shape:
        raise ShapeError(f"{where}: {name} returns {result.type}, its annotation says {expected}")
    return result.var
