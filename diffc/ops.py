"""The primitives: one place per operation for its numpy implementation, shape/dtype rule and
reverse rule.

Input: numpy values (for `impl`), `ArrayType`s (for `shape_rule`), or traced values (for `vjp`),
plus the equation's params. Output: a value, a type, or one cotangent (or None) per input.
Reverse rules: `vjp(g, *inputs, out=..., **params)` gets the output's cotangent `g`, the
equation's inputs and output as traced values (literals as 0-d numpy arrays) and is written with
the operations users write; no Jacobian is ever formed. Cotangents of rank-0 inputs may come back
with the output's shape: `ad.py` sums them down in one place.
Invariants: every primitive is in `PRIMITIVES`; elementwise primitives take operands of one
floating dtype (`convert_element_type` gives another) whose non-scalar operands share one shape
(rank-0 operands broadcast implicitly; any other broadcasting is an explicit `broadcast_in_dim`);
shape rules raise `ShapeError` / `DTypeError` saying what was expected and what was found. The
compiler's lowering tables are keyed by these names (`compiler/scalar.py`, `compiler/kernels.py`).
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from .errors import DTypeError, ShapeError
from .ir import eval_program
from .types import ArrayType, DType


@dataclass
class Primitive:
    name: str
    impl: Callable  # numpy values, **params -> value
    shape_rule: Callable  # ArrayTypes, **params -> ArrayType
    vjp: Callable | None  # reverse rule; None: not differentiable (an error names it)
    elementwise: bool = False

    def __repr__(self) -> str:
        return f"Primitive({self.name})"


PRIMITIVES: dict[str, Primitive] = {}


def primitive(name: str, impl: Callable, shape_rule: Callable, vjp: Callable | None,
              elementwise: bool = False) -> Primitive:
    assert name not in PRIMITIVES, name
    PRIMITIVES[name] = p = Primitive(name, impl, shape_rule, vjp, elementwise)
    return p


def _bind(name: str, *args, **params):
    return tr.bind(PRIMITIVES[name], *args, **params)


def _shape(x) -> tuple:
    return tr.type_of(x).shape


def _expand_last(t, shape):
    """t of shape[:-1] broadcast along a new last axis of shape[-1] (numpy's t[..., None])."""
    return _bind("broadcast_in_dim", t, shape=tuple(shape),
                 broadcast_dimensions=tuple(range(len(shape) - 1)))


# ----------------------------------------------------------------------------- rule helpers

def _float_dtype(what: str, *types: ArrayType) -> DType:
    dtype = types[0].dtype
    for t in types:
        if not t.dtype.is_float:
            raise DTypeError(f"{what} needs floating-point operands, got {t}")
        if t.dtype != dtype:
            raise DTypeError(f"{what} needs operands of one dtype, got {dtype.name} and "
                             f"{t.dtype.name} (convert explicitly; diffc does not promote)")
    return dtype


def _rank(what: str, t: ArrayType, ranks: tuple[int, ...]) -> None:
    if t.ndim not in ranks:
        want = " or ".join(f"rank {r}" for r in ranks)
        raise ShapeError(f"{what} expects {want}, got {t}")


def _dims_equal(what: str, a, b, ta: ArrayType, tb: ArrayType) -> None:
    if a != b:
        raise ShapeError(f"{what}: dimension {a} of {ta} does not match dimension {b} of {tb}")


def _axes(t: ArrayType, axes: tuple[int, ...]) -> tuple[int, ...]:
    for a in axes:
        if not 0 <= a < t.ndim:
            raise ShapeError(f"axis {a} is out of range for {t}")
    if len(set(axes)) != len(axes):
        raise ShapeError(f"repeated axis in {axes}")
    return axes


def _label_rule(what: str, x: ArrayType, y: ArrayType) -> None:
    """y holds one integer label per row of x (x's shape without its last axis)."""
    if y.dtype.is_float:
        raise DTypeError(f"{what}: labels must be integers (i32/i64), got {y}")
    if y.shape != x.shape[:-1]:
        raise ShapeError(f"{what}: integer labels of shape {x.shape[:-1]} expected for {x}, "
                         f"got {y}")


# ----------------------------------------------------------------------------- elementwise

def _elementwise_rule(name: str):
    def rule(*types: ArrayType, **params) -> ArrayType:
        dtype = _float_dtype(name, *types)
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


# name, arity, numpy implementation, reverse rule
ELEMENTWISE = [
    ("neg", 1, np.negative, lambda g, x, *, out: (-g,)),
    ("exp", 1, np.exp, lambda g, x, *, out: (g * out,)),
    ("log", 1, np.log, lambda g, x, *, out: (g / x,)),
    ("tanh", 1, np.tanh, lambda g, x, *, out: (g * (1 - out * out),)),
    ("sigmoid", 1, _sigmoid, lambda g, x, *, out: (g * (out * (1 - out)),)),
    ("relu", 1, lambda x: np.maximum(x, x.dtype.type(0)),
     lambda g, x, *, out: (g * tr.elementwise("step", x),)),
    ("step", 1, lambda x: (x > 0).astype(x.dtype),  # relu's derivative: 1 where x > 0
     lambda g, x, *, out: (None,)),  # piecewise constant: zero derivative
    ("pow", 1, _pow, _pow_vjp),  # params: y, a Python number
    ("add", 2, np.add, lambda g, x, y, *, out: (g, g)),
    ("sub", 2, np.subtract, lambda g, x, y, *, out: (g, -g)),
    ("mul", 2, np.multiply, lambda g, x, y, *, out: (g * y, g * x)),
    ("div", 2, np.divide, lambda g, x, y, *, out: (g / y, -(g * out) / y)),
]

for _name, _arity, _impl, _vjp in ELEMENTWISE:
    primitive(_name, _impl, _elementwise_rule(_name), _vjp, elementwise=True)


def _convert_element_type_rule(x: ArrayType, *, dtype: DType) -> ArrayType:
    if not (x.dtype.is_float and dtype.is_float):
        raise DTypeError(f"convert_element_type converts between floating dtypes, got {x} to "
                         f"{dtype.name}")
    return ArrayType(dtype, x.shape)


def _convert_element_type_vjp(g, x, *, out, dtype):
    return (_bind("convert_element_type", g, dtype=tr.type_of(x).dtype),)


# x in another floating dtype, rounded to nearest (or widened exactly): the only primitive whose
# output dtype differs from its input's (fusion keeps a group to one output dtype)
primitive("convert_element_type", lambda x, *, dtype: x.astype(dtype.np_dtype),
          _convert_element_type_rule, _convert_element_type_vjp, elementwise=True)


# ----------------------------------------------------------------------------- structural

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
    return (tr.reduce_sum(g, summed),)


primitive("broadcast_in_dim", _broadcast_in_dim, _broadcast_in_dim_rule, _broadcast_in_dim_vjp)


def _reshape_rule(x: ArrayType, *, shape) -> ArrayType:
    if [d for d in x.shape if d != 1] != [d for d in shape if d != 1]:
        raise ShapeError(f"reshape only inserts or removes size-1 axes; cannot reshape {x} to "
                         f"{shape}")
    return ArrayType(x.dtype, tuple(shape))


def _reshape(x, *, shape):
    sizes = iter(d for d in x.shape if d != 1)
    return np.reshape(x, [1 if d == 1 else next(sizes) for d in shape]).copy()


# inserts or removes size-1 axes (so broadcasting never maps a size-1 axis onto a larger one)
primitive("reshape", _reshape, _reshape_rule,
          lambda g, x, *, out, shape: (_bind("reshape", g, shape=_shape(x)),))


def _transpose_rule(x: ArrayType, *, perm) -> ArrayType:
    if sorted(perm) != list(range(x.ndim)):
        raise ShapeError(f"transpose: {perm} is not a permutation of the axes of {x}")
    return ArrayType(x.dtype, tuple(x.shape[p] for p in perm))


primitive("transpose", lambda x, *, perm: np.transpose(x, perm).copy(), _transpose_rule,
          lambda g, x, *, out, perm: (_bind("transpose", g, perm=tuple(np.argsort(perm))),))


def _reduce_rule(name):
    def rule(x: ArrayType, *, axes) -> ArrayType:
        _float_dtype(name, x)
        axes = _axes(x, axes)
        return ArrayType(x.dtype, tuple(d for i, d in enumerate(x.shape) if i not in axes))
    return rule


def _reduce_sum_vjp(g, x, *, out, axes):
    shape = _shape(x)
    kept = tuple(d for d in range(len(shape)) if d not in axes)
    return (_bind("broadcast_in_dim", g, shape=shape, broadcast_dimensions=kept),)


primitive("reduce_sum", lambda x, *, axes: np.sum(x, axis=tuple(axes)), _reduce_rule("sum"),
          _reduce_sum_vjp)


def _dim_size_rule(x: ArrayType, *, axis, dtype) -> ArrayType:
    _axes(x, (axis,))
    return ArrayType(dtype, ())


# the size of one axis of x as a float scalar: how means over symbolic dims divide
primitive("dim_size", lambda x, *, axis, dtype: dtype.np_dtype.type(x.shape[axis]),
          _dim_size_rule, lambda g, x, *, out, axis, dtype: (None,))  # depends on x's shape only


def _fill_rule(*, shape, dtype, value) -> ArrayType:
    return ArrayType(dtype, tuple(shape))


# a constant array: the seed of the reverse pass and the gradient of unused parameters
primitive("fill", lambda *, shape, dtype, value: np.full(shape, value, dtype.np_dtype),
          _fill_rule, lambda g, *, out, shape, dtype, value: ())


# ----------------------------------------------------------------------------- linear algebra

def _matmul_rule(a: ArrayType, b: ArrayType, *, transpose_a, transpose_b) -> ArrayType:
    dtype = _float_dtype("matmul", a, b)
    _rank("matmul", a, (2,))
    _rank("matmul", b, (2,))
    m, k = a.shape[::-1] if transpose_a else a.shape
    k2, n = b.shape[::-1] if transpose_b else b.shape
    _dims_equal("matmul", k, k2, a, b)
    return ArrayType(dtype, (m, n))


def _matmul(a, b, *, transpose_a, transpose_b):
    return np.matmul(a.T if transpose_a else a, b.T if transpose_b else b)


def _matmul_vjp(g, a, b, *, out, transpose_a, transpose_b):
    """C = op(A) op(B): dop(A) = g op(B)^T and dop(B) = op(A)^T g, as transpose flags."""
    if transpose_a:
        da = _bind("matmul", b, g, transpose_a=transpose_b, transpose_b=True)
    else:
        da = _bind("matmul", g, b, transpose_a=False, transpose_b=not transpose_b)
    if transpose_b:
        db = _bind("matmul", g, a, transpose_a=True, transpose_b=transpose_a)
    else:
        db = _bind("matmul", a, g, transpose_a=not transpose_a, transpose_b=False)
    return da, db


primitive("matmul", _matmul, _matmul_rule, _matmul_vjp)


def _matvec_rule(a: ArrayType, x: ArrayType, *, transpose_a) -> ArrayType:
    dtype = _float_dtype("matvec", a, x)
    _rank("matvec", a, (2,))
    _rank("matvec", x, (1,))
    m, k = a.shape[::-1] if transpose_a else a.shape
    _dims_equal("matvec", k, x.shape[0], a, x)
    return ArrayType(dtype, (m,))


def _matvec_vjp(g, a, x, *, out, transpose_a):
    da = _bind("outer", x, g) if transpose_a else _bind("outer", g, x)
    return da, _bind("matvec", a, g, transpose_a=not transpose_a)


primitive("matvec", lambda a, x, *, transpose_a: (a.T if transpose_a else a) @ x, _matvec_rule,
          _matvec_vjp)


def _outer_rule(a: ArrayType, b: ArrayType) -> ArrayType:
    dtype = _float_dtype("outer", a, b)
    _rank("outer", a, (1,))
    _rank("outer", b, (1,))
    return ArrayType(dtype, (a.shape[0], b.shape[0]))


def _outer_vjp(g, a, b, *, out):
    return _bind("matvec", g, b, transpose_a=False), _bind("matvec", g, a, transpose_a=True)


# a[:, None] * b[None, :]: the weight gradient of a matrix-vector product
primitive("outer", np.outer, _outer_rule, _outer_vjp)


# ----------------------------------------------------------------------------- softmax family

def _last_axis_rule(name):
    def rule(x: ArrayType) -> ArrayType:
        _float_dtype(name, x)
        if x.ndim == 0:
            raise ShapeError(f"{name} works over the last axis and needs rank >= 1, got {x}")
        return x
    return rule


def _softmax(x):
    e = np.exp(x - np.max(x, axis=-1, keepdims=True))
    return e / np.sum(e, axis=-1, keepdims=True)


def _log_softmax(x):
    z = x - np.max(x, axis=-1, keepdims=True)
    return z - np.log(np.sum(np.exp(z), axis=-1, keepdims=True))


def _softmax_vjp(g, x, *, out):
    gs = g * out
    return (gs - out * _expand_last(tr.reduce_sum(gs, -1), _shape(x)),)


def _log_softmax_vjp(g, x, *, out):
    return (g - tr.elementwise("exp", out) * _expand_last(tr.reduce_sum(g, -1), _shape(x)),)


primitive("softmax", _softmax, _last_axis_rule("softmax"), _softmax_vjp)
primitive("log_softmax", _log_softmax, _last_axis_rule("log_softmax"), _log_softmax_vjp)


def _check_labels(y, n: int) -> None:
    if y.size and (y.min() < 0 or y.max() >= n):
        raise tr._at_user(ShapeError, f"labels must lie in [0, {n}), got values in "
                                      f"[{y.min()}, {y.max()}]")


def _pick_rule(p: ArrayType, label: ArrayType) -> ArrayType:
    _float_dtype("pick", p)
    _rank("pick", p, tuple(range(1, 8)))
    _label_rule("pick", p, label)
    return ArrayType(p.dtype, p.shape[:-1])


def _pick(p, label):
    _check_labels(label, p.shape[-1])
    return np.take_along_axis(p, label[..., None].astype(np.intp), -1)[..., 0]


# p[..., label]: the probability of each row's integer label
primitive("pick", _pick, _pick_rule,
          lambda g, p, label, *, out: (_bind("unpick", g, label, shape=_shape(p)), None))


def _unpick_rule(g: ArrayType, label: ArrayType, *, shape) -> ArrayType:
    out = ArrayType(_float_dtype("unpick", g), tuple(shape))
    _label_rule("unpick", out, label)
    if g.shape != out.shape[:-1]:
        raise ShapeError(f"unpick: values of shape {out.shape[:-1]} expected, got {g}")
    return out


def _unpick(g, label, *, shape):
    out = np.zeros(shape, g.dtype)
    np.put_along_axis(out, label[..., None].astype(np.intp), g[..., None], -1)
    return out


# zeros of `shape` holding g at each row's label: pick's transpose, never a one-hot matrix
primitive("unpick", _unpick, _unpick_rule,
          lambda g, x, label, *, out, shape: (_bind("pick", g, label), None))


def _softmax_cross_entropy_rule(z: ArrayType, y: ArrayType) -> ArrayType:
    _float_dtype("softmax_cross_entropy", z)
    _rank("softmax_cross_entropy", z, tuple(range(1, 8)))
    if y.dtype.is_float:
        _float_dtype("softmax_cross_entropy", z, y)
        if y.shape != z.shape:
            raise ShapeError(f"softmax_cross_entropy: targets of shape {z.shape} expected for "
                             f"{z}, got {y}")
    else:
        _label_rule("softmax_cross_entropy", z, y)
    return ArrayType(z.dtype, z.shape[:-1])


def _softmax_cross_entropy(z, y):
    """-sum(y * log_softmax(z)) as sum(y * (m - z)) + sum(y) * log(sum(exp(z - m))), m the
    row max: log_softmax(z) = (z - m) - log(...) without rounding m + log(...)."""
    m = np.max(z, axis=-1, keepdims=True)
    log_total = np.log(np.sum(np.exp(z - m), axis=-1))
    if y.dtype.kind == "f":
        return np.sum(y * (m - z), axis=-1) + np.sum(y, axis=-1) * log_total
    return _pick(m - z, y) + log_total


def _softmax_cross_entropy_vjp(g, z, y, *, out):
    dz = _bind("softmax_cross_entropy_grad", z, y, g)
    if not tr.type_of(y).dtype.is_float:
        return dz, None
    return dz, -(_expand_last(g, _shape(z)) * _bind("log_softmax", z))


# -sum(y * log_softmax(z)) over the last axis, per row; y is targets or integer labels
primitive("softmax_cross_entropy", _softmax_cross_entropy, _softmax_cross_entropy_rule,
          _softmax_cross_entropy_vjp)


def _softmax_cross_entropy_grad_rule(z: ArrayType, y: ArrayType, g: ArrayType) -> ArrayType:
    out = _softmax_cross_entropy_rule(z, y)
    if g.dtype != out.dtype:
        raise DTypeError(f"softmax_cross_entropy_grad: cotangent {out} expected, got {g}")
    if g != out:
        raise ShapeError(f"softmax_cross_entropy_grad: cotangent {out} expected, got {g}")
    return z


def _softmax_cross_entropy_grad(z, y, g):
    p = _softmax(z)
    if y.dtype.kind == "f":
        return g[..., None] * (p * np.sum(y, axis=-1, keepdims=True) - y)
    return g[..., None] * (p - _unpick(np.ones(y.shape, z.dtype), y, shape=z.shape))


# d/dz of softmax_cross_entropy times g: g * (softmax(z) * sum(y) - y), labels without one-hot
primitive("softmax_cross_entropy_grad", _softmax_cross_entropy_grad,
          _softmax_cross_entropy_grad_rule, None)


def _fused_rule(*types: ArrayType, body) -> tuple[ArrayType, ...]:
    if len(types) == len(body.inputs) and any(
            v.type.dtype != t.dtype for v, t in zip(body.inputs, types, strict=True)):
        raise DTypeError(f"fused: inputs {types} do not match the body's "
                         f"{tuple(v.type for v in body.inputs)}")
    if tuple(v.type for v in body.inputs) != types:
        raise ShapeError(f"fused: inputs {types} do not match the body's "
                         f"{tuple(v.type for v in body.inputs)}")
    return tuple(a.type for a in body.outputs)


# elementwise equations over one shape computed in one loop (made by the fuse pass, after AD)
primitive("fused", lambda *xs, body: tuple(eval_program(body, *xs)), _fused_rule, None)


def _sgd_outer_rule(w: ArrayType, a: ArrayType, x: ArrayType, lr: ArrayType) -> ArrayType:
    _float_dtype("sgd_outer", w, a, x, lr)
    if w.ndim != 2 or a.shape != w.shape[:1] or x.shape != w.shape[1:] or lr.ndim:
        raise ShapeError(f"sgd_outer: expected W (m, n), a (m,), x (n,), lr scalar, got {w}, "
                         f"{a}, {x}, {lr}")
    return w


# W - lr * outer(a, x), row by row, leaving rows whose step is exactly 0 (a[i] == 0, x and lr
# finite) untouched (passes/sgd.py)
primitive("sgd_outer", lambda w, a, x, lr: w - lr * np.outer(a, x), _sgd_outer_rule, None)


def _update_matvec_rule(w: ArrayType, a: ArrayType, x: ArrayType, lr: ArrayType,
                        x_next: ArrayType) -> tuple[ArrayType, ArrayType]:
    _float_dtype("update_matvec", w, a, x, lr, x_next)
    if w.ndim != 2 or a.shape != w.shape[:1] or x.shape != w.shape[1:] or lr.ndim or \
            x_next != x:
        raise ShapeError(f"update_matvec: expected W (m, n), a (m,), x (n,), lr scalar, "
                         f"x_next (n,), got {w}, {a}, {x}, {lr}, {x_next}")
    return w, a


def _update_matvec(w, a, x, lr, x_next):
    w_new = w - lr * np.outer(a, x)
    return w_new, w_new @ x_next


# one SGD step of a dense layer's weights fused with the next sample's forward product on the
# updated weights: what `fit` runs per sample (passes/crossstep.py), one pass over W
primitive("update_matvec", _update_matvec, _update_matvec_rule, None)


from . import trace as tr  # noqa: E402 - reverse rules trace; trace imports this module
