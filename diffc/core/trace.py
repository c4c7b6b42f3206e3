"""Tracing: applying primitives to traced values records equations.

A `TraceContext` holds the equations one trace has recorded; a `Traced` value stands for a
`Var` of it (`tracer.py` gives traced arrays their operators). `bind(prim, *args)` applies a
primitive: when an argument is traced it records an equation and returns traced outputs (of the
class of that argument), else it runs the primitive's numpy implementation, so every operation
is one code path for tracing and for eager numpy (the reference).
Invariants: a 0-d numpy constant becomes a `Lit`; any other captured numpy array is refused;
errors about the user's code (`ShapeError` / `DTypeError` / `TraceError`) start with the user's
`file:line`, which every recorded equation also carries as its `source`.
"""
from __future__ import annotations

import math
import os
import sys

import numpy as np

from .errors import DiffcError, DTypeError, ShapeError, TraceError
from .ir import Eqn, Lit, Var
from .primitive import Primitive
from .types import ArrayType, DType, check_size, dtype_of_numpy

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__))) + os.sep


def user_location() -> str:
    """`file:line` of the innermost frame outside the diffc package."""
    frame = sys._getframe(1)
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(
            _PACKAGE_DIR):
        frame = frame.f_back
    return f"{frame.f_code.co_filename}:{frame.f_lineno}" if frame else "<unknown>"


def at_user(error_type, message: str) -> DiffcError:
    """An error of error_type whose message starts with the user's file:line."""
    return error_type(f"{user_location()}: {message}")


class TraceContext:
    """The equations recorded so far by one trace."""

    def __init__(self):
        self.eqns: list[Eqn] = []
        self.source: str | None = None  # set by transforms: the user line new equations stem from

    def emit(self, prim: Primitive, inputs, params: dict) -> tuple[Var, ...]:
        types = [a.type for a in inputs]
        try:
            out = prim.shape_rule(*types, **params)
            outs = tuple(Var(check_size(t)) for t in (out if isinstance(out, tuple) else (out,)))
        except (ShapeError, DTypeError) as e:
            raise type(e)(f"{self.source or user_location()}: {e}") from None
        self.eqns.append(Eqn(prim, tuple(inputs), params, outs, self.source or user_location()))
        return outs


class Traced:
    """A value of a trace: its context and the var it stands for."""

    __slots__ = ("ctx", "var")

    def __init__(self, ctx: TraceContext, var: Var):
        self.ctx = ctx
        self.var = var

    type = property(lambda self: self.var.type)
    shape = property(lambda self: self.var.type.shape)
    dtype = property(lambda self: self.var.type.dtype)
    ndim = property(lambda self: self.var.type.ndim)


def is_number(x) -> bool:
    return isinstance(x, int | float | np.integer | np.floating) and not isinstance(x, bool)


def is_finite_number(x) -> bool:
    """A real number (numpy scalars too, not bools) whose float value is finite."""
    try:
        return is_number(x) and math.isfinite(x)
    except OverflowError:  # an int too large for a float
        return False


def describe(x) -> str:
    """An operand as error messages show it."""
    if isinstance(x, Traced):
        return f"{x.type} array"
    if isinstance(x, np.ndarray):
        return f"a numpy array {x.shape}"
    return f"{type(x).__name__} {x!r}"[:80]


def type_of(x) -> ArrayType | None:
    """The type of an operand; None for a Python number (it takes its partner's dtype)."""
    if isinstance(x, Traced):
        return x.type
    if is_number(x):
        return None
    if isinstance(x, np.ndarray):
        dtype = dtype_of_numpy(x.dtype)
        if dtype is None:
            raise at_user(DTypeError, f"expected an array of f32, f64, i32, i64 or bool, got "
                                      f"dtype {x.dtype}")
        return ArrayType(dtype, x.shape)
    raise at_user(TraceError, f"expected a traced array, a numpy array or a number, got "
                              f"{describe(x)}")


def context(args) -> TraceContext | None:
    """The trace the traced arguments belong to (None if none is traced)."""
    ctxs = {id(a.ctx): a.ctx for a in args if isinstance(a, Traced)}
    if len(ctxs) > 1:
        raise at_user(TraceError, "a traced value from another trace (leaked from an earlier "
                                  "call?) is mixed into this one")
    return next(iter(ctxs.values()), None)


def bind(prim: Primitive, *args, **params):
    """Apply a primitive: record an equation when tracing, else run its numpy implementation."""
    ctx = context(args)
    if ctx is None:
        arrays = [np.asarray(a) for a in args]
        try:
            prim.shape_rule(*[type_of(a) for a in arrays], **params)
        except (ShapeError, DTypeError) as e:
            raise at_user(type(e), str(e)) from None
        return np.asarray(prim.impl(*arrays, **params))  # 0-d arrays, not numpy scalars: typed
    atoms = []
    for a in args:
        if isinstance(a, np.ndarray) and a.ndim == 0:  # a 0-d constant is a literal
            a = Lit(a.item(), type_of(a))
        else:
            refuse_captured(a)
        atoms.append(a.var if isinstance(a, Traced) else a)
    outs = ctx.emit(prim, atoms, params)
    wrap = type(next(a for a in args if isinstance(a, Traced)))
    return wrap(ctx, outs[0]) if len(outs) == 1 else tuple(wrap(ctx, v) for v in outs)


def refuse_captured(x) -> None:
    if isinstance(x, np.ndarray) and x.ndim:
        raise at_user(TraceError, f"a numpy array {x.shape} captured from outside the traced "
                                  f"function; pass it as a parameter instead")


def constant(value, dtype: DType, ctx: TraceContext | None):
    """A Python number as an operand of dtype: a literal when tracing, else a numpy scalar."""
    return Lit(value, ArrayType(dtype, ())) if ctx else dtype.np_dtype.type(value)
