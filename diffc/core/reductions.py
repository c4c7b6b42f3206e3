"""Reductions besides the sum: max, min, logsumexp (over any axes), argmax, argmin (over one
axis or all); and the operations that apply them with numpy's conventions (`axis` None, an int
or a tuple, negative axes, `keepdims`), sum and mean with `keepdims` too.

Reverse rules: max and min share the cotangent equally among the elements equal to the result
(JAX's convention); logsumexp's is the softmax over the reduced axes. argmax and argmin give
int64 indices (first occurrence on ties, the first nan if any, as numpy) and no gradient.
"""
from __future__ import annotations

import numpy as np

from .elementwise import astype, compare, mean
from .elementwise import elementwise as apply
from .errors import ShapeError
from .primitive import check_axes, float_dtype, primitive
from .structural import broadcast_in_dim_p, normalize_axes, reduce_sum, reshape_p
from .trace import at_user, bind, type_of
from .types import ArrayType, i64


def _reduce_rule(name: str):
    def rule(x: ArrayType, *, axes) -> ArrayType:
        float_dtype(name, x)
        axes = check_axes(x, axes)
        return ArrayType(x.dtype, tuple(d for i, d in enumerate(x.shape) if i not in axes))
    return rule


def _spread(v, x, axes):
    """v (x's shape without `axes`) broadcast back to x's shape."""
    t = type_of(x)
    kept = tuple(d for d in range(t.ndim) if d not in axes)
    return bind(broadcast_in_dim_p, v, shape=t.shape, broadcast_dimensions=kept)


def _chooser_vjp(g, x, *, out, axes):
    """g shared equally among the elements equal to the result (1 / count of ties each)."""
    chosen = astype(compare("eq", x, _spread(out, x, axes)), type_of(x).dtype)
    return (chosen * _spread(g / reduce_sum(chosen, axes), x, axes),)


def _logsumexp(x, *, axes):
    """log(sum(exp(x))) shifted by the max where it is finite: -inf if every element is -inf,
    inf if one is inf, nan if one is nan."""
    m = np.max(x, axis=axes, keepdims=True)
    m = np.where(np.isfinite(m), m, x.dtype.type(0))
    with np.errstate(divide="ignore"):
        return np.squeeze(m + np.log(np.sum(np.exp(x - m), axis=axes, keepdims=True)), axes)


reduce_max_p = primitive("reduce_max", lambda x, *, axes: np.max(x, axis=axes),
                         _reduce_rule("max"), _chooser_vjp)
reduce_min_p = primitive("reduce_min", lambda x, *, axes: np.min(x, axis=axes),
                         _reduce_rule("min"), _chooser_vjp)
logsumexp_p = primitive(
    "logsumexp", _logsumexp, _reduce_rule("logsumexp"),
    lambda g, x, *, out, axes: (_spread(g, x, axes) * apply("exp", x - _spread(out, x, axes)),))


def _arg_rule(name: str):
    def rule(x: ArrayType, *, axis) -> ArrayType:
        float_dtype(name, x)
        if axis is None:
            return ArrayType(i64, ())
        check_axes(x, (axis,))
        return ArrayType(i64, x.shape[:axis] + x.shape[axis + 1:])
    return rule


# the index of the largest (smallest) element along `axis`, or in the flattened array (None)
def _arg_bound(x: ArrayType, *, axis) -> tuple:
    """The dims whose product bounds an arg index: the axis's, or all (flattened)."""
    return x.shape if axis is None else (x.shape[axis],)


argmax_p = primitive("argmax", lambda x, *, axis: np.argmax(x, axis=axis).astype(np.int64),
                     _arg_rule("argmax"), None, index_bound=_arg_bound)
argmin_p = primitive("argmin", lambda x, *, axis: np.argmin(x, axis=axis).astype(np.int64),
                     _arg_rule("argmin"), None, index_bound=_arg_bound)


# ----------------------------------------------------------------------------- operations

def _keep(result, x, axes, keepdims: bool):
    """result with the reduced axes kept as size 1 (numpy's keepdims)."""
    if not keepdims or not axes:
        return result
    t = type_of(x)
    shape = tuple(1 if i in axes else d for i, d in enumerate(t.shape))
    return bind(reshape_p, result, shape=shape)


def total(x, axis=None, keepdims=False):
    """numpy's x.sum(axis, keepdims)."""
    axes = normalize_axes(type_of(x), axis)
    return _keep(reduce_sum(x, axes), x, axes, keepdims)


def average(x, axis=None, keepdims=False):
    """numpy's x.mean(axis, keepdims)."""
    axes = normalize_axes(type_of(x), axis)
    return _keep(mean(x, axes), x, axes, keepdims)


def reduce(name: str, x, axis=None, keepdims=False):
    """numpy's max / min (name "max", "min") or scipy's logsumexp ("logsumexp") over axis."""
    axes = normalize_axes(type_of(x), axis)
    prim = {"max": reduce_max_p, "min": reduce_min_p, "logsumexp": logsumexp_p}[name]
    return _keep(bind(prim, x, axes=axes) if axes else x, x, axes, keepdims)


def arg(name: str, x, axis=None):
    """numpy's argmax / argmin (name "argmax", "argmin") along one axis or of the flattened
    array (axis None): int64 indices."""
    t = type_of(x)
    if axis is not None:
        if isinstance(axis, tuple | list):
            raise at_user(ShapeError, f"{name} takes one axis (an int) or None, got {axis!r}")
        (axis,) = normalize_axes(t, axis)
    return bind(argmax_p if name == "argmax" else argmin_p, x, axis=axis)
