"""Every primitive against an independent numpy formula: impl, shape rule and compiled code.

The table `CASES` holds, for every registered primitive, example operands, params and a numpy
reference written here. Each case is built into a one-equation Program, evaluated by the
primitive's `impl`, by `eval_program` and by compiled native code (a symbolic dim `B` takes two
sizes in one compiled function), in f32 and f64.
"""
import functools
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pytest
from models import compile_program

from diffc.compiler import pipeline
from diffc.core.errors import DTypeError, ShapeError
from diffc.core.ir import Eqn, Lit, Program, Var, eval_program
from diffc.core.primitive import PRIMITIVES
from diffc.core.types import ArrayType, DType, Param, Signature, bool_, f32, f64, i32, i64

RTOL = {f32: 1e-5, f64: 1e-12}
FLOATS = [f32, f64]
SIZES = (3, 7)  # the sizes the symbolic dim B takes, both through one compiled function
LIT = 1.5  # the value of a literal operand


@dataclass(frozen=True)
class Case:
    """One example of a primitive: operands as (kind, shape), the output shapes its shape rule
    must give, a numpy reference (float64 operands, **params) and optionally the magnitude each
    output's error is measured against (where cancellation makes |ref| unfair). Outputs have the
    case's float dtype unless `out_dtype` says otherwise (masks, indices)."""

    inputs: tuple
    out: tuple
    ref: Callable
    params: dict | Callable = field(default_factory=dict)  # or dtype -> dict
    scale: Callable | None = None
    binders: tuple = ()  # extra program inputs (kind, shape) that only bind symbolic dims
    out_dtype: DType | None = None


def _np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _np_logsumexp(z):
    m = z.max(-1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(-1, keepdims=True)))[..., 0]


def _onehot(label, n):
    return np.eye(n)[label]


def _sigmoid(x):
    with np.errstate(over="ignore"):
        e = np.exp(-np.abs(x))
        return np.where(x >= 0, 1 / (1 + e), e / (1 + e))


def _tanh(x):
    u = np.expm1(-2 * np.abs(x))
    return np.sign(x) * -u / (u + 2)


def _unary(ref, kind="x"):
    return [Case(((kind, (5,)),), ((5,),), ref),
            Case(((kind, ("B", 4)),), (("B", 4),), ref),
            Case(((kind, ()),), ((),), ref)]


def _binary(ref, scale=None, right="x"):
    return [Case((("x", ("B", 3)), (right, ("B", 3))), (("B", 3),), ref, scale=scale),
            Case((("x", (4,)), (right, ())), ((4,),), ref, scale=scale),
            Case((("lit", ()), (right, (2, 3))), ((2, 3),), ref, scale=scale)]


def _pow(y, kind="pos", shape=("B", 3)):
    return Case(((kind, shape),), (shape,), lambda x, y: x ** float(y), {"y": y})


def _add_scale(x, y):
    return np.abs(x) + np.abs(y)


def _bcast_ref(x, shape, broadcast_dimensions):
    missing = tuple(d for d in range(len(shape)) if d not in broadcast_dimensions)
    return np.broadcast_to(np.expand_dims(x, missing), shape)


def _matmul_ref(a, b, transpose_a, transpose_b):
    return (a.T if transpose_a else a) @ (b.T if transpose_b else b)


def _matmul_scale(a, b, transpose_a, transpose_b):
    return _matmul_ref(np.abs(a), np.abs(b), transpose_a, transpose_b)


def _matmul(a, b, out, ta=False, tb=False):
    return Case((("x", a), ("x", b)), (out,), _matmul_ref,
                {"transpose_a": ta, "transpose_b": tb}, _matmul_scale)


def _matvec(a, x, out, ta=False):
    return Case((("x", a), ("x", x)), (out,),
                lambda a, x, transpose_a: (a.T if transpose_a else a) @ x, {"transpose_a": ta},
                lambda a, x, transpose_a: np.abs(a.T if transpose_a else a) @ np.abs(x))


def _log_softmax_scale(z):
    return np.abs(z) + np.abs(_np_logsumexp(z))[..., None]


def _sce_ref(z, y):
    log_p = z - _np_logsumexp(z)[..., None]
    if y.dtype.kind == "f":
        return -(y * log_p).sum(-1)
    return -np.take_along_axis(log_p, y[..., None], -1)[..., 0]


def _sce_scale(z, y):
    lse = np.abs(_np_logsumexp(z))
    if y.dtype.kind == "f":
        return lse * np.abs(y).sum(-1) + np.abs(y * z).sum(-1)
    return lse + np.abs(np.take_along_axis(z, y[..., None], -1)[..., 0])


def _sce_grad_ref(z, y, g):
    p = _np_softmax(z)
    t = y if y.dtype.kind == "f" else _onehot(y, z.shape[-1])
    return g[..., None] * (p * t.sum(-1, keepdims=True) - t)


def _sce_grad_scale(z, y, g):
    t = np.abs(y) if y.dtype.kind == "f" else _onehot(y, z.shape[-1])
    return np.abs(g)[..., None] * (_np_softmax(z) * t.sum(-1, keepdims=True) + t)


def _unpick_ref(g, label, shape):
    return _onehot(label, shape[-1]) * g[..., None]


def _sgd_ref(w, a, x, lr):
    return w - lr * a[:, None] * x[None, :]


def _sgd_scale(w, a, x, lr):
    return np.abs(w) + np.abs(lr * a[:, None] * x[None, :])


def _update_matvec_ref(w, a, x, lr, x_next):
    w_new = _sgd_ref(w, a, x, lr)
    return w_new, w_new @ x_next


def _update_matvec_scale(w, a, x, lr, x_next):
    s = _sgd_scale(w, a, x, lr)
    return s, s @ np.abs(x_next)


def _fused_tanh(dt):
    """Body: t = x * y; (tanh(t) + x, t)."""
    x, y = Var(dt["B", 4]), Var(dt["B", 4])
    t, u, v = Var(dt["B", 4]), Var(dt["B", 4]), Var(dt["B", 4])
    p = PRIMITIVES
    return {"body": Program((x, y), [Eqn(p["mul"], (x, y), {}, (t,)),
                                     Eqn(p["tanh"], (t,), {}, (u,)),
                                     Eqn(p["add"], (u, x), {}, (v,))], (v, t))}


def _fused_broadcast(dt):
    """Body: d = x - b[None, :]; d * d * 0.5."""
    x, b = Var(dt["B", 4]), Var(dt[4])
    bb, d, d2, h = (Var(dt["B", 4]) for _ in range(4))
    p = PRIMITIVES
    eqns = [Eqn(p["broadcast_in_dim"], (b,), {"shape": ("B", 4), "broadcast_dimensions": (1,)},
                (bb,)),
            Eqn(p["sub"], (x, bb), {}, (d,)), Eqn(p["mul"], (d, d), {}, (d2,)),
            Eqn(p["mul"], (d2, Lit(0.5, ArrayType(dt, ()))), {}, (h,))]
    return {"body": Program((x, b), eqns, (h,))}


def _fused_scalar(dt):
    """Body: exp(x) * s for a rank-0 s."""
    x, s, e, out = Var(dt[5]), Var(ArrayType(dt, ())), Var(dt[5]), Var(dt[5])
    p = PRIMITIVES
    return {"body": Program((x, s), [Eqn(p["exp"], (x,), {}, (e,)),
                                     Eqn(p["mul"], (e, s), {}, (out,))], (out,))}


CASES: dict[str, list[Case]] = {
    "neg": _unary(lambda x: -x),
    "exp": _unary(np.vectorize(math.exp, otypes=[float])),
    "log": _unary(np.vectorize(math.log, otypes=[float]), "pos"),
    "tanh": _unary(_tanh),
    "sigmoid": _unary(_sigmoid),
    "relu": _unary(lambda x: np.where(x > 0, x, 0.0)),
    "step": _unary(lambda x: np.where(x > 0, 1.0, 0.0)),
    "convert_element_type": [  # from the other float dtype to the case's; and to the same
        Case((("other", shape),), (shape,), lambda x, dtype: x, lambda dt: {"dtype": dt})
        for shape in ((5,), ("B", 4), ())] + [
        Case((("x", (6,)),), ((6,),), lambda x, dtype: x, lambda dt: {"dtype": dt})],
    "pow": [_pow(1.5), _pow(3, "x", (6,)), _pow(-2, shape=(4,)), _pow(0.5, shape=()),
            _pow(0, "x", (5,)), _pow(-1)],
    "add": _binary(lambda x, y: x + y, _add_scale),
    "sub": _binary(lambda x, y: x - y, _add_scale),
    "mul": _binary(lambda x, y: x * y),
    "div": _binary(lambda x, y: x / y, right="pos"),
    "broadcast_in_dim": [
        Case((("x", (3,)),), ((2, 3),), _bcast_ref,
             {"shape": (2, 3), "broadcast_dimensions": (1,)}),
        Case((("x", ("B",)),), (("B", 4),), _bcast_ref,
             {"shape": ("B", 4), "broadcast_dimensions": (0,)}),
        Case((("x", ()),), ((2, "B"),), _bcast_ref,
             {"shape": (2, "B"), "broadcast_dimensions": ()}, binders=(("x", ("B",)),)),
        Case((("x", (2, 3)),), ((2, 4, 3),), _bcast_ref,
             {"shape": (2, 4, 3), "broadcast_dimensions": (0, 2)}),
    ],
    "reshape": [
        Case((("x", ("B", 1, 3)),), (("B", 3),), lambda x, shape: x[:, 0, :], {"shape": ("B", 3)}),
        Case((("x", (4,)),), ((1, 4, 1),), lambda x, shape: x[None, :, None],
             {"shape": (1, 4, 1)}),
    ],
    "transpose": [
        Case((("x", ("B", 3)),), ((3, "B"),), lambda x, perm: np.einsum("ab->ba", x),
             {"perm": (1, 0)}),
        Case((("x", (2, 3, 4)),), ((4, 2, 3),), lambda x, perm: np.einsum("abc->cab", x),
             {"perm": (2, 0, 1)}),
    ],
    "reduce_sum": [
        Case((("x", ("B", 4)),), (("B",),), lambda x, axes: x.sum(axis=axes), {"axes": (1,)},
             lambda x, axes: np.abs(x).sum(axis=axes)),
        Case((("x", ("B", 4)),), ((4,),), lambda x, axes: x.sum(axis=axes), {"axes": (0,)},
             lambda x, axes: np.abs(x).sum(axis=axes)),
        Case((("x", (2, 3, 4)),), ((3,),), lambda x, axes: x.sum(axis=axes), {"axes": (0, 2)},
             lambda x, axes: np.abs(x).sum(axis=axes)),
        Case((("x", (5,)),), ((),), lambda x, axes: x.sum(axis=axes), {"axes": (0,)},
             lambda x, axes: np.abs(x).sum(axis=axes)),
    ],
    "dim_size": [
        Case((("x", ("B", 4)),), ((),), lambda x, axis, dtype: np.float64(x.shape[axis]),
             lambda dt: {"axis": 0, "dtype": dt}),
        Case((("x", ("B", 4)),), ((),), lambda x, axis, dtype: np.float64(x.shape[axis]),
             lambda dt: {"axis": 1, "dtype": dt}),
    ],
    "fill": [
        Case((), ((2, 3),), lambda shape, dtype, value: np.full(shape, value),
             lambda dt: {"shape": (2, 3), "dtype": dt, "value": 2.5}),
        Case((), (("B", 2),), lambda shape, dtype, value: np.full(shape, value),
             lambda dt: {"shape": ("B", 2), "dtype": dt, "value": -1.25},
             binders=(("x", ("B",)),)),
    ],
    "matmul": [
        _matmul(("B", 4), (5, 4), ("B", 5), tb=True),
        _matmul((4, "B"), (4, 6), ("B", 6), ta=True),
        _matmul((3, 5), (5, 2), (3, 2)),
        _matmul((5, 3), (4, 5), (3, 4), ta=True, tb=True),
        _matmul(("B", 37), (37, 19), ("B", 19)),
        _matmul((33, 40), (17, 40), (33, 17), tb=True),
    ],
    "matvec": [
        _matvec((5, 4), (4,), (5,)),
        _matvec(("B", 3), (3,), ("B",)),
        _matvec(("B", 6), ("B",), (6,), ta=True),
        _matvec((19, 37), (37,), (19,)),
        _matvec((7, 61), (61,), (7,)),  # full vectors after the unrolled ones, f32 and f64
        _matvec((3, 784), (784,), (3,)),  # a W1 row
    ],
    "outer": [
        Case((("x", ("B",)), ("x", (4,))), (("B", 4),), lambda a, b: a[:, None] * b[None, :]),
        Case((("x", (3,)), ("x", (5,))), ((3, 5),), lambda a, b: a[:, None] * b[None, :]),
    ],
    "softmax": [Case((("x", s),), (s,), _np_softmax) for s in [("B", 5), (7,), (2, 3, 4)]],
    "log_softmax": [Case((("x", s),), (s,), lambda z: z - _np_logsumexp(z)[..., None],
                         scale=_log_softmax_scale) for s in [("B", 5), (7,), (2, 3, 4)]],
    "pick": [
        Case((("x", ("B", 5)), (("i32", 5), ("B",))), (("B",),),
             lambda p, y: p[np.arange(len(y)), y]),
        Case((("x", (6,)), (("i64", 6), ())), ((),), lambda p, y: p[y]),
        Case((("x", (2, 3, 4)), (("i64", 4), (2, 3))), ((2, 3),),
             lambda p, y: np.take_along_axis(p, y[..., None], -1)[..., 0]),
    ],
    "unpick": [
        Case((("x", ("B",)), (("i32", 5), ("B",))), (("B", 5),), _unpick_ref,
             {"shape": ("B", 5)}),
        Case((("x", ()), (("i64", 4), ())), ((4,),), _unpick_ref, {"shape": (4,)}),
    ],
    "softmax_cross_entropy": [
        Case((("x", ("B", 5)), ("unit", ("B", 5))), (("B",),), _sce_ref, scale=_sce_scale),
        Case((("x", ("B", 5)), (("i32", 5), ("B",))), (("B",),), _sce_ref, scale=_sce_scale),
        Case((("x", (6,)), (("i64", 6), ())), ((),), _sce_ref, scale=_sce_scale),
    ],
    "softmax_cross_entropy_grad": [
        Case((("x", ("B", 5)), ("unit", ("B", 5)), ("x", ("B",))), (("B", 5),), _sce_grad_ref,
             scale=_sce_grad_scale),
        Case((("x", ("B", 5)), (("i64", 5), ("B",)), ("x", ("B",))), (("B", 5),),
             _sce_grad_ref, scale=_sce_grad_scale),
        Case((("x", (4,)), (("i32", 4), ()), ("x", ())), ((4,),), _sce_grad_ref,
             scale=_sce_grad_scale),
    ],
    "fused": [
        Case((("x", ("B", 4)), ("x", ("B", 4))), (("B", 4), ("B", 4)),
             lambda x, y, body: (np.tanh(x * y) + x, x * y), _fused_tanh,
             lambda x, y, body: (np.abs(np.tanh(x * y)) + np.abs(x) + np.abs(x * y),
                                 np.abs(x * y))),
        Case((("x", ("B", 4)), ("x", (4,))), (("B", 4),),
             lambda x, b, body: 0.5 * (x - b) ** 2, _fused_broadcast,
             lambda x, b, body: (np.abs(x) + np.abs(b)) ** 2),
        Case((("x", (5,)), ("x", ())), ((5,),), lambda x, s, body: np.exp(x) * s, _fused_scalar),
    ],
    "sgd_outer": [
        Case((("x", ("B", 5)), ("sparse", ("B",)), ("x", (5,)), ("pos", ())), (("B", 5),),
             _sgd_ref, scale=_sgd_scale),
        Case((("x", (3, 4)), ("sparse", (3,)), ("x", (4,)), ("pos", ())), ((3, 4),), _sgd_ref,
             scale=_sgd_scale),
    ],
    "update_matvec": [
        Case((("x", ("B", 5)), ("sparse", ("B",)), ("x", (5,)), ("pos", ()), ("x", (5,))),
             (("B", 5), ("B",)), _update_matvec_ref, scale=_update_matvec_scale),
        Case((("x", (4, 37)), ("sparse", (4,)), ("x", (37,)), ("pos", ()), ("x", (37,))),
             ((4, 37), (4,)), _update_matvec_ref, scale=_update_matvec_scale),
        Case((("x", (3, 61)), ("sparse", (3,)), ("x", (61,)), ("pos", ()), ("x", (61,))),
             ((3, 61), (3,)), _update_matvec_ref, scale=_update_matvec_scale),
    ],
}

# ----------------------------------------------------------------------------- shape primitives

def _slice_case(shape, out, start, step, ref):
    return Case((("x", shape),), (out,), lambda x, **p: ref(x),
                {"start": start, "step": step, "shape": out})


def _unslice_case(shape, sliced, start, step, ref):
    def unsliced(g, **p):
        out = np.zeros(p["shape"])
        ref(out)[...] = g  # ref gives a view of out: numpy's basic indexing
        return out
    binders = (("x", ("B",)),) if "B" in shape and "B" not in sliced else ()
    return Case((("x", sliced),), (shape,), unsliced, {"shape": shape, "start": start,
                                                        "step": step}, binders=binders)


def _np_scatter_add(g, idx, shape, axis):
    out = np.zeros(shape)
    np.add.at(out, (slice(None),) * axis + (idx,), g)
    return out


CASES["reshape"] += [
    Case((("x", ("B", 4, 3)),), (("B", 12),), lambda x, shape: x.reshape(len(x), 12),
         {"shape": ("B", 12)}),
    Case((("x", (2, "B", 3)),), ((3, "B", 2),), lambda x, shape: x.reshape(3, -1, 2),
         {"shape": (3, "B", 2)}),
    Case((("x", (6,)),), ((2, 3),), lambda x, shape: x.reshape(2, 3), {"shape": (2, 3)}),
]
CASES |= {
    "slice": [
        _slice_case(("B", 5), ("B", 2), (0, 1), (1, 2), lambda x: x[:, 1:5:2]),
        _slice_case((6,), (3,), (5,), (-2,), lambda x: x[::-2]),
        _slice_case(("B", 4), (), (-1, 2), (0, 0), lambda x: x[-1, 2]),
        _slice_case((3, "B", 4), ("B",), (1, -1, 3), (0, -1, 0), lambda x: x[1, ::-1, 3]),
        _slice_case(("B", 3), (3,), (2, 0), (0, 1), lambda x: x[2]),
    ],
    "unslice": [
        _unslice_case(("B", 5), ("B", 2), (0, 1), (1, 2), lambda z: z[:, 1:5:2]),
        _unslice_case((6,), (3,), (5,), (-2,), lambda z: z[::-2]),
        _unslice_case(("B", 4), (), (-1, 2), (0, 0), lambda z: z[-1:, 2]),
        _unslice_case((3, "B", 4), ("B",), (1, -1, 3), (0, -1, 0), lambda z: z[1, ::-1, 3]),
    ],
    "concatenate": [
        Case((("x", ("B", 2)), ("x", ("B", 3))), (("B", 5),),
             lambda a, b, axis: np.hstack([a, b]), {"axis": 1}),
        Case((("x", (2, 3)), ("x", (1, 3)), ("x", (4, 3))), ((7, 3),),
             lambda a, b, c, axis: np.vstack([a, b, c]), {"axis": 0}),
    ],
    "gather": [
        Case((("x", (5, 3)), (("i32", 5), ("B", 2))), (("B", 2, 3),),
             lambda x, idx, axis: x[idx], {"axis": 0}),
        Case((("x", ("B", 4)), (("i64", 4), (3,))), (("B", 3),),
             lambda x, idx, axis: x[:, idx], {"axis": 1}),
        Case((("x", (6,)), (("i32", 6), ())), ((),), lambda x, idx, axis: x[idx], {"axis": 0}),
    ],
    "scatter_add": [
        Case((("x", ("B", 2, 3)), (("i32", 5), ("B", 2))), ((5, 3),), _np_scatter_add,
             {"shape": (5, 3), "axis": 0},
             lambda g, idx, shape, axis: _np_scatter_add(np.abs(g), idx, shape, axis)),
        Case((("x", ("B", 3)), (("i64", 4), (3,))), (("B", 4),), _np_scatter_add,
             {"shape": ("B", 4), "axis": 1},
             lambda g, idx, shape, axis: _np_scatter_add(np.abs(g), idx, shape, axis)),
    ],
}


# ----------------------------------------------------------------------------- the language

def _math(f):
    """A Python math function on arrays (the reference for libm-free kernels)."""
    return np.vectorize(f, otypes=[float])


def _compare(op):
    """Ties ("few" values), a literal, a rank-0 operand, integers (of two widths): masks."""
    return [Case((("few", ("B", 3)), ("few", ("B", 3))), (("B", 3),), op, out_dtype=bool_),
            Case((("lit", ()), ("few", (2, 3))), ((2, 3),), op, out_dtype=bool_),
            Case((("few", ()), ("few", (5,))), ((5,),), op, out_dtype=bool_),
            Case(((("i32", 4), ("B", 3)), (("i32", 4), ("B", 3))), (("B", 3),), op,
                 out_dtype=bool_),
            Case(((("i64", 3), (6,)), (("i64", 3), ())), ((6,),), op, out_dtype=bool_),
            Case(((("i32", 4), ("B", 3)), (("i64", 4), ("B", 3))), (("B", 3),), op,
                 out_dtype=bool_)]


def _logical(op, arity=2):
    """Masks of one shape (or a rank-0 one) in, a mask out."""
    if arity == 1:
        return [Case((("mask", ("B", 3)),), (("B", 3),), op, out_dtype=bool_)]
    return [Case((("mask", ("B", 3)), ("mask", ("B", 3))), (("B", 3),), op, out_dtype=bool_),
            Case((("mask", (7,)), ("mask", (7,))), ((7,),), op, out_dtype=bool_)]


def _extremum(op):
    """numpy's max / min over trailing, leading, middle and all axes, with ties."""
    return [Case((("x", ("B", 4)),), (("B",),), op, {"axes": (1,)}),
            Case((("x", ("B", 4)),), ((4,),), op, {"axes": (0,)}),
            Case((("few", (2, 3, 4)),), ((3,),), op, {"axes": (0, 2)}),
            Case((("x", (2, 3, 4)),), ((2, 4),), op, {"axes": (1,)}),
            Case((("x", (5,)),), ((),), op, {"axes": (0,)})]


def _arg(op):
    """numpy's argmax / argmin along one axis or all, ties ("few") at their first position."""
    return [Case((("x", ("B", 4)),), (("B",),), op, {"axis": 1}, out_dtype=i64),
            Case((("few", ("B", 4)),), ((4,),), op, {"axis": 0}, out_dtype=i64),
            Case((("few", (2, 3, 4)),), ((2, 4),), op, {"axis": 1}, out_dtype=i64),
            Case((("x", ("B", 3)),), ((),), op, {"axis": None}, out_dtype=i64)]


def _logsumexp_ref(x, axes):
    return np.log(np.sum(np.exp(x), axis=axes))


def _from_ints(kind, shape):
    return Case(((kind, shape),), (shape,), lambda x, dtype: x.astype(np.float64),
                lambda dt: {"dtype": dt})


LANGUAGE = {
    "abs": _unary(np.abs),
    "sqrt": _unary(_math(math.sqrt), "pos"),
    "log1p": _unary(_math(math.log1p), "unit"),
    "expm1": _unary(_math(math.expm1)),
    "sin": _unary(_math(math.sin)),
    "cos": _unary(_math(math.cos)),
    "softplus": _unary(lambda x: np.logaddexp(0.0, x)),
    "erfc": _unary(_math(math.erfc)),
    "maximum": _binary(np.maximum) + [Case((("few", ("B", 3)), ("few", ("B", 3))), (("B", 3),),
                                           np.maximum)],
    "minimum": _binary(np.minimum) + [Case((("few", ("B", 3)), ("few", ("B", 3))), (("B", 3),),
                                           np.minimum)],
    **{name: _compare(op) for name, op in [("lt", np.less), ("le", np.less_equal),
                                           ("gt", np.greater), ("ge", np.greater_equal),
                                           ("eq", np.equal), ("ne", np.not_equal)]},
    **{name: _logical(op) for name, op in [("logical_and", np.logical_and),
                                           ("logical_or", np.logical_or),
                                           ("logical_xor", np.logical_xor)]},
    "logical_not": _logical(np.logical_not, arity=1),
    "select": [
        Case((("mask", ("B", 3)), ("x", ("B", 3)), ("x", ("B", 3))), (("B", 3),), np.where),
        Case((("mask", (4,)), ("x", ()), ("lit", ())), ((4,),), np.where),
        Case((("mask", (2, 3)), ("lit", ()), ("x", (2, 3))), ((2, 3),), np.where),
    ],
    "reduce_max": _extremum(lambda x, axes: np.max(x, axis=axes)),
    "reduce_min": _extremum(lambda x, axes: np.min(x, axis=axes)),
    "logsumexp": [Case((("x", s),), (o,), _logsumexp_ref, {"axes": a}) for s, o, a in [
        (("B", 4), ("B",), (1,)), (("B", 4), (4,), (0,)), ((2, 3, 4), (3,), (0, 2)),
        ((5,), (), (0,)), ((2, "B", 3), (2,), (1, 2))]],
    "argmax": _arg(lambda x, axis: np.argmax(x, axis=axis)),
    "argmin": _arg(lambda x, axis: np.argmin(x, axis=axis)),
}
CASES["convert_element_type"] += [_from_ints("mask", ("B", 3)), _from_ints(("i32", 1000), (5,)),
                                  _from_ints(("i64", 1000), ("B",))]
CASES |= LANGUAGE
CASE_IDS = [(name, i) for name in CASES for i in range(len(CASES[name]))]


# ----------------------------------------------------------------------------- machinery

def _resolve(value, size: int):
    """A shape (or shape param) with the symbolic dim B replaced by size."""
    if isinstance(value, tuple):
        return tuple(size if d == "B" else d for d in value)
    return value


def _other(dt):
    """The float dtype that is not dt."""
    return f64 if dt == f32 else f32


def _type(kind, shape, dt) -> ArrayType:
    if isinstance(kind, tuple):  # (integer dtype name, number of classes)
        return ArrayType({"i32": i32, "i64": i64}[kind[0]], shape)
    if kind == "mask":
        return ArrayType(bool_, shape)
    return ArrayType(_other(dt) if kind == "other" else dt, shape)


def _out_dtype(case: Case, dt) -> DType:
    return case.out_dtype or dt


def _value(rng, kind, shape, dt):
    """A random operand of the given kind, in its program dtype."""
    if isinstance(kind, tuple):
        return rng.integers(0, kind[1], shape).astype(_type(kind, (), dt).dtype.np_dtype)
    if kind == "other":  # normal, in the other float dtype
        return np.asarray(2 * rng.standard_normal(shape), _other(dt).np_dtype)
    if kind == "mask":
        return np.asarray(rng.random(shape) < 0.5)
    x = {"x": lambda: 2 * rng.standard_normal(shape),
         "pos": lambda: rng.uniform(0.2, 4.0, shape),
         "unit": lambda: rng.uniform(0.0, 1.0, shape),
         "sparse": lambda: np.where(rng.random(shape) < 0.4, 0.0, rng.standard_normal(shape)),
         "few": lambda: rng.integers(-2, 3, shape) * 0.5,  # ties likely
         "lit": lambda: np.float64(LIT)}[kind]()
    return np.asarray(x, dt.np_dtype)


def _params(case: Case, dt) -> dict:
    return case.params(dt) if callable(case.params) else dict(case.params)


def _sizes(case: Case) -> tuple:
    shapes = [s for _, s in case.inputs + case.binders] + list(case.out)
    return SIZES if any("B" in s for s in shapes) else (None,)


@functools.cache
def _built(name: str, index: int, dt) -> tuple:
    """The case as a one-equation program, and its compiled code (shared by the tests)."""
    case = CASES[name][index]
    binders = tuple(Var(_type(k, s, dt)) for k, s in case.binders)
    atoms = tuple(Lit(LIT, ArrayType(dt, ())) if k == "lit" else Var(_type(k, s, dt))
                  for k, s in case.inputs)
    outs = tuple(Var(ArrayType(_out_dtype(case, dt), s)) for s in case.out)
    inputs = binders + tuple(a for a in atoms if isinstance(a, Var))
    program = Program(inputs, [Eqn(PRIMITIVES[name], atoms, _params(case, dt), outs)], outs)
    signature = Signature(tuple(Param(f"x{i}", v.type) for i, v in enumerate(inputs)),
                          outs[0].type)
    return program, compile_program(program, signature, f"{name}_{index}_{dt.name}")


def _examples(name: str, index: int, dt):
    """Per size of B: (binder values, operand values, params with B resolved, references)."""
    case = CASES[name][index]
    rng = np.random.default_rng(0)
    for size in _sizes(case):
        binders = [_value(rng, k, _resolve(s, size), dt) for k, s in case.binders]
        operands = [_value(rng, k, _resolve(s, size), dt) for k, s in case.inputs]
        params = {k: _resolve(v, size) for k, v in _params(case, dt).items()}
        wide = [x.astype(np.float64) if x.dtype.kind == "f" else x for x in operands]
        ref = case.ref(*wide, **params)
        scale = case.scale(*wide, **params) if case.scale else None
        refs = ref if isinstance(ref, tuple) else (ref,)
        scales = scale if isinstance(scale, tuple) else (scale,) * len(refs)
        yield size, binders, operands, params, list(zip(refs, scales, strict=True))


def assert_close(got, want, rtol, scale=None, what=""):
    """|got - want| <= rtol * scale elementwise, scale defaulting to |want|; shapes equal."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    bound = rtol * (np.abs(want) if scale is None else np.asarray(scale, np.float64))
    err = np.abs(got - want)
    worst = np.unravel_index(np.argmax(err - bound), err.shape) if err.ndim else ()
    assert np.all(err <= bound), (f"{what}: error {err[worst]:.3g} > bound {bound[worst]:.3g} "
                                  f"at {worst}: got {got[worst]!r}, expected {want[worst]!r}")


def _call_args(values: list) -> list:
    """Compiled-call arguments: rank-0 values as Python numbers."""
    return [x.item() if x.ndim == 0 else x for x in values]


# ----------------------------------------------------------------------------- tests

def test_every_primitive_has_cases():
    assert sorted(CASES) == sorted(PRIMITIVES)
    assert all(CASES[name] for name in CASES)


def test_every_primitive_has_a_lowering():
    """Elementwise primitives have an emitter (emitters.py), the others a kernel (kernels.py)."""
    from diffc.compiler.emitters import EMITTERS
    from diffc.compiler.kernels import KERNELS
    missing = [name for name, p in PRIMITIVES.items()
               if name not in (EMITTERS if p.elementwise else KERNELS)]
    assert missing == []


def test_every_primitive_has_a_symbolic_case():
    for name, cases in CASES.items():
        assert any(_sizes(c) == SIZES for c in cases), name


@pytest.mark.parametrize("dt", FLOATS, ids=str)
@pytest.mark.parametrize("name,index", CASE_IDS)
def test_impl_matches_numpy(name, index, dt):
    want = _out_dtype(CASES[name][index], dt).np_dtype
    for size, _, operands, params, refs in _examples(name, index, dt):
        out = PRIMITIVES[name].impl(*operands, **params)
        outs = out if isinstance(out, tuple) else (out,)
        assert len(outs) == len(refs)
        for k, (got, (ref, scale)) in enumerate(zip(outs, refs, strict=True)):
            assert np.asarray(got).dtype == want, f"output {k}: {np.asarray(got).dtype}"
            assert_close(got, ref, RTOL[dt], scale, f"impl output {k}, B={size}")


@pytest.mark.parametrize("dt", FLOATS, ids=str)
@pytest.mark.parametrize("name,index", CASE_IDS)
def test_shape_rule(name, index, dt):
    case = CASES[name][index]
    types = [_type(k, s, dt) for k, s in case.inputs]
    out = PRIMITIVES[name].shape_rule(*types, **_params(case, dt))
    expected = tuple(ArrayType(_out_dtype(case, dt), s) for s in case.out)
    assert (out if isinstance(out, tuple) else (out,)) == expected
    for size, _, _, _, refs in _examples(name, index, dt):  # the references agree with it
        assert [np.shape(r) for r, _ in refs] == [_resolve(s, size) for s in case.out]


@pytest.mark.parametrize("dt", FLOATS, ids=str)
@pytest.mark.parametrize("name,index", CASE_IDS)
def test_compiled_matches_eval_and_numpy(name, index, dt):
    program, compiled = _built(name, index, dt)
    out_dtype = _out_dtype(CASES[name][index], dt)
    for size, binders, operands, _, refs in _examples(name, index, dt):
        values = binders + [x for (k, _), x in zip(CASES[name][index].inputs, operands,
                                                   strict=True) if k != "lit"]
        evaluated = eval_program(program, *values)
        native = compiled(*_call_args(values))
        assert len(native) == len(evaluated) == len(refs)
        for k, (got, ev, (ref, scale)) in enumerate(zip(native, evaluated, refs, strict=True)):
            if np.ndim(ref):
                assert got.dtype == out_dtype.np_dtype, f"output {k}: {got.dtype}"
            else:
                assert isinstance(got, type(out_dtype.np_dtype.type(0).item())), type(got)
            where = f"output {k}, B={size}"
            assert_close(got, ev, RTOL[dt], scale if scale is not None else np.abs(ref),
                         f"compiled vs eval_program, {where}")
            assert_close(got, ref, RTOL[dt], scale, f"compiled vs numpy, {where}")
            assert_close(ev, ref, RTOL[dt], scale, f"eval_program vs numpy, {where}")


# ----------------------------------------------------------------------------- shape rule errors

def _t(dt, *shape) -> ArrayType:
    return ArrayType(dt, shape)


_BODY = _fused_scalar(f32)["body"]  # inputs f32[5], f32
# primitive, operand types, params, the error its shape rule must raise
BAD = [
    ("broadcast_in_dim", [_t(f32, 3)], {"shape": (2, 4), "broadcast_dimensions": (1,)},
     ShapeError),
    ("broadcast_in_dim", [_t(f32, 3)], {"shape": (3, 2), "broadcast_dimensions": ()}, ShapeError),
    ("broadcast_in_dim", [_t(f32, 2, 3)], {"shape": (3, 2), "broadcast_dimensions": (1, 0)},
     ShapeError),
    ("broadcast_in_dim", [_t(f32, 3)], {"shape": (2, 3), "broadcast_dimensions": (2,)},
     ShapeError),
    ("broadcast_in_dim", [_t(f32, "B")], {"shape": ("C", 2), "broadcast_dimensions": (0,)},
     ShapeError),
    ("reshape", [_t(f32, 2, 3)], {"shape": (4, 2)}, ShapeError),
    ("reshape", [_t(f32, "B", 4)], {"shape": ("B", 3)}, ShapeError),
    ("reshape", [_t(f32, "B", 4)], {"shape": ("N", 4)}, ShapeError),
    ("transpose", [_t(f32, 2, 3)], {"perm": (0,)}, ShapeError),
    ("transpose", [_t(f32, 2, 3)], {"perm": (0, 0)}, ShapeError),
    ("reduce_sum", [_t(f32, 2, 3)], {"axes": (2,)}, ShapeError),
    ("reduce_sum", [_t(f32, 2, 3)], {"axes": (0, 0)}, ShapeError),
    ("reduce_sum", [_t(i32, 3)], {"axes": (0,)}, DTypeError),
    ("dim_size", [_t(f32, 2, 3)], {"axis": 2, "dtype": f32}, ShapeError),
    ("matmul", [_t(f32, 2, 3), _t(f32, 4, 5)], {"transpose_a": False, "transpose_b": False},
     ShapeError),
    ("matmul", [_t(f32, 3, 2), _t(f32, 3, 4)], {"transpose_a": True, "transpose_b": True},
     ShapeError),
    ("matmul", [_t(f32, 2, "B"), _t(f32, "C", 4)], {"transpose_a": False, "transpose_b": False},
     ShapeError),
    ("matmul", [_t(f32, 3), _t(f32, 3, 4)], {"transpose_a": False, "transpose_b": False},
     ShapeError),
    ("matmul", [_t(f32, 2, 3), _t(f64, 3, 4)], {"transpose_a": False, "transpose_b": False},
     DTypeError),
    ("matmul", [_t(i64, 2, 3), _t(i64, 3, 4)], {"transpose_a": False, "transpose_b": False},
     DTypeError),
    ("matvec", [_t(f32, 2, 3), _t(f32, 2)], {"transpose_a": False}, ShapeError),
    ("matvec", [_t(f32, 2, 3), _t(f32, 3)], {"transpose_a": True}, ShapeError),
    ("matvec", [_t(f32, 2, 3), _t(f32, 3, 1)], {"transpose_a": False}, ShapeError),
    ("matvec", [_t(f64, 2, 3), _t(f32, 3)], {"transpose_a": False}, DTypeError),
    ("outer", [_t(f32, 2, 3), _t(f32, 3)], {}, ShapeError),
    ("outer", [_t(f32, 2), _t(f64, 3)], {}, DTypeError),
    ("softmax", [_t(f32)], {}, ShapeError),
    ("softmax", [_t(i32, 3)], {}, DTypeError),
    ("log_softmax", [_t(f64)], {}, ShapeError),
    ("log_softmax", [_t(i64, 3)], {}, DTypeError),
    ("pick", [_t(f32, 2, 5), _t(i32, 3)], {}, ShapeError),
    ("pick", [_t(f32, 2, 5), _t(f32, 2)], {}, DTypeError),
    ("pick", [_t(f32), _t(i32)], {}, ShapeError),
    ("pick", [_t(i32, 2, 5), _t(i32, 2)], {}, DTypeError),
    ("unpick", [_t(f32, 2), _t(i32, 2)], {"shape": (3, 5)}, ShapeError),
    ("unpick", [_t(f32, 4), _t(i32, 3)], {"shape": (3, 5)}, ShapeError),
    ("unpick", [_t(f32, 3), _t(f32, 3)], {"shape": (3, 5)}, DTypeError),
    ("softmax_cross_entropy", [_t(f32, 2, 5), _t(f32, 2, 4)], {}, ShapeError),
    ("softmax_cross_entropy", [_t(f32, 2, 5), _t(f64, 2, 5)], {}, DTypeError),
    ("softmax_cross_entropy", [_t(f32, 2, 5), _t(i32, 5)], {}, ShapeError),
    ("softmax_cross_entropy", [_t(f32), _t(i32)], {}, ShapeError),
    ("softmax_cross_entropy_grad", [_t(f32, 2, 5), _t(i32, 2), _t(f32, 3)], {}, ShapeError),
    ("softmax_cross_entropy_grad", [_t(f32, 2, 5), _t(f32, 2, 4), _t(f32, 2)], {},
     ShapeError),
    ("softmax_cross_entropy_grad", [_t(f32, 2, 5), _t(i32, 2), _t(f64, 2)], {}, DTypeError),
    ("fused", [_t(f32, 4), _t(f32)], {"body": _BODY}, ShapeError),
    ("fused", [_t(f32, 5)], {"body": _BODY}, ShapeError),
    ("fused", [_t(f64, 5), _t(f64)], {"body": _BODY}, DTypeError),
    ("sgd_outer", [_t(f32, 3, 4), _t(f32, 4), _t(f32, 4), _t(f32)], {}, ShapeError),
    ("sgd_outer", [_t(f32, 3, 4), _t(f32, 3), _t(f32, 4), _t(f32, 1)], {}, ShapeError),
    ("sgd_outer", [_t(f32, 3, 4), _t(f32, 3), _t(f64, 4), _t(f32)], {}, DTypeError),
    ("update_matvec", [_t(f32, 3, 4), _t(f32, 3), _t(f32, 4), _t(f32), _t(f32, 5)], {},
     ShapeError),
    ("update_matvec", [_t(f32, 12), _t(f32, 3), _t(f32, 4), _t(f32), _t(f32, 4)], {},
     ShapeError),
    ("update_matvec", [_t(f32, 3, 4), _t(f32, 3), _t(f32, 4), _t(f64), _t(f32, 4)], {},
     DTypeError),
    # the language
    ("reduce_max", [_t(f32, 2, 3)], {"axes": (2,)}, ShapeError),
    ("reduce_max", [_t(f32, 2, 3)], {"axes": (1, 1)}, ShapeError),
    ("reduce_max", [_t(i32, 3)], {"axes": (0,)}, DTypeError),
    ("reduce_min", [_t(f64, "B", 3)], {"axes": (2,)}, ShapeError),
    ("reduce_min", [_t(bool_, 3)], {"axes": (0,)}, DTypeError),
    ("logsumexp", [_t(f32, 2, 3)], {"axes": (-1,)}, ShapeError),
    ("logsumexp", [_t(i64, 3)], {"axes": (0,)}, DTypeError),
    ("argmax", [_t(f32, 2, 3)], {"axis": 2}, ShapeError),
    ("argmax", [_t(i32, 2, 3)], {"axis": 0}, DTypeError),
    ("argmin", [_t(f64, 4)], {"axis": 1}, ShapeError),
    ("argmin", [_t(bool_, 4)], {"axis": None}, DTypeError),
]

BAD += [  # shape primitives
    ("slice", [_t(f32, 4)], {"start": (4,), "step": (0,), "shape": ()}, ShapeError),
    ("slice", [_t(f32, 4)], {"start": (1,), "step": (2,), "shape": (3,)}, ShapeError),
    ("slice", [_t(f32, 4)], {"start": (3,), "step": (-1,), "shape": (5,)}, ShapeError),
    ("slice", [_t(f32, 2, 3)], {"start": (0,), "step": (1,), "shape": (2,)}, ShapeError),
    ("slice", [_t(f32, "B")], {"start": (1,), "step": (1,), "shape": ("B",)}, ShapeError),
    ("slice", [_t(f32, "B")], {"start": (0,), "step": (2,), "shape": ("B",)}, ShapeError),
    ("unslice", [_t(f32, 3)], {"shape": (4,), "start": (1,), "step": (2,)}, ShapeError),
    ("unslice", [_t(i32, 2)], {"shape": (4,), "start": (1,), "step": (2,)}, DTypeError),
    ("concatenate", [_t(f32, 2, 3), _t(f32, 2, 4)], {"axis": 0}, ShapeError),
    ("concatenate", [_t(f32, 2, 3), _t(f64, 2, 3)], {"axis": 0}, DTypeError),
    ("concatenate", [_t(f32, "B", 3), _t(f32, 2, 3)], {"axis": 0}, ShapeError),
    ("concatenate", [_t(f32, 2, 3), _t(f32, 2, 3)], {"axis": 2}, ShapeError),
    ("gather", [_t(f32, 5, 3), _t(f32, 2)], {"axis": 0}, DTypeError),
    ("gather", [_t(i32, 5, 3), _t(i32, 2)], {"axis": 0}, DTypeError),
    ("gather", [_t(f32, 5, 3), _t(i32, 2)], {"axis": 2}, ShapeError),
    ("scatter_add", [_t(f32, 2, 3), _t(i32, 4)], {"shape": (5, 3), "axis": 0}, ShapeError),
    ("scatter_add", [_t(f32, 2, 3), _t(f64, 2)], {"shape": (5, 3), "axis": 0}, DTypeError),
]


def test_every_non_elementwise_primitive_has_error_cases():
    """fill is exempt: it has no operands, only params."""
    wanted = {n for n, p in PRIMITIVES.items() if not p.elementwise} - {"fill"}
    assert wanted == {name for name, *_ in BAD}


@pytest.mark.parametrize("name,types,params,error", BAD,
                         ids=[f"{b[0]}-{i}" for i, b in enumerate(BAD)])
def test_shape_rule_rejects(name, types, params, error):
    with pytest.raises(error) as info:
        PRIMITIVES[name].shape_rule(*types, **params)
    found = [str(t) for t in types] + [t.dtype.name for t in types] + [str(v) for v in
                                                                        params.values()]
    assert any(f in str(info.value) for f in found), "the message names what was found"


ELEMENTWISE = [n for n, p in PRIMITIVES.items() if p.elementwise]


@pytest.mark.parametrize("name", ELEMENTWISE)
def test_elementwise_rule_rejects(name):
    """Integer (or mask) operands (floats and integers for the logic of masks, masks for
    comparisons), mixed dtypes, unequal shapes; a conversion to a non-float dtype; a non-mask
    condition."""
    if name == "convert_element_type":
        for dtype in (i32, i64, bool_):
            with pytest.raises(DTypeError, match=dtype.name):
                PRIMITIVES[name].shape_rule(_t(f32, 3), dtype=dtype)
        return
    arity = len(CASES[name][0].inputs)
    logic = name.startswith("logical_")
    good = bool_ if logic else f32
    bads = (f32, i32) if logic else (bool_,) if CASES[name][0].out_dtype == bool_ else \
        (i32, bool_)
    for bad in bads:
        with pytest.raises(DTypeError):
            PRIMITIVES[name].shape_rule(*[_t(bad, 3)] * arity, **_params(CASES[name][0], f32))
    if name == "select":
        with pytest.raises(DTypeError, match=r"mask.*f32\[3\]"):
            PRIMITIVES[name].shape_rule(_t(f32, 3), _t(f32, 3), _t(f32, 3))
        with pytest.raises(DTypeError):
            PRIMITIVES[name].shape_rule(_t(bool_, 3), _t(f32, 3), _t(f64, 3))
        with pytest.raises(ShapeError):
            PRIMITIVES[name].shape_rule(_t(bool_, 4), _t(f32, 3), _t(f32, 3))
    if arity == 2:
        comparison = CASES[name][0].out_dtype == bool_ and not logic  # integers of any width
        for mixed in ((f32, f64), (good, i64)) + (() if comparison else ((i32, i64),)):
            with pytest.raises(DTypeError):
                PRIMITIVES[name].shape_rule(_t(mixed[0], 3), _t(mixed[1], 3))
        with pytest.raises(ShapeError):
            PRIMITIVES[name].shape_rule(_t(good, 3), _t(good, 4))
        with pytest.raises(ShapeError):
            PRIMITIVES[name].shape_rule(_t(good, "B", 3), _t(good, 3))


# ----------------------------------------------------------------------------- accuracy

@functools.cache
def _unary_compiled(name: str, dt, **params):
    """out = name(x) over x: dt[N], compiled once per op, dtype and params."""
    x, out = Var(dt["N"]), Var(dt["N"])
    program = Program((x,), [Eqn(PRIMITIVES[name], (x,), dict(params), (out,))], (out,))
    return compile_program(program, Signature((Param("x", x.type),), out.type), f"u_{name}")


def _run(name, x, **params):
    dt = f32 if x.dtype == np.float32 else f64
    (out,) = _unary_compiled(name, dt, **params)(np.ascontiguousarray(x))
    return out


SWEEP_RTOL = {f32: 1e-6, f64: 1e-14}
_rng = np.random.default_rng(0)


def _logspace(lo, hi, n=20000):
    """Random magnitudes 10**[lo, hi), both signs; seeded."""
    return 10.0 ** _rng.uniform(lo, hi, n) * _rng.choice([-1.0, 1.0], n)


SWEEPS = {  # op -> dtype -> inputs; reference: numpy in float64 (correctly rounded or nearly)
    "exp": {f64: np.r_[np.linspace(-745, 709.78, 100001), _logspace(-320, 0)],
            f32: np.r_[np.linspace(-103, 88.7, 100001), _logspace(-45, 0)]},
    "log": {f64: np.r_[np.abs(_logspace(-323, 308)), np.linspace(0.5, 2, 100001)],
            f32: np.r_[np.abs(_logspace(-45, 38)), np.linspace(0.5, 2, 100001)]},
    "tanh": {f64: np.r_[np.linspace(-30, 30, 100001), _logspace(-320, 0)],
             f32: np.r_[np.linspace(-15, 15, 100001), _logspace(-45, 0)]},
    "sigmoid": {f64: np.r_[np.linspace(-745, 700, 100001), _logspace(-320, 0)],  # to the
                f32: np.r_[np.linspace(-104, 80, 100001), _logspace(-45, 0)]},  # subnormals
}
TRIG_EXACT = 2.0 ** 20 * math.pi / 2  # sin and cos are exact to a few ulp up to here
SWEEPS |= {  # the language's transcendentals, down to the subnormals where they reach them
    "log1p": {f64: np.r_[np.abs(_logspace(-320, 300)), np.linspace(-1, 1, 100001)[1:]],
              f32: np.r_[np.abs(_logspace(-45, 37)), np.linspace(-1, 1, 100001)[1:]]},
    "expm1": {f64: np.r_[np.linspace(-50, 709.7, 100001), _logspace(-320, 0)],
              f32: np.r_[np.linspace(-20, 88.7, 100001), _logspace(-45, 0)]},
    "sin": {f64: np.r_[np.linspace(-10, 10, 100001), _logspace(-320, np.log10(TRIG_EXACT))],
            f32: np.r_[np.linspace(-10, 10, 100001), _logspace(-45, np.log10(TRIG_EXACT))]},
    "softplus": {f64: np.r_[np.linspace(-745, 800, 100001), _logspace(-320, 2)],
                 f32: np.r_[np.linspace(-103, 100, 100001), _logspace(-45, 2)]},
    "erfc": {f64: np.r_[np.linspace(-6, 26.5, 100001), _logspace(-320, 1)],
             f32: np.r_[np.linspace(-4, 9.1, 100001), _logspace(-45, 1)]},
}
SWEEPS["cos"] = SWEEPS["sin"]
POWERS = [2, 3, -1, -2, 0.5, 1.5, -2.5, 1 / 3]


def _sweep_ref(name, x):
    with np.errstate(over="ignore"):
        return {"exp": np.exp, "log": np.log, "tanh": np.tanh, "sigmoid": _sigmoid,
                "log1p": np.log1p, "expm1": np.expm1, "sin": np.sin, "cos": np.cos,
                "softplus": lambda x: np.logaddexp(0.0, x), "erfc": _math(math.erfc)}[name](x)


def _assert_accurate(out, ref, dt):
    """Relative error within SWEEP_RTOL, or within one subnormal step where ref is subnormal."""
    floor = np.finfo(dt.np_dtype).smallest_subnormal
    ref = ref.astype(dt.np_dtype).astype(np.float64)  # what a correctly rounded result gives
    assert_close(out, ref, SWEEP_RTOL[dt], np.abs(ref) + floor / SWEEP_RTOL[dt])


@pytest.mark.parametrize("dt", FLOATS, ids=str)
@pytest.mark.parametrize("name", list(SWEEPS))
def test_transcendental_sweep(name, dt):
    x = SWEEPS[name][dt].astype(dt.np_dtype)
    _assert_accurate(_run(name, x), _sweep_ref(name, x.astype(np.float64)), dt)


@pytest.mark.parametrize("dt", FLOATS, ids=str)
@pytest.mark.parametrize("y", POWERS, ids=str)
def test_pow_sweep(y, dt):
    x = np.abs(_logspace(-100, 100) if dt is f64 else _logspace(-12, 12)).astype(dt.np_dtype)
    _assert_accurate(_run("pow", x, y=y), x.astype(np.float64) ** y, dt)


@pytest.mark.parametrize("dt", FLOATS, ids=str)
@pytest.mark.parametrize("name", ["sin", "cos"])
def test_trig_beyond_the_exact_range(name, dt):
    """Past 2**20 * pi/2 the reduction by pi/2 rounds: the absolute error stays below
    |x| * 2**-52 (1e-8 at 1e8), and from 2**50 on (where that passes 0.1) the result is nan."""
    x = np.r_[_logspace(np.log10(TRIG_EXACT), np.log10(2.0 ** 50) - 1e-9, 20000),
              [2.0 ** 50, -(2.0 ** 50), 1e16, 1e30, -1e30]].astype(dt.np_dtype)
    out = _run(name, x).astype(np.float64)
    ref = {"sin": np.sin, "cos": np.cos}[name](x.astype(np.float64))
    near = np.abs(x) < 2.0 ** 50
    assert np.all(np.abs(out[near] - ref[near]) <= np.abs(x[near]) * 2.0 ** -52 +
                  (6e-8 if dt is f32 else 0.0))
    assert np.all(np.isnan(out[~near]))


TINY = {f64: 5e-324, f32: 1e-45}
SPECIAL = [0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0]
SPECIAL_BY_OP = {  # op -> dtype -> extra inputs: overflow, underflow, subnormals, signs
    "exp": {f64: [709.78, 709.79, 1000.0, -745.1, -745.2, -746.0, -1000.0],
            f32: [88.72, 88.73, 1000.0, -103.9, -104.0, -105.0, -1000.0]},
    "log": {f64: [-5.0, 2.2250738585072014e-308, 1e-310, -1e-310],
            f32: [-5.0, 1.1754944e-38, 1e-40, -1e-40]},
    "tanh": {f64: [20.0, -20.0, 1e300, -1e300], f32: [10.0, -10.0, 1e30, -1e30]},
    "sigmoid": {f64: [1000.0, -1000.0, 36.0, -36.0, -720.0, -740.0],
                f32: [100.0, -100.0, 17.0, -17.0, -95.0]},
    "pow": {f64: [-2.0, 4.0, -8.0, 1e300, 1e-300], f32: [-2.0, 4.0, -8.0, 1e30, 1e-30]},
    "log1p": {f64: [-0.5, -1 + 2 ** -53, -1.5, 1e300, 1e-310, -1e-310],
              f32: [-0.5, -1 + 2 ** -24, -1.5, 1e30, 1e-40, -1e-40]},
    "expm1": {f64: [709.78, 709.79, -40.0, -800.0, 1e-310], f32: [88.72, 88.73, -20.0, -200.0]},
    "sin": {f64: [np.pi, 1e5, -1e6, 3e-320], f32: [3.1415927, 1e5, -1e6, 3e-40]},
    "softplus": {f64: [745.0, -745.0, 800.0, -40.0, 1e300], f32: [104.0, -104.0, 100.0, -20.0]},
    "erfc": {f64: [26.5, 27.3, 28.5, -30.0, 1e300, 1e-310], f32: [9.19, 9.2, 10.0, -30.0]},
}
SPECIAL_BY_OP["cos"] = SPECIAL_BY_OP["sin"]


def _assert_special(out, ref, dt):
    """nan, infinities and zeros (with their sign) exactly as numpy; finite values close."""
    assert np.array_equal(np.isnan(out), np.isnan(ref)), (out, ref)
    exact = np.isinf(ref) | (ref == 0)
    assert np.array_equal(out[exact], ref[exact]), (out[exact], ref[exact])
    assert np.array_equal(np.signbit(out[exact]), np.signbit(ref[exact])), (out, ref)
    finite = np.isfinite(ref) & ~exact
    _assert_accurate(out[finite], ref[finite].astype(np.float64), dt)


def _special_inputs(name, dt):
    x = SPECIAL + [TINY[dt], -TINY[dt]] + SPECIAL_BY_OP[name][dt]
    return np.array(x, dt.np_dtype)


@pytest.mark.parametrize("dt", FLOATS, ids=str)
@pytest.mark.parametrize("name", ["exp", "log", "tanh", "sigmoid", "log1p", "expm1", "sin", "cos",
                                  "softplus", "erfc"])
def test_special_values(name, dt):
    x = _special_inputs(name, dt)
    with np.errstate(all="ignore"):  # sigmoid: 1 / (1 + exp(-x)) would give 0 for exp(x) in
        ref = _sweep_ref(name, x.astype(np.float64)).astype(dt.np_dtype)  # the subnormals
    _assert_special(_run(name, x), ref, dt)


@pytest.mark.parametrize("dt", FLOATS, ids=str)
@pytest.mark.parametrize("y", [0, 2, 3, -1, -2, 0.5, 1.5, -2.5], ids=str)
def test_pow_special_values(y, dt):
    x = _special_inputs("pow", dt)
    with np.errstate(all="ignore"):
        ref = np.power(x, dt.np_dtype.type(y))
    _assert_special(_run("pow", x, y=y), ref, dt)



def _convert_program(source, target, square: bool) -> Program:
    """out = convert(x) over x: source[N], or convert(x * 1.5)**2 (the conversion then sits
    between computations in the other dtype, one with a literal of the source dtype)."""
    x, out = Var(source["N"]), Var(target["N"])
    convert = PRIMITIVES["convert_element_type"]
    if not square:
        return Program((x,), [Eqn(convert, (x,), {"dtype": target}, (out,))], (out,))
    x2, c = Var(source["N"]), Var(target["N"])
    return Program((x,), [Eqn(PRIMITIVES["mul"], (x, Lit(1.5, ArrayType(source, ()))), {}, (x2,)),
                          Eqn(convert, (x2,), {"dtype": target}, (c,)),
                          Eqn(PRIMITIVES["mul"], (c, c), {}, (out,))], (out,))


CONVERT_INPUTS = np.r_[
    SPECIAL, 1 + 2.0 ** -24, 1 + 3 * 2.0 ** -24, -(1 + 2.0 ** -24),  # f32 ties: to even
    3.4028234663852886e38, 3.4028235677973366e38, 3.5e38, -1e300,  # f32's max, overflow
    1.401298464324817e-45, 7e-46, 7.1e-46, 1e-50, 1e-40, -1e-40,  # f32 subnormals, underflow
    np.random.default_rng(2).standard_normal(1000) * 10.0 ** np.linspace(-40, 40, 1000)]


@pytest.mark.parametrize("square", [False, True], ids=["alone", "fused"])
@pytest.mark.parametrize("source, target", [(f64, f32), (f32, f64)], ids=["f64-f32", "f32-f64"])
def test_convert_element_type_rounds_like_numpy(source, target, square):
    """Narrowing rounds to nearest (ties to even, overflow to inf, subnormals kept), widening is
    exact: the bits of numpy's astype, also where fusion puts the conversion in one loop with
    the multiplications before and after it (each computed in its own dtype)."""
    program = _convert_program(source, target, square)
    if square:
        fused = [e.params["body"] for e in pipeline.optimize(program).eqns
                 if e.prim.name == "fused"]
        assert [[e.prim.name for e in body.eqns] for body in fused] == [
            ["mul", "convert_element_type", "mul"]]
    compiled = compile_program(program, Signature((Param("x", program.inputs[0].type),),
                                                  program.outputs[0].type),
                               f"convert_{source.name}_{target.name}_{square}")
    with np.errstate(over="ignore"):
        x = CONVERT_INPUTS.astype(source.np_dtype)
        ref = (x * source.np_dtype.type(1.5) if square else x).astype(target.np_dtype)
        ref = ref * ref if square else ref
    (out,) = compiled(x)
    assert out.dtype == target.np_dtype
    nan = np.isnan(ref)
    assert np.array_equal(np.isnan(out), nan)
    assert np.array_equal(out[~nan].view(np.uint8), ref[~nan].view(np.uint8))
