"""Numerical stability: stable forms, and an overflow/underflow sweep of every op.

Stable forms (`diffc/passes/stable.py`): `cross_entropy(softmax(z), y)` has the loss and the
gradient of `softmax_cross_entropy(z, y)` where a probability underflows (z = [0, 800, -800]),
however the function is compiled. The sweep: every arithmetic primitive and nn function,
compiled once per dtype and run on large, tiny (subnormal), zero, infinite and nan inputs,
against numpy code written here: close where the result is finite, nan where numpy has nan,
infinities of numpy's sign. Where numpy's plain formula overflows or underflows early (sigmoid,
cross-entropy of a softmax) the reference is the stable formula, as said where it is used.
Primitives run inside the nn functions that use them (transpose, reshape, broadcast_in_dim,
pick, unpick, dim_size, fused), the SGD kernels of a train step (sgd_outer, update_matvec) as
one-equation programs; fill reads no values. The language's ops (abs ... where, comparisons,
max, min, logsumexp, argmax) are swept at the end.
"""
import math

import numpy as np
import pytest
from models import compile_program

import diffc
from diffc import f32, f64, i32, i64, nn
from diffc.core.ir import Eqn, Program, Var
from diffc.core.primitive import PRIMITIVES
from diffc.core.types import ArrayType, Param, Signature

FLOATS = [f32, f64]
RTOL = {f32: 1e-5, f64: 1e-12}
rng = np.random.default_rng(0)


def compiled(body, *types, result, wrt=None):
    """A lambda traced with the given parameter and result types (its gradient with wrt)."""
    names = body.__code__.co_varnames[:body.__code__.co_argcount]
    body.__annotations__ = dict(zip(names, types, strict=True), **{"return": result})
    f = diffc.function(body)
    return f if wrt is None else diffc.grad(f, wrt)


def assert_same(got, want, dt, zero_signs=False):
    """Close to rtol (or one subnormal step), nan where want is nan, infinities of want's sign
    and, with zero_signs, zeros of want's sign."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape
    tiny = float(np.finfo(dt.np_dtype).smallest_subnormal)
    np.testing.assert_allclose(got, want, rtol=RTOL[dt], atol=tiny, equal_nan=True)
    if zero_signs:
        zeros = want == 0
        np.testing.assert_array_equal(np.signbit(got[zeros]), np.signbit(want[zeros]))


# ----------------------------------------------------------------------------- stable forms

Z = np.array([0.0, 800.0, -800.0])  # softmax(Z) = [0, 1, 0], its first and last underflowed
Z_ROWS = np.array([[0.0, 800.0, -800.0], [800.0, -800.0, 0.0]])
LABELS = np.array([0, 1])  # losses 800 and 1600: -log of an underflowed probability


def _np_log_softmax(z):
    m = z.max(-1, keepdims=True)
    return (z - m) - np.log(np.exp(z - m).sum(-1, keepdims=True))


def _np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


def _cross_entropy(batched, labels, dt):
    """nn.cross_entropy(nn.softmax(z), y) with one-hot or integer labels, one row or a batch."""
    z_type = dt[2, 3] if batched else dt[3]
    y_type = (i32[2] if batched else i32) if labels else z_type
    return compiled(lambda z, y: nn.cross_entropy(nn.softmax(z), y), z_type, y_type, result=dt)


@pytest.mark.parametrize("dt", FLOATS, ids=str)
@pytest.mark.parametrize("labels", [False, True], ids=["onehot", "labels"])
@pytest.mark.parametrize("batched", [False, True], ids=["sample", "batch"])
def test_cross_entropy_of_softmax_survives_underflow(batched, labels, dt):
    """Loss 800 (per row log-sum-exp minus the label's logit; the batch: the mean of 800 and
    1600) and gradient (softmax(z) - onehot) / rows, compiled and through grad, value_and_grad
    and train_step; the unstable form gives nan for both."""
    f = _cross_entropy(batched, labels, dt)
    z = (Z_ROWS if batched else Z).astype(dt.np_dtype)
    onehot = np.eye(3)[LABELS if batched else LABELS[0]]
    if labels:
        y = LABELS.astype(np.int32) if batched else 0
    else:
        y = onehot.astype(dt.np_dtype)
    want_loss = 1200.0 if batched else 800.0
    want_grad = (_np_softmax(z.astype(np.float64)) - onehot) / (2 if batched else 1)
    np.testing.assert_allclose(want_grad, [[-0.5, 0.5, 0], [0.5, -0.5, 0]] if batched else
                               [-1, 1, 0])

    assert [e.prim.name for e in f.program.eqns][0] == "softmax_cross_entropy"
    assert f(z, y) == pytest.approx(want_loss, rel=RTOL[dt])
    assert_same(diffc.grad(f, "z")(z, y), want_grad, dt)
    loss, grad = diffc.value_and_grad(f, "z")(z, y)
    assert loss == pytest.approx(want_loss, rel=RTOL[dt])
    assert_same(grad, want_grad, dt)
    step = diffc.train_step(f, ["z"], diffc.SGD(lr=0.5))
    params = z.copy()
    assert step(params, y) == pytest.approx(want_loss, rel=RTOL[dt])
    assert_same(params, z - 0.5 * want_grad, dt)


@pytest.mark.parametrize("dt", FLOATS, ids=str)
@pytest.mark.parametrize("labels", [False, True], ids=["onehot", "labels"])
def test_stable_cross_entropy_gradient_matches_finite_differences(labels, dt):
    f = _cross_entropy(True, labels, dt)
    y = LABELS.astype(np.int32) if labels else np.eye(3, dtype=dt.np_dtype)[LABELS]
    normal = np.random.default_rng(1).normal
    for z in (Z_ROWS, normal(0, 3, (2, 3)), normal(0, 30, (2, 3))):
        check = diffc.check_grad(f, z.astype(dt.np_dtype), y, wrt="z", eps=1e-4)
        assert check < (1e-3 if dt is f32 else 1e-7), str(check)


@diffc.function
def _probabilities(z: f64[3]) -> f64[3]:
    return nn.softmax(z)


@diffc.function
def _readme_loss(W: f64[3, 2], b: f64[3], x: f64[2], y: f64[3]) -> f64:
    return nn.cross_entropy(_probabilities(nn.dense(W, x, b)), y)


def test_stable_form_reaches_inlined_functions_and_dense():
    """The README's loss with its softmax in another @diffc.function: logits [0, 800, -800]."""
    assert [e.prim.name for e in _readme_loss.program.eqns][-1] == "softmax_cross_entropy"
    W, b, x = np.array([[0.0, 0.0], [8.0, 0.0], [-8.0, 0.0]]), np.zeros(3), np.array([100.0, 1])
    y = np.array([1.0, 0.0, 0.0])
    loss, (dW, db) = diffc.value_and_grad(_readme_loss, ["W", "b"])(W, b, x, y)
    assert loss == 800.0
    np.testing.assert_array_equal(db, [-1.0, 1.0, 0.0])
    np.testing.assert_array_equal(dW, np.outer(db, x))


def test_constant_label_compiles_stable():
    f = compiled(lambda z: nn.cross_entropy(nn.softmax(z), 2), f64[3], result=f64)
    loss, grad = diffc.value_and_grad(f, "z")(Z)
    assert loss == 1600.0
    np.testing.assert_array_equal(grad, [0.0, 1.0, -1.0])


# ----------------------------------------------------------------------------- the sweep

def _specials(dt) -> np.ndarray:
    """Large (past exp's overflow, the largest finite), tiny (subnormal), zero, infinite, nan
    and a few ordinary values, both signs."""
    fi = np.finfo(dt.np_dtype)
    large = [1e30, 700.0, -700.0, 710.0, -720.0, -750.0, 1e300] if dt is f64 else [
        1e30, 80.0, -80.0, 90.0, -95.0, -110.0, 1e38]  # exp(-720), exp(-95): subnormal
    tiny = [1e-300, -1e-300, 1e-310] if dt is f64 else [1e-38, -1e-38, 1e-40]
    values = large + tiny + [fi.max, -fi.max, fi.smallest_subnormal, -fi.smallest_subnormal,
                             0.0, -0.0, np.inf, -np.inf, np.nan, 1.0, -1.0, 0.5, -2.5]
    return np.array(values, dt.np_dtype)


SPECIALS = {dt: _specials(dt) for dt in FLOATS}


def _np_sigmoid(x):
    """Stable: 1 / (1 + exp(-x)) is 0 where sigmoid(x) = exp(x) is still a subnormal float."""
    with np.errstate(over="ignore", invalid="ignore"):
        return np.where(x < 0, np.exp(x) / (1 + np.exp(x)), 1 / (1 + np.exp(-x)))


UNARY = {  # name -> (traced body, numpy reference)
    "neg": (lambda x: -x, np.negative),
    "exp": (lambda x: nn.exp(x), np.exp),
    "log": (lambda x: nn.log(x), np.log),
    "tanh": (lambda x: nn.tanh(x), np.tanh),
    "sigmoid": (lambda x: nn.sigmoid(x), _np_sigmoid),
    "relu": (lambda x: nn.relu(x), lambda x: np.maximum(x, 0)),  # +0 for -0, nan for nan
}
BINARY = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide}
POWERS = [2, -1, 0.5, -1.5, 1 / 3]


@pytest.mark.parametrize("dt", FLOATS, ids=str)
def test_relu_derivative_sweep(dt):
    f = compiled(lambda x: nn.sum(nn.relu(x)), dt["N"], result=dt, wrt="x")
    x = SPECIALS[dt]
    assert_same(f(x), (x > 0).astype(dt.np_dtype), dt, zero_signs=True)


@pytest.mark.parametrize("dt", FLOATS, ids=str)
@pytest.mark.parametrize("name", list(BINARY))
def test_binary_sweep(name, dt):
    """Every pair of special values."""
    body = {"add": lambda a, b: a + b, "sub": lambda a, b: a - b, "mul": lambda a, b: a * b,
            "div": lambda a, b: a / b}[name]
    f = compiled(body, dt["N"], dt["N"], result=dt["N"])
    a, b = (v.ravel() for v in np.meshgrid(SPECIALS[dt], SPECIALS[dt], indexing="ij"))
    with np.errstate(all="ignore"):
        want = BINARY[name](a, b)
    assert_same(f(a, b), want, dt, zero_signs=True)


@pytest.mark.parametrize("dt", FLOATS, ids=str)
@pytest.mark.parametrize("y", POWERS, ids=str)
def test_pow_sweep(y, dt):
    f = compiled(lambda x: x ** y, dt["N"], result=dt["N"])
    x = SPECIALS[dt]
    with np.errstate(all="ignore"):
        want = np.power(x, dt.np_dtype.type(y))
    assert_same(f(x), want, dt, zero_signs=True)


def _reduction_rows(dt) -> np.ndarray:
    """[v, 1, -2, 0.5] and [v, v, 1, 1] per special v: sums that no summation order changes."""
    v = SPECIALS[dt][:, None]
    ones = np.ones_like(v)
    return np.concatenate([np.hstack([v, ones, -2 * ones, 0.5 * ones]),
                           np.hstack([v, v, ones, ones])])


@pytest.mark.parametrize("dt", FLOATS, ids=str)
def test_reduction_sweep(dt):
    """sum over the last axis; mean over a symbolic leading axis (reduce_sum, dim_size, div)."""
    rows = _reduction_rows(dt)
    total = compiled(lambda x: nn.sum(x, -1), dt["N", 4], result=dt["N"])
    mean = compiled(lambda x: nn.mean(x, 0), dt["K", "N"], result=dt["N"])
    with np.errstate(all="ignore"):
        assert_same(total(rows), rows.sum(-1), dt)
        assert_same(mean(np.ascontiguousarray(rows.T)), rows.mean(-1), dt)


@pytest.mark.parametrize("dt", FLOATS, ids=str)
def test_mse_sweep(dt):
    f = compiled(lambda a, b: nn.mse(a, b), dt["N"], dt["N"], result=dt)
    for v in SPECIALS[dt]:
        a, b = np.array([v, 1, 2, -3], dt.np_dtype), np.array([0, 1, v, 1], dt.np_dtype)
        with np.errstate(all="ignore"):
            assert_same(f(a, b), np.mean((a - b) ** 2), dt)


def _logit_rows(dt) -> np.ndarray:
    """[v, 0, 1], [v, v, 0], [v, -v, 2], [0, 1, v] per special v."""
    rows = [[v, 0, 1] for v in SPECIALS[dt]] + [[v, v, 0] for v in SPECIALS[dt]]
    rows += [[v, -v, 2] for v in SPECIALS[dt]] + [[0, 1, v] for v in SPECIALS[dt]]
    return np.array(rows, dt.np_dtype)


def _targets(z):
    """Integer labels 0, 1, 2, 0, ..., their one-hot rows and soft targets."""
    labels = np.arange(len(z)) % 3
    onehot = np.eye(3, dtype=z.dtype)[labels]
    soft = np.tile(np.array([0.2, 0.3, 0.5], z.dtype), (len(z), 1))
    return labels, onehot, soft


@pytest.mark.parametrize("dt", FLOATS, ids=str)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_sweep(name, dt):
    """With +inf in a row both give nan (inf - inf), as numpy, torch and jax."""
    body = {"softmax": lambda z: nn.softmax(z), "log_softmax": lambda z: nn.log_softmax(z)}[name]
    f = compiled(body, dt["N", 3], result=dt["N", 3])
    z = _logit_rows(dt)
    with np.errstate(all="ignore"):
        want = {"softmax": _np_softmax, "log_softmax": _np_log_softmax}[name](z)
    assert_same(f(z), want, dt)


@pytest.mark.parametrize("dt", FLOATS, ids=str)
def test_softmax_cross_entropy_sweep(dt):
    """Per row -sum(y * log_softmax(z)): where y is 0 and log_softmax(z) is -inf (z = -inf, or
    a gap past the largest float) that is 0 * inf = nan in both; labels have no such term."""
    z = _logit_rows(dt)
    labels, onehot, soft = _targets(z)
    targets = compiled(lambda z, y: nn.softmax_cross_entropy(z, y), dt[1, 3], dt[1, 3], result=dt)
    integers = compiled(lambda z, y: nn.softmax_cross_entropy(z, y), dt[1, 3], i32[1], result=dt)
    with np.errstate(all="ignore"):
        log_p = _np_log_softmax(z)
        for y in (onehot, soft):
            want = -(y * log_p).sum(-1)
            assert_same([targets(row[None], t[None]) for row, t in zip(z, y, strict=True)],
                        want, dt)
        want = -log_p[np.arange(len(z)), labels]
        assert_same([integers(row[None], np.array([k], np.int32))
                     for row, k in zip(z, labels, strict=True)], want, dt)


@pytest.mark.parametrize("dt", FLOATS, ids=str)
def test_softmax_cross_entropy_gradient_sweep(dt):
    """The fused reverse rule softmax(z) * sum(y) - y (divided by the batch: the mean)."""
    z = _logit_rows(dt)
    labels, onehot, soft = _targets(z)
    loss = lambda z, y: nn.softmax_cross_entropy(z, y)  # noqa: E731
    targets = compiled(loss, dt["N", 3], dt["N", 3], result=dt, wrt="z")
    integers = compiled(loss, dt["N", 3], i32["N"], result=dt, wrt="z")
    with np.errstate(all="ignore"):
        p = _np_softmax(z)
        for y in (onehot, soft):
            assert_same(targets(z, y), (p * y.sum(-1, keepdims=True) - y) / len(z), dt)
        assert_same(integers(z, labels.astype(np.int32)), (p - onehot) / len(z), dt)


@pytest.mark.parametrize("dt", FLOATS, ids=str)
def test_cross_entropy_of_softmax_sweep(dt):
    """Compiled as softmax_cross_entropy: the reference is the stable -sum(y * log_softmax(z)),
    not numpy's -sum(y * log(softmax(z))), which is nan or inf wherever a probability
    underflows (many of these rows)."""
    z = _logit_rows(dt)
    labels, onehot, _ = _targets(z)
    targets = compiled(lambda z, y: nn.cross_entropy(nn.softmax(z), y), dt[3], dt[3], result=dt)
    integers = compiled(lambda z, y: nn.cross_entropy(nn.softmax(z), y), dt[3], i32, result=dt)
    with np.errstate(all="ignore"):
        log_p = _np_log_softmax(z)
        want = -(onehot * log_p).sum(-1)
    assert_same([targets(row, t) for row, t in zip(z, onehot, strict=True)], want, dt)
    assert_same([integers(row, int(k)) for row, k in zip(z, labels, strict=True)],
                -log_p[np.arange(len(z)), labels], dt)


@pytest.mark.parametrize("dt", FLOATS, ids=str)
@pytest.mark.parametrize("labels", [False, True], ids=["targets", "labels"])
def test_cross_entropy_of_probabilities_sweep(labels, dt):
    """cross_entropy(p, y) of given probabilities (pick, log, neg; unpick in the gradient):
    the loss -log(p[label]) or -sum(y * log(p)), the gradient -y / p (-1 / p at the label)."""
    y_type = i32 if labels else dt[3]
    f = compiled(lambda p, y: nn.cross_entropy(p, y), dt[3], y_type, result=dt)
    value_and_grad = diffc.value_and_grad(f, "p")
    p = np.abs(_logit_rows(dt))
    row_labels, onehot, _ = _targets(p)
    for row, label, y in zip(p, row_labels, onehot, strict=True):
        with np.errstate(all="ignore"):
            want = -np.log(row[label]) if labels else -(y * np.log(row)).sum()
            want_grad = np.where(y == 1, -1 / row, 0) if labels else -y / row
        loss, grad = value_and_grad(row, int(label) if labels else y)
        assert_same(loss, want, dt)
        assert_same(grad, want_grad, dt)


@pytest.mark.parametrize("dt", FLOATS, ids=str)
def test_data_movement_sweep(dt):
    """x.T (transpose) and a size-1 axis stretched (reshape, broadcast_in_dim) move values as
    they are: nan, infinities, subnormals and zeros with their signs."""
    x = SPECIALS[dt][:, None]
    transposed = compiled(lambda x: x.T, dt["N", 2], result=dt[2, "N"])
    stretched = compiled(lambda x, y: x + y, dt["N", 1], dt["N", 3], result=dt["N", 3])
    columns = np.hstack([x, x[::-1]])
    assert_same(transposed(columns), columns.T, dt, zero_signs=True)
    zeros = np.full((len(x), 3), -0.0, dt.np_dtype)  # x + -0 is x, also for x = -0
    assert_same(stretched(x, zeros), np.broadcast_to(x, zeros.shape), dt, zero_signs=True)


def _with_diagonal(shape, v, dt):
    """Ordinary values in [0.5, 1.5) (no cancellation) with v at [i, i]: every dot product
    of a row or a column meets at most one special value, so no summation order (or FMA
    contraction) changes the result."""
    a = rng.uniform(0.5, 1.5, shape).astype(dt.np_dtype)
    for i in range(min(shape)):
        a[(i,) * len(shape)] = v
    return a


LINEAR = {  # name -> (traced body, parameter shapes, result shape, numpy reference)
    "matmul": (lambda a, b: a @ b, [(6, 37), (37, 19)], (6, 19), lambda a, b: a @ b),
    "matmul_transpose_a": (lambda a, b: a.T @ b, [(37, 6), (37, 19)], (6, 19),
                           lambda a, b: a.T @ b),
    "dense_batch": (lambda W, x, b: nn.dense(W, x, b), [(19, 37), (6, 37), (19,)], (6, 19),
                    lambda W, x, b: x @ W.T + b),
    "dense_sample": (lambda W, x, b: nn.dense(W, x, b), [(19, 37), (37,), (19,)], (19,),
                     lambda W, x, b: W @ x + b),
    "vector_matrix": (lambda x, W: x @ W, [(37,), (37, 19)], (19,), lambda x, W: x @ W),
}


@pytest.mark.parametrize("dt", FLOATS, ids=str)
@pytest.mark.parametrize("name", list(LINEAR))
def test_linear_algebra_sweep(name, dt):
    """Each special value in one operand at a time (on its diagonal), the others ordinary."""
    body, shapes, result, ref = LINEAR[name]
    f = compiled(body, *[dt[s] for s in shapes], result=dt[result])
    for v in SPECIALS[dt]:
        for k in range(len(shapes)):
            args = [_with_diagonal(s, v if j == k else 1.0, dt) for j, s in enumerate(shapes)]
            with np.errstate(all="ignore"):
                assert_same(f(*args), ref(*args), dt)


@pytest.mark.parametrize("dt", FLOATS, ids=str)
def test_outer_sweep(dt):
    """outer(g, x), the gradient of sum((W @ x) * g) wrt W, for every pair of special values."""
    n = len(SPECIALS[dt])
    f = compiled(lambda g, x, W: nn.sum((W @ x) * g), dt[n], dt[n], dt[n, n], result=dt,
                 wrt="W")
    g = x = SPECIALS[dt]
    with np.errstate(all="ignore"):
        assert_same(f(g, x, np.ones((n, n), dt.np_dtype)), np.outer(g, x), dt, zero_signs=True)


def _one_equation(name, *types):
    """The primitive `name` applied to inputs of the given types, compiled (all outputs)."""
    inputs = tuple(Var(t) for t in types)
    out = PRIMITIVES[name].shape_rule(*types)
    outputs = tuple(Var(t) for t in (out if isinstance(out, tuple) else (out,)))
    program = Program(inputs, [Eqn(PRIMITIVES[name], inputs, {}, outputs)], outputs)
    params = tuple(Param(f"x{i}", v.type) for i, v in enumerate(inputs))
    return compile_program(program, Signature(params, outputs[0].type), name)


@pytest.mark.parametrize("dt", FLOATS, ids=str)
@pytest.mark.parametrize("name", ["sgd_outer", "update_matvec"])
def test_sgd_update_sweep(name, dt):
    """W - lr * outer(a, x) (and W_new @ x_next), the kernels of a train step's plain SGD
    update: rows with a[i] == 0 are skipped only where that leaves what numpy computes, so with
    inf or nan in x or lr they become nan (0 * inf) as in numpy. Special values in x, then in
    a, then in lr; the ordinary values keep every row of W_new of one sign."""
    n = len(SPECIALS[dt])
    scalar = ArrayType(dt, ())
    types = [dt[4, n], dt[4], dt[n], scalar] + ([dt[n]] if name == "update_matvec" else [])
    f = _one_equation(name, *types)
    w = rng.uniform(0.5, 1.5, (4, n)).astype(dt.np_dtype)
    ordinary = rng.uniform(0.5, 1.5, n).astype(dt.np_dtype)
    a = np.array([0.0, 100.0, 0.0, -100.0], dt.np_dtype)
    cases = [(a, SPECIALS[dt], 0.1, np.zeros(n, dt.np_dtype))]  # x_next = 0: no summation order
    cases += [(np.take(SPECIALS[dt], range(i, i + 4), mode="wrap"), ordinary, 0.1, ordinary)
              for i in range(0, n, 4)]
    cases += [(a, ordinary, lr, ordinary) for lr in SPECIALS[dt]]
    for a, x, lr, x_next in cases:
        with np.errstate(all="ignore"):
            w_new = w - dt.np_dtype.type(lr) * np.outer(a, x)
            want = [w_new, w_new @ x_next]
        got = f(w, a, x, float(lr), *([x_next] if name == "update_matvec" else []))
        for g, r in zip(got, want[:len(got)], strict=True):
            assert_same(g, r, dt)


# ----------------------------------------------------------------------------- the language

TRIG_LIMIT = 2.0 ** 50  # sin and cos give nan from here on (diffc/compiler/mathlib.py)


def _np_trig(f):
    return lambda x: np.where(np.abs(x) < TRIG_LIMIT, f(x), np.nan)


def _np_gelu(x):
    erfc = np.vectorize(math.erfc, otypes=[np.float64])
    return 0.5 * x * erfc(-x / math.sqrt(2))


def _np_gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


LANGUAGE_UNARY = {  # name -> (traced body, numpy reference; stable formulas where numpy has one)
    "abs": (lambda x: abs(x), np.abs),
    "sqrt": (lambda x: nn.sqrt(x), np.sqrt),
    "square": (lambda x: nn.square(x), np.square),
    "log1p": (lambda x: nn.log1p(x), np.log1p),
    "expm1": (lambda x: nn.expm1(x), np.expm1),
    "sin": (lambda x: nn.sin(x), _np_trig(np.sin)),
    "cos": (lambda x: nn.cos(x), _np_trig(np.cos)),
    "softplus": (lambda x: nn.softplus(x), lambda x: np.logaddexp(x, 0)),
    "gelu": (lambda x: nn.gelu(x), _np_gelu),
    "gelu_tanh": (lambda x: nn.gelu(x, approximate="tanh"), _np_gelu_tanh),
    "leaky_relu": (lambda x: nn.leaky_relu(x), lambda x: np.where(x >= 0, x, 0.01 * x)),
    "clip": (lambda x: nn.clip(x, -1.0, 2.0), lambda x: np.clip(x, -1.0, 2.0)),
    "where": (lambda x: nn.where(x > 0.5, x, -x), lambda x: np.where(x > 0.5, x, -x)),
}


@pytest.mark.parametrize("dt", FLOATS, ids=str)
@pytest.mark.parametrize("name", list(UNARY | LANGUAGE_UNARY))
def test_unary_sweep(name, dt):
    """gelu(-inf) is nan (-inf * 0) in numpy's formula, as in torch and jax."""
    body, reference = (UNARY | LANGUAGE_UNARY)[name]
    x = SPECIALS[dt]
    with np.errstate(all="ignore"):
        want = reference(x)
    assert_same(compiled(body, dt["N"], result=dt["N"])(x), want, dt, zero_signs=True)


def _comparison(ufunc):
    """The comparison as a float mask, traced (numpy's ufunc on traced values) or in numpy."""
    return lambda a, b: ufunc(a, b).astype(a.dtype)


LANGUAGE_BINARY = {  # name -> (traced body, numpy reference)
    "maximum": (lambda a, b: nn.maximum(a, b), np.maximum),
    "minimum": (lambda a, b: np.minimum(a, b), np.minimum),
    "where": (lambda a, b: nn.where(a != a, b, a), lambda a, b: np.where(a != a, b, a)),
    **{f.__name__: (_comparison(f), _comparison(f)) for f in (
        np.less, np.less_equal, np.greater, np.greater_equal, np.equal, np.not_equal)},
}


@pytest.mark.parametrize("dt", FLOATS, ids=str)
@pytest.mark.parametrize("name", list(LANGUAGE_BINARY))
def test_language_binary_sweep(name, dt):
    """Every pair of special values: maximum / minimum propagate nan and, between equal
    operands (-0 and +0), give the second as numpy; comparisons are false with a nan (!= is
    true)."""
    f = compiled(LANGUAGE_BINARY[name][0], dt["N"], dt["N"], result=dt["N"])
    a, b = (v.ravel() for v in np.meshgrid(SPECIALS[dt], SPECIALS[dt], indexing="ij"))
    with np.errstate(all="ignore"):
        want = LANGUAGE_BINARY[name][1](a, b)
    assert_same(f(a, b), want, dt, zero_signs=True)


def _np_logsumexp(x):
    """Shifted by the max where it is finite (so rows of -inf give -inf, with inf inf)."""
    m = x.max(-1, keepdims=True)
    m = np.where(np.isfinite(m), m, 0)
    return (m + np.log(np.exp(x - m).sum(-1, keepdims=True)))[..., 0]


@pytest.mark.parametrize("dt", FLOATS, ids=str)
def test_language_reduction_sweep(dt):
    """max, min, logsumexp and argmax over rows holding special values: nan wins max and min
    (argmax: the first nan), logsumexp neither overflows (the largest float twice) nor is nan
    where a row is -inf."""
    rows = _reduction_rows(dt)
    rows = np.concatenate([rows, np.full((1, 4), -np.inf, dt.np_dtype)])
    largest = compiled(lambda x: x.max(-1), dt["N", 4], result=dt["N"])
    smallest = compiled(lambda x: nn.min(x, axis=1), dt["N", 4], result=dt["N"])
    lse = compiled(lambda x: nn.logsumexp(x, -1), dt["N", 4], result=dt["N"])
    where = compiled(lambda x: x.argmax(-1), dt["N", 4], result=i64["N"])
    with np.errstate(all="ignore"):
        assert_same(largest(rows), rows.max(-1), dt, zero_signs=True)
        assert_same(smallest(rows), rows.min(-1), dt, zero_signs=True)
        assert_same(lse(rows), _np_logsumexp(rows.astype(np.float64)), dt)
    np.testing.assert_array_equal(where(rows), rows.argmax(-1))
