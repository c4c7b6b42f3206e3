"""The code of every elementwise primitive: `EMITTERS`, one emitter per primitive name.

An emitter takes an IRBuilder, the LLVM type of the result (a scalar type, or a vector type in a
GEMM epilogue), the operands' values and the equation's params, and returns the result. Values
are registers of their dtype's computing type: floats, and masks as i1 (codegen.py stores them
as bytes). The arithmetic lives in scalar.py and mathlib.py; the rest is one instruction or a
few selects here, with numpy's special values: comparisons are false with a nan operand (`!=`
true; integers compare signed), maximum and minimum give nan if either operand is nan and,
when the operands are equal, the second one (numpy's choice between -0 and +0).
"""
from __future__ import annotations

from llvmlite import ir

from ..core.types import DType, bool_
from .mathlib import emit_cos, emit_erfc, emit_expm1, emit_log1p, emit_sin, emit_softplus
from .scalar import emit_convert, emit_exp, emit_log, emit_pow, emit_sigmoid, emit_tanh, intrinsic


def value_type(dtype: DType) -> ir.Type:
    """The LLVM type of a dtype's values in registers: masks are i1."""
    if dtype == bool_:
        return ir.IntType(1)
    if dtype.is_float:
        return ir.FloatType() if dtype.itemsize == 4 else ir.DoubleType()
    return ir.IntType(8 * dtype.itemsize)


def _c(ty, value):
    return ir.Constant(ty, value)


def _maximum(b, ty, x, y, *, less: bool = False):
    """numpy's maximum (minimum with less): y where they are equal, nan if either is nan."""
    chosen = b.select(b.fcmp_ordered("<" if less else ">", x, y), x, y)
    return b.select(b.fcmp_unordered("uno", x, x), x, chosen)


def _compare(op: str, unordered: bool = False):
    """A comparison of floats (false with a nan operand, or true with unordered), or of
    integers (signed, the narrower one sign-extended to the wider one's width)."""
    def emit(b, ty, x, y):
        width = lambda v: getattr(v.type, "element", v.type).width  # noqa: E731
        if not isinstance(getattr(x.type, "element", x.type), ir.IntType):
            return (b.fcmp_unordered if unordered else b.fcmp_ordered)(op, x, y)
        if width(x) < width(y):
            x = b.sext(x, y.type)
        elif width(y) < width(x):
            y = b.sext(y, x.type)
        return b.icmp_signed(op, x, y)
    return emit


EMITTERS = {
    "neg": lambda b, ty, x: b.fneg(x),
    "exp": emit_exp,
    "log": emit_log,
    "tanh": emit_tanh,
    "sigmoid": emit_sigmoid,
    # numpy's maximum(x, 0): +0 for -0, nan for nan
    "relu": lambda b, ty, x: b.select(b.fcmp_ordered("<=", x, _c(ty, 0.0)), _c(ty, 0.0), x),
    "step": lambda b, ty, x: b.select(b.fcmp_ordered(">", x, _c(ty, 0.0)), _c(ty, 1.0),
                                      _c(ty, 0.0)),
    "pow": emit_pow,
    "add": lambda b, ty, x, y: b.fadd(x, y),
    "sub": lambda b, ty, x, y: b.fsub(x, y),
    "mul": lambda b, ty, x, y: b.fmul(x, y),
    "div": lambda b, ty, x, y: b.fdiv(x, y),
    "convert_element_type": emit_convert,
    "abs": lambda b, ty, x: intrinsic(b, "llvm.fabs", x),
    "sqrt": lambda b, ty, x: intrinsic(b, "llvm.sqrt", x),
    "log1p": emit_log1p,
    "expm1": emit_expm1,
    "sin": emit_sin,
    "cos": emit_cos,
    "softplus": emit_softplus,
    "erfc": emit_erfc,
    "maximum": _maximum,
    "minimum": lambda b, ty, x, y: _maximum(b, ty, x, y, less=True),
    "lt": _compare("<"),
    "le": _compare("<="),
    "gt": _compare(">"),
    "ge": _compare(">="),
    "eq": _compare("=="),
    "ne": _compare("!=", unordered=True),
    "logical_and": lambda b, ty, x, y: b.and_(x, y),
    "logical_or": lambda b, ty, x, y: b.or_(x, y),
    "logical_xor": lambda b, ty, x, y: b.xor(x, y),
    "logical_not": lambda b, ty, x: b.xor(x, _c(ty, 1)),
    "select": lambda b, ty, mask, x, y: b.select(mask, x, y),
}
