"""The softmax family over the last axis, and integer labels: softmax, log_softmax, pick
(`p[..., label]`), unpick (its transpose) and softmax_cross_entropy with its fused gradient.

Integer labels index the last axis (`labels` flag): the runtime range-checks every label input
before native code runs (compiler/labels.py finds them), and `unpick` writes a value at each
row's label instead of forming a one-hot matrix. softmax_cross_entropy's reverse rule is the
fused `softmax(z) * sum(y) - y`, never a Jacobian.
"""
from __future__ import annotations

import numpy as np

from .elementwise import elementwise
from .errors import DTypeError, ShapeError
from .primitive import check_rank, float_dtype, label_rule, primitive
from .structural import expand_last, reduce_sum
from .trace import at_user, bind, type_of
from .types import ArrayType


def _last_axis_rule(name):
    def rule(x: ArrayType) -> ArrayType:
        float_dtype(name, x)
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
    return (gs - out * expand_last(reduce_sum(gs, -1), type_of(x).shape),)


def _log_softmax_vjp(g, x, *, out):
    return (g - elementwise("exp", out) * expand_last(reduce_sum(g, -1), type_of(x).shape),)


softmax_p = primitive("softmax", _softmax, _last_axis_rule("softmax"), _softmax_vjp)
log_softmax_p = primitive("log_softmax", _log_softmax, _last_axis_rule("log_softmax"),
                          _log_softmax_vjp)


def _check_labels(y, n: int) -> None:
    if y.size and (y.min() < 0 or y.max() >= n):
        raise at_user(ShapeError, f"labels must lie in [0, {n}), got values in "
                                  f"[{y.min()}, {y.max()}]")


def _pick_rule(p: ArrayType, label: ArrayType) -> ArrayType:
    float_dtype("pick", p)
    check_rank("pick", p, tuple(range(1, 8)))
    label_rule("pick", p, label)
    return ArrayType(p.dtype, p.shape[:-1])


def _pick(p, label):
    _check_labels(label, p.shape[-1])
    return np.take_along_axis(p, label[..., None].astype(np.intp), -1)[..., 0]


# p[..., label]: the probability of each row's integer label
pick_p = primitive("pick", _pick, _pick_rule,
                   lambda g, p, label, *, out: (bind(unpick_p, g, label, shape=type_of(p).shape),
                                                None),
                   labels="input")


def _unpick_rule(g: ArrayType, label: ArrayType, *, shape) -> ArrayType:
    out = ArrayType(float_dtype("unpick", g), tuple(shape))
    label_rule("unpick", out, label)
    if g.shape != out.shape[:-1]:
        raise ShapeError(f"unpick: values of shape {out.shape[:-1]} expected, got {g}")
    return out


def _unpick(g, label, *, shape):
    out = np.zeros(shape, g.dtype)
    np.put_along_axis(out, label[..., None].astype(np.intp), g[..., None], -1)
    return out


# zeros of `shape` holding g at each row's label: pick's transpose, never a one-hot matrix
unpick_p = primitive("unpick", _unpick, _unpick_rule,
                     lambda g, x, label, *, out, shape: (bind(pick_p, g, label), None),
                     labels="output")


def _softmax_cross_entropy_rule(z: ArrayType, y: ArrayType) -> ArrayType:
    float_dtype("softmax_cross_entropy", z)
    check_rank("softmax_cross_entropy", z, tuple(range(1, 8)))
    if y.dtype.is_float:
        float_dtype("softmax_cross_entropy", z, y)
        if y.shape != z.shape:
            raise ShapeError(f"softmax_cross_entropy: targets of shape {z.shape} expected for "
                             f"{z}, got {y}")
    else:
        label_rule("softmax_cross_entropy", z, y)
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
    dz = bind(softmax_cross_entropy_grad_p, z, y, g)
    if not type_of(y).dtype.is_float:
        return dz, None
    return dz, -(expand_last(g, type_of(z).shape) * bind(log_softmax_p, z))


# -sum(y * log_softmax(z)) over the last axis, per row; y is targets or integer labels
softmax_cross_entropy_p = primitive("softmax_cross_entropy", _softmax_cross_entropy,
                                    _softmax_cross_entropy_rule, _softmax_cross_entropy_vjp,
                                    labels="input")


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
softmax_cross_entropy_grad_p = primitive("softmax_cross_entropy_grad",
                                         _softmax_cross_entropy_grad,
                                         _softmax_cross_entropy_grad_rule, None, labels="input")
