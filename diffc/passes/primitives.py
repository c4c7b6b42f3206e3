"""The primitives that only passes make: `fused` (fuse.py), `sgd_outer` (sgd.py) and
`update_matvec` (crossstep.py). None is differentiable: they appear after AD. Their numpy
implementations keep the oracle (`eval_program`) able to run every pass's output.
"""
from __future__ import annotations

import numpy as np

from ..core.errors import DTypeError, ShapeError
from ..core.ir import eval_program
from ..core.primitive import float_dtype, primitive
from ..core.types import ArrayType


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
fused_p = primitive("fused", lambda *xs, body: tuple(eval_program(body, *xs)), _fused_rule,
                    None)


def _sgd_outer_rule(w: ArrayType, a: ArrayType, x: ArrayType, lr: ArrayType) -> ArrayType:
    float_dtype("sgd_outer", w, a, x, lr)
    if w.ndim != 2 or a.shape != w.shape[:1] or x.shape != w.shape[1:] or lr.ndim:
        raise ShapeError(f"sgd_outer: expected W (m, n), a (m,), x (n,), lr scalar, got {w}, "
                         f"{a}, {x}, {lr}")
    return w


# W - lr * outer(a, x), row by row, leaving rows whose step is exactly 0 (a[i] == 0, x and lr
# finite) untouched (sgd.py)
sgd_outer_p = primitive("sgd_outer", lambda w, a, x, lr: w - lr * np.outer(a, x),
                        _sgd_outer_rule, None, rowwise=True)


def _update_matvec_rule(w: ArrayType, a: ArrayType, x: ArrayType, lr: ArrayType,
                        x_next: ArrayType) -> tuple[ArrayType, ArrayType]:
    float_dtype("update_matvec", w, a, x, lr, x_next)
    if w.ndim != 2 or a.shape != w.shape[:1] or x.shape != w.shape[1:] or lr.ndim or \
            x_next != x:
        raise ShapeError(f"update_matvec: expected W (m, n), a (m,), x (n,), lr scalar, "
                         f"x_next (n,), got {w}, {a}, {x}, {lr}, {x_next}")
    return w, a


def _update_matvec(w, a, x, lr, x_next):
    w_new = w - lr * np.outer(a, x)
    return w_new, w_new @ x_next


# one SGD step of a dense layer's weights fused with the next sample's forward product on the
# updated weights: what `fit` runs per sample (crossstep.py), one pass over W
update_matvec_p = primitive("update_matvec", _update_matvec, _update_matvec_rule, None,
                            rowwise=True)
