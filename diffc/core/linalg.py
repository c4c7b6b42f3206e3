"""Linear algebra primitives: matrix products with transpose flags, matrix-vector products and
outer products; `matmul`, numpy's `@` for ranks 1 and 2.

A transposed operand is a flag, never a copy: the kernels read either layout. Reverse rules
are matrix products again (with flags), so no Jacobian is formed.
"""
from __future__ import annotations

import numpy as np

from .elementwise import elementwise
from .errors import ShapeError
from .primitive import check_rank, dims_equal, float_dtype, primitive
from .structural import reduce_sum
from .trace import at_user, bind, type_of
from .types import ArrayType


def _matmul_rule(a: ArrayType, b: ArrayType, *, transpose_a, transpose_b) -> ArrayType:
    dtype = float_dtype("matmul", a, b)
    check_rank("matmul", a, (2,))
    check_rank("matmul", b, (2,))
    m, k = a.shape[::-1] if transpose_a else a.shape
    k2, n = b.shape[::-1] if transpose_b else b.shape
    dims_equal("matmul", k, k2, a, b)
    return ArrayType(dtype, (m, n))


def _matmul(a, b, *, transpose_a, transpose_b):
    return np.matmul(a.T if transpose_a else a, b.T if transpose_b else b)


def _matmul_vjp(g, a, b, *, out, transpose_a, transpose_b):
    """C = op(A) op(B): dop(A) = g op(B)^T and dop(B) = op(A)^T g, as transpose flags."""
    if transpose_a:
        da = bind(matmul_p, b, g, transpose_a=transpose_b, transpose_b=True)
    else:
        da = bind(matmul_p, g, b, transpose_a=False, transpose_b=not transpose_b)
    if transpose_b:
        db = bind(matmul_p, g, a, transpose_a=True, transpose_b=transpose_a)
    else:
        db = bind(matmul_p, a, g, transpose_a=not transpose_a, transpose_b=False)
    return da, db


matmul_p = primitive("matmul", _matmul, _matmul_rule, _matmul_vjp,
                     transpose_flags=("transpose_a", "transpose_b"))


def _matvec_rule(a: ArrayType, x: ArrayType, *, transpose_a) -> ArrayType:
    dtype = float_dtype("matvec", a, x)
    check_rank("matvec", a, (2,))
    check_rank("matvec", x, (1,))
    m, k = a.shape[::-1] if transpose_a else a.shape
    dims_equal("matvec", k, x.shape[0], a, x)
    return ArrayType(dtype, (m,))


def _matvec_vjp(g, a, x, *, out, transpose_a):
    da = bind(outer_p, x, g) if transpose_a else bind(outer_p, g, x)
    return da, bind(matvec_p, a, g, transpose_a=not transpose_a)


matvec_p = primitive("matvec", lambda a, x, *, transpose_a: (a.T if transpose_a else a) @ x,
                     _matvec_rule, _matvec_vjp, transpose_flags=("transpose_a",))


def _outer_rule(a: ArrayType, b: ArrayType) -> ArrayType:
    dtype = float_dtype("outer", a, b)
    check_rank("outer", a, (1,))
    check_rank("outer", b, (1,))
    return ArrayType(dtype, (a.shape[0], b.shape[0]))


def _outer_vjp(g, a, b, *, out):
    return bind(matvec_p, g, b, transpose_a=False), bind(matvec_p, g, a, transpose_a=True)


# a[:, None] * b[None, :]: the weight gradient of a matrix-vector product
outer_p = primitive("outer", np.outer, _outer_rule, _outer_vjp, indexed=True)


def matmul(a, b):
    """numpy's a @ b for operands of rank 1 and 2."""
    ta, tb = type_of(a), type_of(b)
    if ta is None or tb is None or ta.ndim not in (1, 2) or tb.ndim not in (1, 2):
        raise at_user(ShapeError, f"'@' takes arrays of rank 1 or 2, got {ta or a} @ {tb or b}")
    if ta.ndim == 2 and tb.ndim == 2:
        return bind(matmul_p, a, b, transpose_a=False, transpose_b=False)
    if ta.ndim == 2:
        return bind(matvec_p, a, b, transpose_a=False)
    if tb.ndim == 2:
        return bind(matvec_p, b, a, transpose_a=True)
    if ta.shape != tb.shape:
        raise at_user(ShapeError, f"'@' of vectors needs equal lengths, got {ta} @ {tb}")
    return reduce_sum(elementwise("mul", a, b))
