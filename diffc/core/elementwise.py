"""The elementwise primitives, one table row each, and the operations that apply them with
numpy's broadcasting: `elementwise`, `where`, `astype`; `mean`, which divides a sum by sizes.

Invariants: an elementwise primitive takes operands of one floating dtype whose non-scalar
operands share one shape (rank-0 operands broadcast implicitly; any other broadcasting is an
explicit `broadcast_in_dim`, made by `elementwise`); Python numbers become constants of their
partner's dtype. Comparisons (of floats, or of integers) give masks (`bool_`), which the
logical operations combine and `select` (numpy's `where`) and `convert_element_type`
(`astype`) read; masks have no gradient. Reverse rules are written
with the operations users write. At ties maximum and minimum share the gradient equally between
their operands, and abs has slope 1 at 0 (JAX's conventions).
"""
from __future__ import annotations

import math

import numpy as np

from .errors import DTypeError, ShapeError
from .primitive import PRIMITIVES, float_dtype, primitive
from .sizes import Size
from .structural import (
    broadcast_shapes,
    broadcast_to,
    convert_element_type_p,
    dim_size_p,
    normalize_axes,
    reduce_sum,
)
from .trace import at_user, bind, constant, context, is_number, refuse_captured, type_of
from .types import ArrayType, DType, bool_, dtype_of_numpy, f64


def _one_shape(name: str, types) -> tuple:
    shapes = {t.shape for t in types if t.ndim > 0}
    if len(shapes) > 1:
        raise ShapeError(f"{name} needs operands of one shape (or scalars), got "
                         f"{', '.join(str(t) for t in types)}")
    return shapes.pop() if shapes else ()


def _elementwise_rule(name: str):
    """Floating operands of one dtype and shape; the result of that dtype."""
    def rule(*types: ArrayType, **params) -> ArrayType:
        return ArrayType(float_dtype(name, *types), _one_shape(name, types))
    return rule


def _sigmoid(x):
    """1 / (1 + exp(-x)) without overflow: exp(x) / (1 + exp(x)) for x < 0."""
    e = np.exp(-np.abs(x))
    return np.where(x < 0, e, x.dtype.type(1)) / (1 + e)


def _softplus(x):
    """log1p(exp(-|x|)) + max(x, 0): no overflow, and exp(x) (not 0) far below 0."""
    return np.log1p(np.exp(-np.abs(x))) + np.maximum(x, x.dtype.type(0))


def _erfc(x):
    return np.vectorize(math.erfc, otypes=[np.float64])(x).astype(x.dtype)


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
    ("abs", 1, np.abs, lambda g, x, *, out: (where(compare("ge", x, 0.0), g, -g),), True),
    ("sqrt", 1, np.sqrt, lambda g, x, *, out: (g * (0.5 / out),), True),
    ("log1p", 1, np.log1p, lambda g, x, *, out: (g / (1.0 + x),), False),
    ("expm1", 1, np.expm1, lambda g, x, *, out: (g * (out + 1.0),), False),
    ("sin", 1, np.sin, lambda g, x, *, out: (g * elementwise("cos", x),), False),
    ("cos", 1, np.cos, lambda g, x, *, out: (-(g * elementwise("sin", x)),), False),
    ("softplus", 1, _softplus, lambda g, x, *, out: (g * elementwise("sigmoid", x),), False),
    ("erfc", 1, _erfc,  # d/dx erfc(x) = -2/sqrt(pi) exp(-x*x)
     lambda g, x, *, out: (g * (-2 / math.sqrt(math.pi) * elementwise("exp", -(x * x))),),
     False),
    ("maximum", 2, np.maximum, lambda g, x, y, *, out: _tie_vjp(g, x, y, "gt"), True),
    ("minimum", 2, np.minimum, lambda g, x, y, *, out: _tie_vjp(g, x, y, "lt"), True),
]

for _name, _arity, _impl, _vjp, _epilogue in ELEMENTWISE:
    primitive(_name, _impl, _elementwise_rule(_name), _vjp, elementwise=True, epilogue=_epilogue)


def _is_int(dtype: DType) -> bool:
    return not dtype.is_float and dtype != bool_


def _compare_rule(what: str):
    """Floats of one dtype, or integers (of any width: an argmax against i32 labels), of one
    shape; masks compare with == and != (compare() rewrites those to logic first)."""
    def rule(*types: ArrayType) -> ArrayType:
        dtypes = {t.dtype for t in types}
        if not (all(map(_is_int, dtypes)) or (len(dtypes) == 1 and types[0].dtype.is_float)):
            raise DTypeError(f"{what} needs floats of one dtype or integers, got "
                             f"{', '.join(str(t) for t in types)} (convert with .astype(f64); "
                             f"diffc does not promote floats; masks compare only with == and "
                             f"!=)")
        return ArrayType(bool_, _one_shape(what, types))
    return rule


def _logical_rule(what: str):
    """Masks of one shape (or rank 0); the result a mask."""
    def rule(*types: ArrayType) -> ArrayType:
        for t in types:
            if t.dtype != bool_:
                raise DTypeError(f"{what} combines masks (comparisons such as x > 0), got {t}")
        return ArrayType(bool_, _one_shape(what, types))
    return rule


# comparisons and the logic of masks: masks, no gradient (nothing differentiable reads a
# mask's value)
COMPARISONS = {"lt": ("<", np.less), "le": ("<=", np.less_equal), "gt": (">", np.greater),
               "ge": (">=", np.greater_equal), "eq": ("==", np.equal), "ne": ("!=", np.not_equal)}
for _name, (_symbol, _impl) in COMPARISONS.items():
    primitive(_name, _impl, _compare_rule(f"comparison '{_symbol}'"), None, elementwise=True,
              epilogue=True)
LOGICAL = {"logical_and": ("&", np.logical_and), "logical_or": ("|", np.logical_or),
           "logical_xor": ("^", np.logical_xor), "logical_not": ("~", np.logical_not)}
for _name, (_symbol, _impl) in LOGICAL.items():
    primitive(_name, _impl, _logical_rule(f"'{_symbol}' ({_name})"), None, elementwise=True,
              epilogue=True)


def _tie_vjp(g, x, y, wins: str):
    """maximum (wins="gt") or minimum ("lt"): the chosen operand's gradient, half each at a tie."""
    half = where(compare("eq", x, y), g * 0.5, 0.0)
    loses = "lt" if wins == "gt" else "gt"
    return where(compare(wins, x, y), g, half), where(compare(loses, x, y), g, half)


def _select_rule(mask: ArrayType, x: ArrayType, y: ArrayType) -> ArrayType:
    if mask.dtype != bool_:
        raise DTypeError(f"where needs a boolean mask (a comparison such as x > 0) first, got "
                         f"{mask}")
    return ArrayType(float_dtype("where", x, y), _one_shape("where", (mask, x, y)))


# numpy's where(mask, x, y)
select_p = primitive("select", np.where, _select_rule,
                     lambda g, mask, x, y, *, out: (None, where(mask, g, 0.0),
                                                    where(mask, 0.0, g)),
                     elementwise=True, epilogue=True)


def elementwise(name: str, *xs, **params):
    """The elementwise primitive `name` with numpy broadcasting; Python numbers become
    constants of the first floating operand's dtype (else, in a comparison, of the integer
    operand's, which compare() has checked them against; float64 if there is none)."""
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
    number_dtype = next((t.dtype for t in arrays if t.dtype.is_float), None) or next(
        (t.dtype for t in arrays if name in COMPARISONS and _is_int(t.dtype)), f64)
    shape = broadcast_shapes(*arrays)
    operands = [constant(x, number_dtype, ctx) if t is None else
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


def compare(name: str, x, y):
    """The comparison `name` ("lt", "le", "gt", "ge", "eq", "ne") of x and y: a mask. Masks
    compare with == and != (as logic); a number beside an integer array must be an integer in
    its dtype's range (numpy's answer otherwise needs no array at all)."""
    if any(isinstance(v, Size) for v in (x, y)):
        return elementwise(name, x, y)
    types = [type_of(v) for v in (x, y)]
    if name in ("eq", "ne") and all(t is not None and t.dtype == bool_ for t in types):
        differ = logical("logical_xor", x, y)
        return differ if name == "ne" else logical("logical_not", differ)
    ints = [t.dtype for t in types if t is not None and _is_int(t.dtype)]
    for v, t in zip((x, y), types, strict=True):
        if t is None and ints and (not isinstance(v, int | np.integer) or isinstance(v, bool) or
                                   not np.iinfo(ints[0].np_dtype).min <= v <=
                                   np.iinfo(ints[0].np_dtype).max):
            raise at_user(DTypeError, f"comparison '{COMPARISONS[name][0]}' of an "
                                      f"{ints[0].name} array with {v!r}: the number must be an "
                                      f"integer in {ints[0].name}'s range; convert the array "
                                      f"with .astype(f64) to compare with a float")
    return elementwise(name, x, y)


def logical(name: str, *masks):
    """The logic `name` ("logical_and", "logical_or", "logical_xor", "logical_not") of masks;
    a Python or numpy bool is a constant mask."""
    masks = [np.asarray(m) if isinstance(m, bool | np.bool_) else m for m in masks]
    for m in masks:
        if is_number(m):
            raise at_user(DTypeError, f"'{LOGICAL[name][0]}' ({name}) combines masks "
                                      f"(comparisons such as x > 0) and bools, got {m!r}")
    return elementwise(name, *masks)


def where(mask, x, y):
    """numpy's where(mask, x, y): x where mask holds, else y; mask a comparison's result (a
    Python or numpy bool is a constant mask), x and y floats or numbers (two numbers: of a numpy
    scalar's dtype if one is, else float64)."""
    if isinstance(mask, bool | np.bool_):
        mask = np.asarray(mask)
    if type_of(x) is None and type_of(y) is None:
        dtype = next((v.dtype for v in (x, y) if isinstance(v, np.generic)), np.float64)
        x, y = np.asarray(x, dtype), np.asarray(y, dtype)
    return elementwise("select", mask, x, y)


def astype(x, dtype):
    """numpy's x.astype(dtype) to f32 or f64 (a diffc dtype or a numpy one), from a float, an
    integer or a mask; differentiable from floats only."""
    target = dtype if isinstance(dtype, DType) else _numpy_dtype(dtype)
    if target is None or not target.is_float:
        raise at_user(DTypeError, f"astype converts to f32 or f64, got {dtype!r}")
    t = type_of(x)
    if t is None:
        raise at_user(DTypeError, f"astype converts an array, got {x!r}")
    return x if t.dtype == target else bind(convert_element_type_p, x, dtype=target)


def _numpy_dtype(dtype) -> DType | None:
    try:
        return dtype_of_numpy(np.dtype(dtype))
    except TypeError:
        return None


def clip(x, lo=None, hi=None):
    """numpy's clip(x, lo, hi) = minimum(maximum(x, lo), hi); None leaves that side open. At a
    bound the gradient is shared with the bound (half each), as JAX's clip."""
    if lo is not None:
        x = elementwise("maximum", x, lo)
    return x if hi is None else elementwise("minimum", x, hi)
