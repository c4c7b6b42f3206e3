"""Neural-network functions, usable inside traced functions and eagerly on numpy arrays.

Each is written once with the core's operations (diffc/core/): on traced values it records
primitives, on numpy arrays it runs their numpy implementations (the eager reference).
"""
from __future__ import annotations

import numpy as np

from ..core import shapes
from ..core.elementwise import elementwise, mean
from ..core.errors import ShapeError
from ..core.linalg import matmul, matmul_p
from ..core.softmax import log_softmax_p, pick_p, softmax_cross_entropy_p, softmax_p
from ..core.structural import reduce_sum
from ..core.trace import at_user, bind, type_of

__all__ = ["dense", "relu", "sigmoid", "tanh", "exp", "log", "softmax", "log_softmax",
           "cross_entropy", "softmax_cross_entropy", "mse", "sum", "mean"]

_sum = sum


def relu(x):
    return elementwise("relu", x)


def sigmoid(x):
    return elementwise("sigmoid", x)


def tanh(x):
    return elementwise("tanh", x)


def exp(x):
    return elementwise("exp", x)


def log(x):
    return elementwise("log", x)


def softmax(x):
    """exp(x) / sum(exp(x)) over the last axis, computed stably."""
    return bind(softmax_p, x)


def log_softmax(x):
    """log(softmax(x)) over the last axis, computed stably."""
    return bind(log_softmax_p, x)


def sum(x, axis=None):  # noqa: A001 - numpy's name, on purpose
    """numpy's sum: over `axis` (an int, a tuple, or None for all), the reduced axes dropped."""
    return reduce_sum(x, axis)


def dense(W, x, b=None):
    """W @ x + b with W of shape (out, in); x is (in,) giving (out,) or (B, in) giving (B, out)."""
    tw, tx = type_of(W), type_of(x)
    if tw is None or tw.ndim != 2 or tx is None or tx.ndim not in (1, 2):
        raise at_user(ShapeError, f"dense expects W of shape (out, in) and x of shape (in,) or "
                                   f"(B, in), got W: {tw or W}, x: {tx or x}")
    if tx.shape[-1] != tw.shape[1]:
        raise at_user(ShapeError, f"dense: W: {tw} takes inputs of length {tw.shape[1]}, got "
                                   f"x: {tx}")
    if tx.ndim == 1:
        y = matmul(W, x)
    else:
        y = bind(matmul_p, x, W, transpose_a=False, transpose_b=True)
    if b is None:
        return y
    tb = type_of(b)
    if tb is None or tb.shape != (tw.shape[0],):
        raise at_user(ShapeError, f"dense expects b of shape ({tw.shape[0]},) for W: {tw}, "
                                   f"got {tb or b}")
    return elementwise("add", y, b)


def _mean_over_rows(loss):
    """A per-row loss averaged over the batch (all leading axes); a single row stays as is."""
    t = type_of(loss)
    return mean(loss) if t is not None and t.ndim > 0 else loss


def _constant_label(p, y):
    """A label given as a Python or numpy integer (or a 0-d integer array): an i64 constant,
    checked here against a static class count (a symbolic one is checked at call time)."""
    if isinstance(y, np.ndarray) and y.ndim == 0 and y.dtype.kind in "iu":
        y = y[()]
    if not isinstance(y, int | np.integer) or isinstance(y, bool):
        return y
    tp = type_of(p)
    n = tp.shape[-1] if tp is not None and tp.ndim else None
    if not 0 <= y < (n if isinstance(n, int) else 2 ** 63):
        raise at_user(ShapeError, f"label {y} is out of range for {n} classes")
    return np.asarray(y, np.int64)


def cross_entropy(p, y):
    """-sum(y * log(p)) over the last axis, or -log(p[label]) for integer labels; batch mean."""
    y = _constant_label(p, y)
    tp, ty = type_of(p), type_of(y)
    if ty is not None and not ty.dtype.is_float:
        loss = elementwise("neg", log(bind(pick_p, p, y)))
    else:
        if ty is None or tp is None or ty.shape != tp.shape:
            raise at_user(ShapeError, f"cross_entropy expects y of p's shape ({tp or p}) or "
                                       f"integer labels, got {ty or y}")
        loss = elementwise("neg", reduce_sum(elementwise("mul", y, log(p)), axis=-1))
    return _mean_over_rows(loss)


def softmax_cross_entropy(logits, y):
    """cross_entropy(softmax(logits), y), computed stably in one primitive."""
    y = _constant_label(logits, y)
    return _mean_over_rows(bind(softmax_cross_entropy_p, logits, y))


def mse(pred, target):
    """The mean of the squared differences."""
    d = elementwise("sub", pred, target)
    return mean(elementwise("mul", d, d))


# ----------------------------------------------------------------------------- shapes
__all__ += ["reshape", "transpose", "expand_dims", "squeeze", "broadcast_to", "concatenate",
            "stack", "take"]


def reshape(x, shape):
    """numpy's reshape (one -1 inferred); symbolic dims kept, sizes provably equal."""
    return shapes.reshape(x, shape)


def transpose(x, axes=None):
    """numpy's transpose: axes reversed, or permuted as `axes` says."""
    return shapes.transpose(x, axes)


def expand_dims(x, axis):
    """numpy's expand_dims: size-1 axes inserted at `axis` (an int or a tuple)."""
    return shapes.expand_dims(x, axis)


def squeeze(x, axis=None):
    """numpy's squeeze: size-1 axes (all, or those named) removed."""
    return shapes.squeeze(x, axis)


def broadcast_to(x, shape):
    """numpy's broadcast_to."""
    return shapes.broadcast_to(x, shape)


def concatenate(xs, axis=0):
    """numpy's concatenate along an existing (static) axis."""
    return shapes.concatenate(xs, axis)


def stack(xs, axis=0):
    """numpy's stack along a new axis."""
    return shapes.stack(xs, axis)


def take(x, indices, axis=0):
    """numpy's take along `axis` with an i32/i64 index array (or an int); indices must lie in
    [0, size of the axis): compiled code checks them before it runs (ArgumentError)."""
    return shapes.take(x, indices, axis)
