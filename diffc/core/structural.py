"""Structural primitives: broadcasting, reshaping, transposing, summing, sizes, constants,
dtype conversion; and the operations that apply them with numpy's conventions (the shape
operations users call are in shapes.py).

Broadcasting is explicit in the IR: `broadcast_to` writes numpy's implicit broadcasting as a
`reshape` (dropping the stretched size-1 axes) and a `broadcast_in_dim`, so no reverse rule
ever sees implicit broadcasting. Axes are normalized here (negative axes, tuples) once.
"""
from __future__ import annotations

import numpy as np

from .errors import DTypeError, ShapeError
from .primitive import check_axes, float_dtype, primitive
from .trace import at_user, bind, type_of
from .types import ArrayType, DType


def _broadcast_in_dim_rule(x: ArrayType, *, shape, broadcast_dimensions) -> ArrayType:
    if len(broadcast_dimensions) != x.ndim or list(broadcast_dimensions) != sorted(
            set(broadcast_dimensions)) or any(not 0 <= d < len(shape) for d in
                                              broadcast_dimensions):
        raise ShapeError(f"broadcast_in_dim: dimensions {broadcast_dimensions} do not map "
                         f"{x} into {shape}")
    for i, d in enumerate(broadcast_dimensions):
        if x.shape[i] != shape[d]:
            raise ShapeError(f"broadcast_in_dim: cannot broadcast {x} to shape {shape}")
    return ArrayType(x.dtype, tuple(shape))


def _broadcast_in_dim(x, *, shape, broadcast_dimensions):
    kept = [shape[d] for d in broadcast_dimensions]
    expanded = np.reshape(x, [s if d in broadcast_dimensions else 1
                              for d, s in enumerate(shape)]) if kept else x
    return np.broadcast_to(expanded, shape).copy()


def _broadcast_in_dim_vjp(g, x, *, out, shape, broadcast_dimensions):
    summed = tuple(d for d in range(len(shape)) if d not in broadcast_dimensions)
    return (reduce_sum(g, summed),)


broadcast_in_dim_p = primitive("broadcast_in_dim", _broadcast_in_dim, _broadcast_in_dim_rule,
                               _broadcast_in_dim_vjp, indexed=True, epilogue=True, moves=True)


def _count(shape) -> str:
    """A shape's number of elements as a product: the static part, then the symbols."""
    static = 1
    for d in shape:
        static *= d if isinstance(d, int) else 1
    return "*".join([str(static)] + sorted(d for d in shape if isinstance(d, str)))


def _reshape_rule(x: ArrayType, *, shape) -> ArrayType:
    if _count(x.shape) != _count(shape):
        raise ShapeError(f"cannot reshape {x} ({_count(x.shape)} elements) to "
                         f"({', '.join(map(str, shape))}) ({_count(shape)} elements): the "
                         f"numbers of elements must be provably equal")
    return ArrayType(x.dtype, tuple(shape))


# the same elements in row-major order, in another shape: a relabelling of the same buffer
# (the memory plan makes it a view); it also inserts and removes broadcasting's size-1 axes
reshape_p = primitive("reshape", lambda x, *, shape: np.reshape(x, shape).copy(),
                      _reshape_rule,
                      lambda g, x, *, out, shape: (bind(reshape_p, g, shape=type_of(x).shape),),
                      moves=True, view=True)


def _transpose_rule(x: ArrayType, *, perm) -> ArrayType:
    if sorted(perm) != list(range(x.ndim)):
        raise ShapeError(f"transpose: {perm} is not a permutation of the axes of {x}")
    return ArrayType(x.dtype, tuple(x.shape[p] for p in perm))


transpose_p = primitive(
    "transpose", lambda x, *, perm: np.transpose(x, perm).copy(), _transpose_rule,
    lambda g, x, *, out, perm: (bind(transpose_p, g, perm=tuple(np.argsort(perm))),),
    indexed=True, moves=True)


def _reduce_rule(name):
    def rule(x: ArrayType, *, axes) -> ArrayType:
        float_dtype(name, x)
        axes = check_axes(x, axes)
        return ArrayType(x.dtype, tuple(d for i, d in enumerate(x.shape) if i not in axes))
    return rule


def _reduce_sum_vjp(g, x, *, out, axes):
    shape = type_of(x).shape
    kept = tuple(d for d in range(len(shape)) if d not in axes)
    return (bind(broadcast_in_dim_p, g, shape=shape, broadcast_dimensions=kept),)


reduce_sum_p = primitive("reduce_sum", lambda x, *, axes: np.sum(x, axis=tuple(axes)),
                         _reduce_rule("sum"), _reduce_sum_vjp)


def _dim_size_rule(x: ArrayType, *, axis, dtype) -> ArrayType:
    check_axes(x, (axis,))
    return ArrayType(dtype, ())


# the size of one axis of x as a float scalar: how means over symbolic dims divide
dim_size_p = primitive("dim_size", lambda x, *, axis, dtype: dtype.np_dtype.type(x.shape[axis]),
                       _dim_size_rule,
                       lambda g, x, *, out, axis, dtype: (None,))  # depends on x's shape only


def _fill_rule(*, shape, dtype, value) -> ArrayType:
    return ArrayType(dtype, tuple(shape))


# a constant array: the seed of the reverse pass and the gradient of unused parameters
fill_p = primitive("fill", lambda *, shape, dtype, value: np.full(shape, value, dtype.np_dtype),
                   _fill_rule, lambda g, *, out, shape, dtype, value: ())


def _convert_element_type_rule(x: ArrayType, *, dtype: DType) -> ArrayType:
    if not dtype.is_float:
        raise DTypeError(f"astype converts to f32 or f64, got {x} to {dtype.name}")
    return ArrayType(dtype, x.shape)


def _convert_element_type_vjp(g, x, *, out, dtype):
    x_dtype = type_of(x).dtype
    if not x_dtype.is_float:  # from integers or a mask: piecewise constant
        return (None,)
    return (bind(convert_element_type_p, g, dtype=x_dtype),)


# x in a floating dtype: another float rounded to nearest (or widened exactly), a mask as 0 or
# 1, an integer rounded to nearest; the only elementwise primitive with operands of any dtype
convert_element_type_p = primitive(
    "convert_element_type", lambda x, *, dtype: x.astype(dtype.np_dtype),
    _convert_element_type_rule, _convert_element_type_vjp, elementwise=True)


# ----------------------------------------------------------------------------- operations

def broadcast_shapes(*types: ArrayType) -> tuple:
    """numpy's broadcasting of shapes, with symbolic dims matching only themselves (or 1)."""
    rank = max(t.ndim for t in types)
    out = []
    for i in range(rank):
        dims = {t.shape[i - rank + t.ndim] for t in types if i - rank + t.ndim >= 0} - {1}
        if len(dims) > 1:
            raise at_user(ShapeError, f"cannot broadcast {' with '.join(map(str, types))}: "
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
        x = bind(reshape_p, x, shape=tuple(t.shape[i] for i in kept))
    return bind(broadcast_in_dim_p, x, shape=tuple(shape),
                broadcast_dimensions=tuple(pad + i for i in kept))


def expand_last(t, shape):
    """t of shape[:-1] broadcast along a new last axis of shape[-1] (numpy's t[..., None])."""
    return bind(broadcast_in_dim_p, t, shape=tuple(shape),
                broadcast_dimensions=tuple(range(len(shape) - 1)))


def normalize_axes(t: ArrayType, axis) -> tuple[int, ...]:
    """numpy's `axis` (None, an int or a tuple; negative counts from the end) as sorted axes."""
    axes = tuple(range(t.ndim)) if axis is None else axis if isinstance(axis, tuple) else (axis,)
    out = []
    for a in axes:
        if not isinstance(a, int | np.integer) or not -t.ndim <= a < t.ndim:
            raise at_user(ShapeError, f"axis {a!r} is out of range for {t}")
        out.append(int(a) % t.ndim)
    if len(set(out)) != len(out):
        raise at_user(ShapeError, f"repeated axis in {axis!r}")
    return tuple(sorted(out))


def reduce_sum(x, axis=None):
    """numpy's x.sum(axis): the reduced axes dropped."""
    axes = normalize_axes(type_of(x), axis)
    return bind(reduce_sum_p, x, axes=axes) if axes else x


def transpose(x):
    """numpy's x.T: the axes reversed."""
    t = type_of(x)
    if t.ndim < 2:
        return x
    return bind(transpose_p, x, perm=tuple(reversed(range(t.ndim))))
