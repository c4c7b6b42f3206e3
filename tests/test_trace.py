"""Tracing: the equations recorded for each operation, their sources, inlining, and eager nn."""
import functools

import numpy as np
import pytest
from models import tagged_line

import diffc
from diffc import DTypeError, ShapeError, f32, f64, i32, nn
from diffc.core.ir import Lit, eval_program, verify
from diffc.core.types import ArrayType

B, N, M = "B", "N", "M"  # symbolic dims

HERE = __file__
line_of = functools.partial(tagged_line, HERE)


def traced(body, *types, result):
    """body traced with the given parameter and result types (for parametrized tests)."""
    names = body.__code__.co_varnames[:body.__code__.co_argcount]
    body.__annotations__ = dict(zip(names, types, strict=True), **{"return": result})
    return diffc.function(body)


def summary(fn) -> list[tuple]:
    """(primitive name, params, output type) of every equation."""
    return [(e.prim.name, e.params, str(e.outputs[0].type)) for e in fn.program.eqns]


def run(fn, *args):
    """The traced program evaluated by the numpy oracle, after checking its invariants."""
    verify(fn.program)
    (out,) = eval_program(fn.program, *args)
    return out


rng = np.random.default_rng(0)


# ----------------------------------------------------------------------------- equations

def test_equations_record_primitives_types_and_user_lines():
    @diffc.function
    def f(W: f64[3, 4], x: f64[4], b: f64[3]) -> f64:
        h = nn.relu(nn.dense(W, x, b))  # trace:hidden
        return nn.sum(h * h)  # trace:loss

    assert summary(f) == [("matvec", {"transpose_a": False}, "f64[3]"),
                          ("add", {}, "f64[3]"),
                          ("relu", {}, "f64[3]"),
                          ("mul", {}, "f64[3]"),
                          ("reduce_sum", {"axes": (0,)}, "f64")]
    hidden, loss = line_of("trace:hidden"), line_of("trace:loss")
    assert [e.source for e in f.program.eqns] == [f"{HERE}:{n}" for n in
                                                  (hidden, hidden, hidden, loss, loss)]
    W, x, b = rng.normal(size=(3, 4)), rng.normal(size=4), rng.normal(size=3)
    np.testing.assert_allclose(run(f, W, x, b), np.sum(np.maximum(W @ x + b, 0) ** 2),
                               rtol=1e-12)


def test_program_inputs_and_output_follow_the_signature():
    @diffc.function
    def f(x: f32[B, 784], lr: f32) -> f32[B, 784]:
        return x * lr

    assert [v.type for v in f.program.inputs] == [f32[B, 784], ArrayType(f32, ())]
    (out,) = f.program.outputs
    assert out is f.program.eqns[-1].outputs[0]
    assert f.ir.splitlines()[0] == "{ lambda a:f32[B,784] b:f32 ."


def test_each_equation_gets_the_line_of_its_own_operation():
    @diffc.function
    def f(x: f64[3]) -> f64[3]:
        y = x * 2.0  # trace:first
        y = -y  # trace:second
        return nn.exp(  # trace:third
            y)

    lines = [line_of(f"trace:{t}") for t in ("first", "second", "third")]
    assert [e.source for e in f.program.eqns] == [f"{HERE}:{n}" for n in lines]


# ----------------------------------------------------------------------------- broadcasting

SCALAR = ArrayType(f64, ())


def sample(t: ArrayType, batch: int = 5) -> np.ndarray:
    """A random array of type t, with each symbolic dim of size batch."""
    return rng.normal(size=tuple(batch if isinstance(d, str) else d for d in t.shape))


@pytest.mark.parametrize("ta, tb, out, expected", [
    (f64[2, 3], f64[3], f64[2, 3], [
        ("broadcast_in_dim", {"shape": (2, 3), "broadcast_dimensions": (1,)}), ("add", {})]),
    (f64[3], f64[2, 3], f64[2, 3], [
        ("broadcast_in_dim", {"shape": (2, 3), "broadcast_dimensions": (1,)}), ("add", {})]),
    (f64[4, 1], f64[3], f64[4, 3], [
        ("reshape", {"shape": (4,)}),
        ("broadcast_in_dim", {"shape": (4, 3), "broadcast_dimensions": (0,)}),
        ("broadcast_in_dim", {"shape": (4, 3), "broadcast_dimensions": (1,)}), ("add", {})]),
    (f64[1, 3], f64[2, 3], f64[2, 3], [
        ("reshape", {"shape": (3,)}),
        ("broadcast_in_dim", {"shape": (2, 3), "broadcast_dimensions": (1,)}), ("add", {})]),
    (f64[2, 1, 4], f64[3, 1], f64[2, 3, 4], [
        ("reshape", {"shape": (2, 4)}),
        ("broadcast_in_dim", {"shape": (2, 3, 4), "broadcast_dimensions": (0, 2)}),
        ("reshape", {"shape": (3,)}),
        ("broadcast_in_dim", {"shape": (2, 3, 4), "broadcast_dimensions": (1,)}), ("add", {})]),
    (f64[B, 3], f64[3], f64[B, 3], [
        ("broadcast_in_dim", {"shape": (B, 3), "broadcast_dimensions": (1,)}), ("add", {})]),
    (f64[2, 3], f64[2, 3], f64[2, 3], [("add", {})]),
], ids=lambda v: str(v) if isinstance(v, ArrayType) else "eqns")
def test_broadcasting_becomes_explicit(ta, tb, out, expected):
    f = traced(lambda a, b: a + b, ta, tb, result=out)
    assert [(e.prim.name, e.params) for e in f.program.eqns] == expected
    assert f.program.eqns[-1].outputs[0].type == out
    a, b = sample(ta), sample(tb)
    np.testing.assert_array_equal(run(f, a, b), a + b)


@pytest.mark.parametrize("ta, tb", [(f64[2, 3], SCALAR), (SCALAR, f64[2, 3]), (SCALAR, SCALAR)],
                         ids=str)
def test_rank0_operands_stay_implicit(ta, tb):
    f = traced(lambda a, b: a * b, ta, tb, result=f64[2, 3] if ta.ndim + tb.ndim else SCALAR)
    (e,) = f.program.eqns
    assert e.prim.name == "mul"
    assert e.inputs == f.program.inputs
    a, b = sample(ta), sample(tb)
    np.testing.assert_array_equal(run(f, a, b), a * b)


def test_python_numbers_become_scalar_literals():
    @diffc.function
    def f(x: f32[3]) -> f32[3]:
        return 1 - 2.5 * x / 4

    mul, div, sub = f.program.eqns
    assert [e.prim.name for e in (mul, div, sub)] == ["mul", "div", "sub"]
    assert mul.inputs[1] is f.program.inputs[0]
    assert div.inputs[0] is mul.outputs[0] and sub.inputs[1] is div.outputs[0]
    for lit, value in ((mul.inputs[0], 2.5), (div.inputs[1], 4.0), (sub.inputs[0], 1.0)):
        assert isinstance(lit, Lit)
        assert (lit.value, lit.type) == (value, ArrayType(f32, ()))
    x = rng.normal(size=3).astype(np.float32)
    np.testing.assert_allclose(run(f, x), 1 - 2.5 * x / 4, rtol=1e-6)


def test_symbolic_dims_flow_through():
    @diffc.function
    def f(X: f64[B, 4], W: f64[3, 4], b: f64[3]) -> f64[3]:
        return nn.dense(W, X, b).mean(0)

    assert summary(f) == [
        ("matmul", {"transpose_a": False, "transpose_b": True}, "f64[B,3]"),
        ("broadcast_in_dim", {"shape": (B, 3), "broadcast_dimensions": (1,)}, "f64[B,3]"),
        ("add", {}, "f64[B,3]"),
        ("reduce_sum", {"axes": (0,)}, "f64[3]"),
        ("dim_size", {"axis": 0, "dtype": f64}, "f64"),
        ("div", {}, "f64[3]")]
    W, b = rng.normal(size=(3, 4)), rng.normal(size=3)
    for batch in (1, 7):
        X = rng.normal(size=(batch, 4))
        np.testing.assert_allclose(run(f, X, W, b), (X @ W.T + b).mean(0), rtol=1e-12)


@pytest.mark.parametrize("loss, prims", [  # as traced programs, in stable form
    (lambda z, y: nn.cross_entropy(nn.softmax(z), y),
     ["softmax_cross_entropy", "reduce_sum", "dim_size", "div"]),
    (lambda z, y: nn.softmax_cross_entropy(z, y),
     ["softmax_cross_entropy", "reduce_sum", "dim_size", "div"]),
    (lambda z, y: -nn.log_softmax(z).sum(), ["log_softmax", "reduce_sum", "neg"]),
], ids=["cross_entropy", "softmax_cross_entropy", "log_softmax"])
def test_nn_losses_trace_to_their_primitives(loss, prims):
    f = traced(loss, f64[B, 4], i32[B], result=SCALAR)
    assert [e.prim.name for e in f.program.eqns] == prims
    z, y = rng.normal(size=(6, 4)), rng.integers(0, 4, size=6).astype(np.int32)
    np.testing.assert_allclose(run(f, z, y), loss(z, y), rtol=1e-12)


# ----------------------------------------------------------------------------- array methods

@pytest.mark.parametrize("t, perm, out", [
    (f64[2, 3], (1, 0), f64[3, 2]),
    (f64[2, 3, 4], (2, 1, 0), f64[4, 3, 2]),
    (f64[B, 3], (1, 0), f64[3, B]),
], ids=str)
def test_transpose(t, perm, out):
    f = traced(lambda x: x.T, t, result=out)
    assert summary(f) == [("transpose", {"perm": perm}, str(out))]
    x = sample(t)
    np.testing.assert_array_equal(run(f, x), x.T)


def test_transpose_of_a_vector_is_the_vector():
    f = traced(lambda x: x.T, f64[3], result=f64[3])
    assert f.program.eqns == []
    assert f.program.outputs[0] is f.program.inputs[0]


AXES = [(None, (0, 1, 2)), (0, (0,)), (1, (1,)), (-1, (2,)), (-3, (0,)), ((0, -1), (0, 2)),
        ((-1, 0), (0, 2)), ((2, -2), (1, 2))]


def reduced(axes) -> ArrayType:
    return f64[tuple(d for i, d in enumerate((2, 3, 4)) if i not in axes)]


@pytest.mark.parametrize("axis, axes", AXES, ids=str)
def test_sum_over_axes(axis, axes):
    f = traced(lambda x: x.sum(axis), f64[2, 3, 4], result=reduced(axes))
    assert summary(f) == [("reduce_sum", {"axes": axes}, str(reduced(axes)))]
    x = rng.normal(size=(2, 3, 4))
    np.testing.assert_allclose(run(f, x), x.sum(axis), rtol=1e-12)


@pytest.mark.parametrize("axis, axes", AXES, ids=str)
def test_mean_over_axes_divides_by_the_count(axis, axes):
    f = traced(lambda x: x.mean(axis), f64[2, 3, 4], result=reduced(axes))
    total, div = f.program.eqns
    assert (total.prim.name, total.params) == ("reduce_sum", {"axes": axes})
    assert div.prim.name == "div" and div.inputs[0] is total.outputs[0]
    count = np.prod([(2, 3, 4)[a] for a in axes])
    assert isinstance(div.inputs[1], Lit) and div.inputs[1].value == count
    x = rng.normal(size=(2, 3, 4))
    np.testing.assert_allclose(run(f, x), x.mean(axis), rtol=1e-12)


@pytest.mark.parametrize("ta, tb, out, expected", [
    (f64[3], f64[3], SCALAR, [("mul", {}), ("reduce_sum", {"axes": (0,)})]),
    (f64[2, 3], f64[3], f64[2], [("matvec", {"transpose_a": False})]),
    (f64[3], f64[3, 2], f64[2], [("matvec", {"transpose_a": True})]),
    (f64[2, 3], f64[3, 4], f64[2, 4], [("matmul", {"transpose_a": False,
                                                   "transpose_b": False})]),
    (f64[B, 3], f64[3, 4], f64[B, 4], [("matmul", {"transpose_a": False,
                                                       "transpose_b": False})]),
], ids=lambda v: str(v) if isinstance(v, ArrayType) else "eqns")
def test_matmul_by_rank(ta, tb, out, expected):
    f = traced(lambda a, b: a @ b, ta, tb, result=out)
    assert [(e.prim.name, e.params) for e in f.program.eqns] == expected
    assert f.program.eqns[-1].outputs[0].type == out
    a, b = sample(ta), sample(tb)
    np.testing.assert_allclose(run(f, a, b), a @ b, rtol=1e-12)


@pytest.mark.parametrize("exponent", [2, 3.0, 0.5, -1, np.float64(2.0)], ids=repr)
def test_power_by_a_constant(exponent):
    f = traced(lambda x: x ** exponent, f64[4], result=f64[4])
    assert summary(f) == [("pow", {"y": exponent}, "f64[4]")]
    x = rng.uniform(0.5, 2.0, size=4)
    np.testing.assert_allclose(run(f, x), x ** exponent, rtol=1e-12)


@pytest.mark.parametrize("base", [2, 0.5, np.e, np.float32(10.0)], ids=repr)
def test_power_of_a_constant_base(base):
    """base ** x is exp(x * log(base)): numpy's value, and the gradient log(base) * base ** x."""
    f = traced(lambda x: base ** x, f64[4], result=f64[4])
    assert [p for p, _, _ in summary(f)] == ["mul", "exp"]
    x = rng.uniform(-3.0, 3.0, size=4)
    np.testing.assert_allclose(run(f, x), float(base) ** x, rtol=1e-14)
    total = traced(lambda x: nn.sum(base ** x), f64[4], result=f64)
    np.testing.assert_allclose(diffc.grad(total)(x)[0], np.log(float(base)) * float(base) ** x,
                               rtol=1e-14)


@pytest.mark.parametrize("dt", [f32, f64], ids=str)
def test_power_of_a_constant_base_compiled_over_its_range(dt):
    """Compiled, c ** x stays within the numerics tolerances wherever it is finite (the error
    of exp(x * log c) grows with |x log c|), whole exponents included; 1 ** x is 1 for every
    x, nan and inf too, as numpy's."""
    f = traced(lambda x: 10.0 ** x + 1 ** x, dt[500], result=dt[500])
    top = 37.0 if dt == f32 else 300.0
    x = np.concatenate([np.arange(-5.0, 6.0), rng.uniform(-top, top, 489)]).astype(dt.np_dtype)
    want = 10.0 ** x.astype(np.float64) + 1.0
    np.testing.assert_allclose(f(x), want.astype(dt.np_dtype), rtol=1e-5 if dt == f32 else 1e-12)
    ones = traced(lambda x: 1 ** x, dt[3], result=dt[3])
    np.testing.assert_array_equal(ones(np.array([np.nan, np.inf, -np.inf], dt.np_dtype)), 1.0)


def test_numpy_dot_and_power():
    """np.dot is '@' (ranks 1 and 2, where they agree); np.power is '**' either way round."""
    f = traced(lambda a, b, v: np.sum(np.dot(a, b)) + np.dot(v, v) + np.sum(np.dot(a, v)) +
               np.sum(np.power(v, 3) + np.power(2.0, v)), f64[3, 4], f64[4, 2], f64[4],
               result=f64)
    a, b, v = sample(f64[3, 4]), sample(f64[4, 2]), sample(f64[4])
    np.testing.assert_allclose(run(f, a, b, v), np.sum(a @ b) + v @ v + np.sum(a @ v) +
                               np.sum(v ** 3 + 2.0 ** v), rtol=1e-12)


def test_unary_minus_and_plus():
    f = traced(lambda x: -(+x), f64[2], result=f64[2])
    assert summary(f) == [("neg", {}, "f64[2]")]
    x = rng.normal(size=2)
    np.testing.assert_array_equal(run(f, x), -x)


def test_shape_and_dtype_are_known_while_tracing():
    seen = []

    @diffc.function
    def f(x: f32[B, 3], w: f32[3], c: f32) -> f32[B]:
        seen.append((x.shape, x.dtype, w.shape, c.shape, c.dtype))
        return x @ w

    assert seen == [((B, 3), f32, (3,), (), f32)]


@pytest.mark.parametrize("np_fn, prim", [(np.exp, "exp"), (np.log, "log"), (np.tanh, "tanh"),
                                         (np.negative, "neg")], ids=lambda v: str(v))
def test_numpy_ufuncs_apply_to_tracers(np_fn, prim):
    f = traced(lambda x: np_fn(x), f64[3], result=f64[3])
    assert summary(f) == [(prim, {}, "f64[3]")]
    x = rng.uniform(0.5, 2.0, size=3)
    np.testing.assert_allclose(run(f, x), np_fn(x), rtol=1e-12)


def test_numpy_binary_ufunc_with_a_number():
    f = traced(lambda x: np.multiply(3.0, np.exp(x)), f64[3], result=f64[3])
    assert [e.prim.name for e in f.program.eqns] == ["exp", "mul"]
    x = rng.normal(size=3)
    np.testing.assert_allclose(run(f, x), 3.0 * np.exp(x), rtol=1e-12)


# ----------------------------------------------------------------------------- inlining

@diffc.function
def affine(W: f64[N, M], x: f64[M], b: f64[N]) -> f64[N]:
    return W @ x + b  # trace:affine


@diffc.function
def scale(v: f64[N], c: f64) -> f64[N]:
    return v * c  # trace:scale


def test_called_function_is_inlined():
    @diffc.function
    def f(W: f64[3, 4], x: f64[4], b: f64[3]) -> f64:
        return nn.sum(nn.tanh(affine(W, b=b, x=x)))  # trace:outer

    assert summary(f) == [("matvec", {"transpose_a": False}, "f64[3]"), ("add", {}, "f64[3]"),
                          ("tanh", {}, "f64[3]"), ("reduce_sum", {"axes": (0,)}, "f64")]
    inner, outer = line_of("trace:affine"), line_of("trace:outer")
    assert [e.source for e in f.program.eqns] == [f"{HERE}:{n}" for n in
                                                  (inner, inner, outer, outer)]
    W, x, b = rng.normal(size=(3, 4)), rng.normal(size=4), rng.normal(size=3)
    np.testing.assert_allclose(run(f, W, x, b), np.tanh(W @ x + b).sum(), rtol=1e-12)


def test_inlined_symbolic_result_takes_the_callers_dims():
    @diffc.function
    def f(X: f64[B, 4], w: f64[4], c: f64) -> f64[B]:
        return scale(X @ w, c)

    assert summary(f) == [("matvec", {"transpose_a": False}, "f64[B]"), ("mul", {}, "f64[B]")]
    X, w = rng.normal(size=(6, 4)), rng.normal(size=4)
    np.testing.assert_allclose(run(f, X, w, 0.5), (X @ w) * 0.5, rtol=1e-12)


def test_inlined_call_takes_a_python_number_for_a_scalar_parameter():
    @diffc.function
    def f(v: f64[3]) -> f64[3]:
        return scale(v, 2.0)

    (e,) = f.program.eqns
    assert e.prim.name == "mul" and isinstance(e.inputs[1], Lit) and e.inputs[1].value == 2.0


@pytest.mark.parametrize("types, error, param", [
    ((f32[3, 4], f32[4], f32[3]), DTypeError, "W"),
    ((f64[3, 4], f64[4], f32[3]), DTypeError, "b"),
    ((f64[3, 4], f64[5], f64[3]), ShapeError, "x"),
    ((f64[3, 4], f64[4], f64[2]), ShapeError, "b"),
    ((f64[3, 4], f64[4, 1], f64[3]), ShapeError, "x"),
], ids=lambda v: v.__name__ if isinstance(v, type) else str(v))
def test_inlined_call_checks_argument_types(types, error, param):
    def body(W, x, b):
        return affine(W, x, b)  # trace:bad-call

    with pytest.raises(error) as info:
        traced(body, *types, result=f64[3])
    message = str(info.value)
    assert f"{HERE}:{line_of('trace:bad-call')}" in message
    given = types[("W", "x", "b").index(param)]
    assert repr(param) in message and str(given) in message
    assert str(affine.signature.param(param).type) in message


# ----------------------------------------------------------------------------- eager nn

W, b = rng.normal(size=(3, 4)), rng.normal(size=3)
x1, xb = rng.normal(size=4), rng.normal(size=(5, 4))
Z, Z2, X3 = rng.normal(size=(5, 3)), rng.normal(size=(5, 3)), rng.normal(size=(2, 3, 4))
P = np.exp(Z) / np.exp(Z).sum(axis=1, keepdims=True)  # probabilities: rows sum to 1
T = rng.dirichlet(np.ones(3), size=5)  # probability targets
labels = rng.integers(0, 3, size=5).astype(np.int32)

EAGER = {
    "dense-1d": (lambda: nn.dense(W, x1, b), lambda: W @ x1 + b),
    "dense-1d-no-bias": (lambda: nn.dense(W, x1), lambda: W @ x1),
    "dense-batch": (lambda: nn.dense(W, xb, b), lambda: xb @ W.T + b),
    "dense-batch-no-bias": (lambda: nn.dense(W, xb), lambda: np.einsum("oi,bi->bo", W, xb)),
    "relu": (lambda: nn.relu(Z), lambda: np.where(Z > 0, Z, 0.0)),
    "sigmoid": (lambda: nn.sigmoid(Z), lambda: np.exp(Z) / (1 + np.exp(Z))),
    "tanh": (lambda: nn.tanh(Z), lambda: (np.exp(2 * Z) - 1) / (np.exp(2 * Z) + 1)),
    "exp": (lambda: nn.exp(Z), lambda: np.e ** Z),
    "log": (lambda: nn.log(P), lambda: np.log(P)),
    "softmax": (lambda: nn.softmax(Z), lambda: P),
    "softmax-1d": (lambda: nn.softmax(Z[2]), lambda: P[2]),
    "softmax-shifted": (lambda: nn.softmax(Z + 1000.0), lambda: P),
    "log_softmax": (lambda: nn.log_softmax(Z), lambda: np.log(P)),
    "log_softmax-1d": (lambda: nn.log_softmax(Z[1]),
                       lambda: Z[1] - np.log(np.sum(np.exp(Z[1])))),
    "cross_entropy-targets": (lambda: nn.cross_entropy(P, T),
                              lambda: np.mean(-np.sum(T * np.log(P), axis=1))),
    "cross_entropy-target": (lambda: nn.cross_entropy(P[0], T[0]),
                             lambda: -np.sum(T[0] * np.log(P[0]))),
    "cross_entropy-label": (lambda: nn.cross_entropy(P[1], 2), lambda: -np.log(P[1, 2])),
    "cross_entropy-label-0d": (lambda: nn.cross_entropy(P[3], np.array(1, np.int32)),
                               lambda: -np.log(P[3, 1])),
    "cross_entropy-labels": (lambda: nn.cross_entropy(P, labels),
                             lambda: np.mean([-np.log(P[i, k]) for i, k in enumerate(labels)])),
    "softmax_cross_entropy-targets": (lambda: nn.softmax_cross_entropy(Z, T),
                                      lambda: np.mean(-np.sum(T * np.log(P), axis=1))),
    "softmax_cross_entropy-labels": (
        lambda: nn.softmax_cross_entropy(Z, labels),
        lambda: np.mean([-np.log(P[i, k]) for i, k in enumerate(labels)])),
    "softmax_cross_entropy-label": (lambda: nn.softmax_cross_entropy(Z[4], 0),
                                    lambda: -np.log(P[4, 0])),
    "mse": (lambda: nn.mse(Z, Z2), lambda: np.sum((Z - Z2) ** 2) / Z.size),
    "mse-vector": (lambda: nn.mse(x1, W[0]), lambda: np.sum((x1 - W[0]) ** 2) / 4),
    "sum": (lambda: nn.sum(X3), lambda: np.einsum("ijk->", X3)),
    "sum-axis": (lambda: nn.sum(X3, 1), lambda: np.einsum("ijk->ik", X3)),
    "sum-negative-axis": (lambda: nn.sum(X3, -1), lambda: np.einsum("ijk->ij", X3)),
    "sum-axes": (lambda: nn.sum(X3, (0, -1)), lambda: np.einsum("ijk->j", X3)),
    "mean": (lambda: nn.mean(X3), lambda: np.einsum("ijk->", X3) / 24),
    "mean-axis": (lambda: nn.mean(X3, 0), lambda: np.einsum("ijk->jk", X3) / 2),
    "mean-axes": (lambda: nn.mean(X3, (-1, 1)), lambda: np.einsum("ijk->i", X3) / 12),
}


@pytest.mark.parametrize("name", EAGER)
def test_nn_runs_eagerly_on_numpy(name):
    got, want = (fn() for fn in EAGER[name])
    assert np.shape(got) == np.shape(want)
    np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("fn, args", [
    (nn.dense, (W, xb, b)), (nn.sigmoid, (Z,)), (nn.softmax, (Z,)), (nn.log_softmax, (Z,)),
    (nn.cross_entropy, (P, labels)), (nn.softmax_cross_entropy, (Z, T)), (nn.mse, (Z, Z2)),
    (nn.mean, (X3, 1)),
], ids=lambda v: v.__name__ if callable(v) else "args")
def test_nn_eagerly_keeps_float32(fn, args):
    args32 = [a.astype(np.float32) if isinstance(a, np.ndarray) and a.dtype == np.float64
              else a for a in args]
    got = fn(*args32)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, fn(*args), rtol=1e-5)
