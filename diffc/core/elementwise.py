"""The elementwise primitives, one table row each, and the operation that applies them with
numpy's broadcasting (`elementwise`); `mean`, which divides a sum by sizes.

Invariants: an elementwise primitive takes operands of one floating dtype whose non-scalar
operands share one shape (rank-0 operands broadcast implicitly; any other broadcasting is an
explicit `broadcast_in_dim`, made by `elementwise`); Python numbers become constants of their
partner's dtype. Reverse rules are written with the operations users write.
"""
from __future__ import annotations

import numpy as np

from .errors import ShapeError
from .primitive import PRIMITIVES, float_dtype, primitive
from .sizes import Size
from .structural import broadcast_shapes, broadcast_to, dim_size_p, normalize_axes, reduce_sum
from .trace import bind, constant, context, refuse_captured, type_of
from .types import ArrayType


def _elementwise_rule(name: str):
    def rule(*types: ArrayType, **params) -> ArrayType:
        dtype = float_dtype(name, *types)
        shapes = {t.shape for t in types if t.ndim > 0}
        if len(shapes) > 1:
            raise ShapeError(f"{name} needs operands of one shape (or scalars), got "
                             f"{', '.join(str(t) for t in types)}")
        return ArrayType(dtype, shapes.pop() if shapes else ())
    return rule


def _sigmoid(x):
    """1 / (1 + exp(-x)) without overflow: exp(x) / (1 + exp(x)) for x < 0."""
    e = np.exp(-np.abs(x))
    return np.where(x < 0, e, x.dtype.type(1)) / (1 + e)


def _pow(x, *, y):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.power(x, x.dtype.type(y))


def _pow_vjp(g, x, *, out, y):
    if y == 0:
        return (None,)
    return (g * y if y == 1 else g * (y * x ** (y - 1)),)


# name, arity, numpy implementation, reverse rule, whether a GEMM epilogue may apply it
ELEMENTWISE = [
    ("neg", 1, np.negative, lambda g, x, *, out: (-g,), True),
    ("exp", 1, np.exp, lambda g, x, *, out: (g * out,), False),
    ("log", 1, np.log, lambda g, x, *, out: (g / x,), False),
    ("tanh", 1, np.tanh, lambda g, x, *, out: (g * (1 - out * out),), False),
    ("sigmoid", 1, _sigmoid, lambda g, x, *, out: (g * (out * (1 - out)),), False),
    ("relu", 1, lambda x: np.maximum(x, x.dtype.type(0)),
     lambda g, x, *, out: (g * elementwise("step", x),), True),
    ("step", 1, lambda x: (x > 0).astype(x.dtype),  # relu's derivative: 1 where x > 0
     lambda g, x, *, out: (None,), True),  # piecewise constant: zero derivative
    ("pow", 1, _pow, _pow_vjp, False),  # params: y, a Python number
    ("add", 2, np.add, lambda g, x, y, *, out: (g, g), True),
    ("sub", 2, np.subtract, lambda g, x, y, *, out: (g, -g), True),
    ("mul", 2, np.multiply, lambda g, x, y, *, out: (g * y, g * x), True),
    ("div", 2, np.divide, lambda g, x, y, *, out: (g / y, -(g * out) / y), True),
]

for _name, _arity, _impl, _vjp, _epilogue in ELEMENTWISE:
    primitive(_name, _impl, _elementwise_rule(_name), _vjp, elementwise=True, epilogue=_epilogue)


def elementwise(name: str, *xs, **params):
    """The elementwise primitive `name` with numpy broadcasting; Python numbers become
    constants."""
    if any(isinstance(x, Size) for x in xs):
        return _with_sizes(name, xs, params)
    types = [type_of(x) for x in xs]
    arrays = [t for t in types if t is not None]
    if not arrays:  # only numbers: in a numpy scalar's dtype if there is one, else float64
        dtype = next((x.dtype for x in xs if isinstance(x, np.generic)), np.dtype(np.float64))
        xs = [np.asarray(x, dtype) for x in xs]
        types = arrays = [type_of(x) for x in xs]
    ctx = context(xs)
    if ctx is not None:
        for x in xs:
            refuse_captured(x)
    shape = broadcast_shapes(*arrays)
    operands = [constant(x, arrays[0].dtype, ctx) if t is None else
                x if t.ndim == 0 or t.shape == shape else broadcast_to(x, shape)
                for x, t in zip(xs, types, strict=True)]
    return bind(PRIMITIVES[name], *operands, **params)


def mean(x, axis=None):
    """numpy's x.mean(axis); a symbolic axis divides by its size at run time."""
    t = type_of(x)
    axes = normalize_axes(t, axis)
    total = reduce_sum(x, axes)
    static = 1
    for a in axes:
        if isinstance(t.shape[a], int):
            static *= t.shape[a]
        else:
            total = elementwise("div", total, bind(dim_size_p, x, axis=a, dtype=t.dtype))
    return total if static == 1 else elementwise("div", total, float(static))


def _with_sizes(name: str, xs, params):
    """Sizes (sizes.py) meeting arrays become scalars of the arrays' dtype; among numbers and
    sizes the result is a size."""
    dtype = next((type_of(x).dtype for x in xs if not isinstance(x, Size) and
                  type_of(x) is not None), None)
    if dtype is None:
        return Size(name, xs, params, f"{name}({', '.join(map(str, xs))})")
    return elementwise(name, *[size_value(x, dtype) if isinstance(x, Size) else x for x in xs],
                       **params)


def size_value(s: Size, dtype):
    """A size as a traced scalar of dtype: `dim_size`, then the arithmetic on it."""
    if s.op is None:
        return bind(dim_size_p, s.args[0], axis=s.params["axis"], dtype=dtype)
    return elementwise(s.op, *[size_value(a, dtype) if isinstance(a, Size) else a
                               for a in s.args], **s.params)
