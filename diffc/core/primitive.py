"""The `Primitive`: one operation of the IR, with everything the stages above ask of it.

A primitive carries its name, its numpy implementation (the eager reference and the oracle's),
its shape/dtype rule, its reverse rule (or None: not differentiable, and AD names it) and flags
that say what kind of operation it is, so that passes ask the primitive instead of keeping lists
of names. Every primitive is registered in `PRIMITIVES` by name (the IR prints names, the
compiler's lowering tables are keyed by them). The shape-rule helpers below raise `ShapeError` /
`DTypeError` saying what was expected and what was found.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .errors import DTypeError, ShapeError
from .types import ArrayType, DType, i32, i64


@dataclass(eq=False)
class Primitive:
    name: str
    impl: Callable  # numpy values, **params -> value
    shape_rule: Callable  # ArrayTypes, **params -> ArrayType (or a tuple of them)
    vjp: Callable | None  # reverse rule; None: not differentiable (an error names it)
    elementwise: bool = False  # out[i] = f(in0[i], in1[i], ...): one loop, fusible
    indexed: bool = False  # fusible too: reads its inputs at a mapped index (so never one its
    #                        own fused group computes)
    epilogue: bool = False  # may finish a matmul's results while they are in vector registers
    view: bool = False  # its output is its input's elements in the same row-major order: the
    #                     memory plan may give it its input's buffer (no copy)
    moves: bool = False  # only moves values: an integer label stays that label through it
    labels: str | None = None  # operand 1 holds integer labels indexing the axis
    #                            `axis` (a param; else the last axis) of operand 0 ("input")
    #                            or of the output ("output")
    rowwise: bool = False  # updates operand 0 row by row, reading it only at the row written
    transpose_flags: tuple[str, ...] = ()  # params saying an operand is read transposed
    constant_indices: Callable | None = None  # operand types, **params -> ((i, dim), ...):
    #                                           constant indices i into symbolic dims, each
    #                                           needing dim > i (checked at call time)
    index_bound: Callable | None = None  # operand types, **params -> the dims whose product
    #                                      bounds its integer output: 0 <= out < product

    def __repr__(self) -> str:
        return f"Primitive({self.name})"


PRIMITIVES: dict[str, Primitive] = {}


def primitive(name: str, impl: Callable, shape_rule: Callable, vjp: Callable | None,
              **flags) -> Primitive:
    """Make and register a primitive."""
    assert name not in PRIMITIVES, name
    PRIMITIVES[name] = p = Primitive(name, impl, shape_rule, vjp, **flags)
    return p


# ----------------------------------------------------------------------------- rule helpers

def float_dtype(what: str, *types: ArrayType) -> DType:
    """The one floating dtype of all types, or a DTypeError."""
    dtype = types[0].dtype
    for t in types:
        if not t.dtype.is_float:
            raise DTypeError(f"{what} needs floating-point operands, got {t}")
        if t.dtype != dtype:
            raise DTypeError(f"{what} needs operands of one dtype, got {dtype.name} and "
                             f"{t.dtype.name} (convert explicitly; diffc does not promote)")
    return dtype


def check_rank(what: str, t: ArrayType, ranks: tuple[int, ...]) -> None:
    if t.ndim not in ranks:
        want = " or ".join(f"rank {r}" for r in ranks)
        raise ShapeError(f"{what} expects {want}, got {t}")


def dims_equal(what: str, a, b, ta: ArrayType, tb: ArrayType) -> None:
    if a != b:
        raise ShapeError(f"{what}: dimension {a} of {ta} does not match dimension {b} of {tb}")


def check_axes(t: ArrayType, axes: tuple[int, ...]) -> tuple[int, ...]:
    for a in axes:
        if not 0 <= a < t.ndim:
            raise ShapeError(f"axis {a} is out of range for {t}")
    if len(set(axes)) != len(axes):
        raise ShapeError(f"repeated axis in {axes}")
    return axes


def label_rule(what: str, x: ArrayType, y: ArrayType) -> None:
    """y holds one integer label per row of x (x's shape without its last axis)."""
    if y.dtype not in (i32, i64):
        raise DTypeError(f"{what}: labels must be integers (i32/i64), got {y}")
    if y.shape != x.shape[:-1]:
        raise ShapeError(f"{what}: integer labels of shape {x.shape[:-1]} expected for {x}, "
                         f"got {y}")
