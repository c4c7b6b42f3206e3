"""The language (diffc.nn, array methods, operators and numpy functions on traced values): every
op compiled and eager against numpy, its gradient against jax.grad (f64 to 1e-12, f32 to 1e-5,
static and symbolic shapes), gradients at ties as JAX's, argmax / argmin, comparisons.

jax is optional (the test extra does not install it): without it the gradients are checked
against central differences of the numpy reference instead (to FD_RTOL), and only the tie tests,
which are about JAX's conventions, skip.
"""
import functools
import math
import os

import numpy as np
import pytest

import diffc
from diffc import f32, f64, i64, nn

RTOL = {f32: 1e-5, f64: 1e-12}
FD_RTOL = 1e-7  # central differences in float64 with step FD_STEP: truncation + rounding
FD_STEP = 1e-5
SIZES = (5, 2)  # the sizes the symbolic rows R take
rng = np.random.default_rng(0)


@functools.cache
def jax_modules(required=True):
    """(jax, jax.numpy, jax.scipy.special) in float64 on the CPU; without jax, skip the test
    (or give None when not required)."""
    os.environ.setdefault("JAX_PLATFORMS", "cpu")
    try:
        import jax
    except ImportError:
        if required:
            pytest.skip("could not import 'jax'")
        return None
    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import jax.scipy.special as jsp
    return jax, jnp, jsp


def _erfc(x):
    return np.vectorize(math.erfc, otypes=[float])(x)


def _np_gelu_tanh(x):
    return 0.5 * x * (1 + np.tanh(math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))


def _logsumexp(x, axis=None, keepdims=False):
    m = np.max(x, axis=axis, keepdims=True)
    out = m + np.log(np.sum(np.exp(x - m), axis=axis, keepdims=True))
    return out if keepdims else np.squeeze(out, axis=axis)


def _elementwise(body, ref, jax_fn, kind="x"):
    return body, ref, jax_fn, kind, lambda rows: (rows, 3)


def _reduced(body, ref, jax_fn, out, kind="x"):
    return body, ref, jax_fn, kind, out


# name -> (diffc body of x (rows x 3), numpy reference, jax body (jnp, jsp) -> fn, input kind,
# output shape of the rows): each nn function, method, operator and numpy function
OPS = {
    "abs": _elementwise(nn.abs, np.abs, lambda jnp, jsp: jnp.abs, "away"),
    "abs()": _elementwise(lambda x: abs(x), np.abs, lambda jnp, jsp: jnp.abs, "away"),
    "np.abs": _elementwise(np.abs, np.abs, lambda jnp, jsp: jnp.abs, "away"),
    "sqrt": _elementwise(nn.sqrt, np.sqrt, lambda jnp, jsp: jnp.sqrt, "pos"),
    "np.sqrt": _elementwise(np.sqrt, np.sqrt, lambda jnp, jsp: jnp.sqrt, "pos"),
    "square": _elementwise(nn.square, np.square, lambda jnp, jsp: jnp.square),
    "log1p": _elementwise(nn.log1p, np.log1p, lambda jnp, jsp: jnp.log1p, "above-1"),
    "expm1": _elementwise(nn.expm1, np.expm1, lambda jnp, jsp: jnp.expm1),
    "sin": _elementwise(nn.sin, np.sin, lambda jnp, jsp: jnp.sin),
    "cos": _elementwise(nn.cos, np.cos, lambda jnp, jsp: jnp.cos),
    "leaky_relu": _elementwise(nn.leaky_relu, lambda x: np.where(x >= 0, x, 0.01 * x),
                               lambda jnp, jsp: lambda x: jnp.where(x >= 0, x, 0.01 * x), "away"),
    "leaky_relu(0.2)": _elementwise(lambda x: nn.leaky_relu(x, negative_slope=0.2),
                                    lambda x: np.where(x >= 0, x, 0.2 * x),
                                    lambda jnp, jsp: lambda x: jnp.where(x >= 0, x, 0.2 * x),
                                    "away"),
    "softplus": _elementwise(nn.softplus, lambda x: np.logaddexp(0, x),
                             lambda jnp, jsp: lambda x: jnp.logaddexp(x, 0.0)),
    "gelu": _elementwise(nn.gelu, lambda x: 0.5 * x * _erfc(-x / math.sqrt(2)),
                         lambda jnp, jsp: lambda x: 0.5 * x * jsp.erfc(-x / math.sqrt(2))),
    "gelu(tanh)": _elementwise(lambda x: nn.gelu(x, approximate="tanh"), _np_gelu_tanh,
                               lambda jnp, jsp: lambda x: 0.5 * x * (1 + jnp.tanh(
                                   math.sqrt(2 / math.pi) * (x + 0.044715 * x ** 3)))),
    "maximum": _elementwise(lambda x: nn.maximum(x, 0.3 - x),
                            lambda x: np.maximum(x, 0.3 - x),
                            lambda jnp, jsp: lambda x: jnp.maximum(x, 0.3 - x), "away"),
    "np.minimum": _elementwise(lambda x: np.minimum(x * 2, 0.5), lambda x: np.minimum(2 * x, 0.5),
                               lambda jnp, jsp: lambda x: jnp.minimum(2 * x, 0.5), "away"),
    "clip": _elementwise(lambda x: nn.clip(x, -0.5, 0.8), lambda x: np.clip(x, -0.5, 0.8),
                         lambda jnp, jsp: lambda x: jnp.clip(x, -0.5, 0.8), "away"),
    "x.clip": _elementwise(lambda x: x.clip(-1.0, None), lambda x: np.maximum(x, -1.0),
                           lambda jnp, jsp: lambda x: jnp.clip(x, -1.0, None), "away"),
    "np.clip": _elementwise(lambda x: np.clip(x, None, 0.5), lambda x: np.minimum(x, 0.5),
                            lambda jnp, jsp: lambda x: jnp.clip(x, None, 0.5), "away"),
    "where": _elementwise(lambda x: nn.where(x > 0, x * x, 0.1 * x),
                          lambda x: np.where(x > 0, x * x, 0.1 * x),
                          lambda jnp, jsp: lambda x: jnp.where(x > 0, x * x, 0.1 * x), "away"),
    "np.where": _elementwise(lambda x: np.where(0.2 <= x, np.exp(x), -x),
                             lambda x: np.where(0.2 <= x, np.exp(x), -x),
                             lambda jnp, jsp: lambda x: jnp.where(0.2 <= x, jnp.exp(x), -x),
                             "away"),
    "astype": _elementwise(lambda x: (x > 0.1).astype(x.dtype) * x + nn.astype(x < 0, x.dtype),
                           lambda x: (x > 0.1) * x + (x < 0),
                           lambda jnp, jsp: lambda x: (x > 0.1) * x + (x < 0), "away"),
    "max": _reduced(lambda x: nn.max(x, axis=1), lambda x: np.max(x, 1),
                    lambda jnp, jsp: lambda x: jnp.max(x, 1), lambda rows: (rows,)),
    "x.max(keepdims)": _reduced(lambda x: x.max(-1, keepdims=True), lambda x: x.max(-1)[:, None],
                                lambda jnp, jsp: lambda x: jnp.max(x, -1, keepdims=True),
                                lambda rows: (rows, 1)),
    "np.min": _reduced(lambda x: np.min(x, axis=0), lambda x: np.min(x, 0),
                       lambda jnp, jsp: lambda x: jnp.min(x, 0), lambda rows: (3,)),
    "x.min()": _reduced(lambda x: x.min(), np.min, lambda jnp, jsp: jnp.min, lambda rows: ()),
    "logsumexp": _reduced(lambda x: nn.logsumexp(x, axis=-1), lambda x: _logsumexp(x, -1),
                          lambda jnp, jsp: lambda x: jsp.logsumexp(x, -1), lambda rows: (rows,)),
    "logsumexp(keepdims)": _reduced(lambda x: nn.logsumexp(10 * x, (0, 1), keepdims=True),
                                    lambda x: _logsumexp(10 * x, keepdims=True),
                                    lambda jnp, jsp: lambda x: jsp.logsumexp(10 * x,
                                                                             keepdims=True),
                                    lambda rows: (1, 1)),
    "sum(keepdims)": _reduced(lambda x: nn.sum(x, 0, keepdims=True), lambda x: x.sum(0)[None],
                              lambda jnp, jsp: lambda x: jnp.sum(x, 0, keepdims=True),
                              lambda rows: (1, 3)),
    "x.mean(keepdims)": _reduced(lambda x: x.mean(axis=(1,), keepdims=True),
                                 lambda x: x.mean(1)[:, None],
                                 lambda jnp, jsp: lambda x: jnp.mean(x, 1, keepdims=True),
                                 lambda rows: (rows, 1)),
    "np.mean": _reduced(lambda x: np.mean(x, axis=0), lambda x: x.mean(0),
                        lambda jnp, jsp: lambda x: jnp.mean(x, 0), lambda rows: (3,)),
}


STATIC = 5  # the static rows; the symbolic rows take the sizes SIZES


def _inputs(kind, rows):
    """Inputs of (rows, 3) for an op, exactly representable in float32 (so both dtypes see the
    same values and share jax's gradient)."""
    r = np.random.default_rng(rows)
    x = {"x": lambda: r.standard_normal((rows, 3)),
         "away": lambda: r.choice([-1, 1], (rows, 3)) * r.uniform(0.15, 2.0, (rows, 3)),
         "pos": lambda: r.uniform(0.3, 3.0, (rows, 3)),
         "above-1": lambda: r.uniform(-0.9, 3.0, (rows, 3))}[kind]()
    return x.astype(np.float32).astype(np.float64)


def _central_differences(f, x):
    """The gradient of the scalar f at x by central differences (float64)."""
    grad = np.empty_like(x)
    for i in np.ndindex(x.shape):
        h = FD_STEP * max(1.0, abs(x[i]))
        up, down = x.copy(), x.copy()
        up[i] += h
        down[i] -= h
        grad[i] = (f(up) - f(down)) / (up[i] - down[i])
    return grad


@functools.cache
def _expected(name, rows):
    """x, w, sum(w * op(x)) with numpy (and its scale), the gradient with jax (or by central
    differences of the numpy reference without jax) and its tolerance: float64."""
    _, ref, jax_body, kind, out = OPS[name]
    x = _inputs(kind, rows)
    w = np.random.default_rng(rows + 100).uniform(0.5, 1.5, out(rows))
    w = w.astype(np.float32).astype(np.float64)
    terms = w * ref(x)
    modules = jax_modules(required=False)
    if modules is None:
        grad, rtol = _central_differences(lambda v: float(np.sum(w * ref(v))), x), FD_RTOL
    else:
        jax, jnp, jsp = modules
        grad, rtol = jax.jit(jax.grad(lambda v: jnp.sum(w * jax_body(jnp, jsp)(v))))(x), 0.0
    return x, w, float(np.sum(terms)), float(np.sum(np.abs(terms))), np.asarray(grad), rtol


@functools.cache
def _loss(name, dt):
    """sum(w * op(x)) + sum(v * op(s)) over x: dt[R, 3] (symbolic) and s: dt[STATIC, 3]
    (static), w and v of the op's output shapes; its value_and_grad in x and s."""
    body, _, _, _, out = OPS[name]

    def typed(shape):
        return dt[shape] if shape else dt

    def loss(x: dt["R", 3], s: dt[STATIC, 3], w: typed(out("R")), v: typed(out(STATIC))) -> dt:
        return nn.sum(w * body(x)) + nn.sum(v * body(s))
    function = diffc.function(loss, name=f"loss_{list(OPS).index(name)}_{dt}")
    return diffc.value_and_grad(function, ["x", "s"])


def _close(got, want, scale, dt, what, rtol=0.0):
    rtol = max(RTOL[dt], rtol)
    assert np.all(np.abs(np.asarray(got, np.float64) - want) <= rtol * scale + 1e-300), (
        what, got, want)


@pytest.mark.parametrize("dt", [f64, f32], ids=str)
@pytest.mark.parametrize("name", list(OPS))
def test_op_matches_numpy_and_jax(name, dt):
    """Eagerly the op is numpy's (to rounding); compiled over symbolic and static rows,
    sum(w * op(x)) is numpy's and its gradient jax.grad's (of float64 copies of the inputs;
    without jax, central differences of the numpy reference)."""
    body, ref, _, _, out = OPS[name]
    vg = _loss(name, dt)
    s, v, s_value, s_scale, s_grad, s_rtol = _expected(name, STATIC)
    eager = body(s.astype(dt.np_dtype))
    assert np.shape(eager) == out(STATIC) and np.asarray(eager).dtype == dt.np_dtype
    _close(eager, ref(s), np.abs(ref(s)), dt, "eager")
    for rows in SIZES:
        x, w, value, scale, grad, rtol = _expected(name, rows)
        args = [a.astype(dt.np_dtype) if a.ndim else float(a) for a in (x, s, w, v)]
        got, (dx, ds) = vg(*args)
        _close(got, value + s_value, scale + s_scale, dt, "value")
        for g, want, tol in ((dx, grad, rtol), (ds, s_grad, s_rtol)):
            assert g.dtype == dt.np_dtype
            _close(g, want, max(np.max(np.abs(want)), 1e-300), dt, "gradient", tol)


# ----------------------------------------------------------------------------- ties, as JAX

TIES = {  # name -> (diffc loss of (x, y), jax loss (jnp) of (x, y), x, y): every tie hit
    "max": (lambda x, y: nn.sum(nn.max(x, axis=1) * y),
            lambda jnp: lambda x, y: jnp.sum(jnp.max(x, axis=1) * y),
            [[1.0, 3.0, 3.0], [5.0, 5.0, 5.0]], [1.0, 2.0]),
    "min-all": (lambda x, y: x.min() * 3.0, lambda jnp: lambda x, y: jnp.min(x) * 3.0,
                [[1.0, -2.0, 0.0], [-2.0, 4.0, -2.0]], [0.0, 0.0, 0.0]),
    "maximum": (lambda x, y: nn.sum(nn.maximum(x, y) * x),
                lambda jnp: lambda x, y: jnp.sum(jnp.maximum(x, y) * x),
                [[1.0, 2.0, 3.0], [0.5, 0.0, -1.0]], [1.0, 0.0, 3.0]),
    "minimum": (lambda x, y: nn.sum(nn.minimum(y, x) ** 2),
                lambda jnp: lambda x, y: jnp.sum(jnp.minimum(y, x) ** 2),
                [[1.0, 2.0, 3.0], [0.5, 0.0, -1.0]], [1.0, 0.0, 3.0]),
    "clip": (lambda x, y: nn.sum(nn.clip(x, -1.0, 2.0) * 3.0),
             lambda jnp: lambda x, y: jnp.sum(jnp.clip(x, -1.0, 2.0) * 3.0),
             [[-1.0, 2.0, 0.5], [-3.0, 3.0, 2.0]], [0.0, 0.0, 0.0]),
    "clip-traced-bounds": (lambda x, y: nn.sum(x.clip(y, y + 1.0)),
                           lambda jnp: lambda x, y: jnp.sum(jnp.clip(x, y, y + 1.0)),
                           [[-1.0, 2.0, 0.5], [0.0, 3.0, 1.0]], [-1.0, 1.0, 0.5]),
    "abs-at-0": (lambda x, y: nn.sum(abs(x) * y), lambda jnp: lambda x, y: jnp.sum(
        jnp.abs(x) * y), [[0.0, -0.0, 1.0], [-1.0, 0.0, 2.0]], [1.0, 2.0, 3.0]),
    "leaky_relu-at-0": (lambda x, y: nn.sum(nn.leaky_relu(x) * y),
                        lambda jnp: lambda x, y: jnp.sum(jnp.where(x >= 0, x, 0.01 * x) * y),
                        [[0.0, -0.0, 1.0], [-1.0, 0.0, 2.0]], [1.0, 2.0, 3.0]),
    "sqrt-at-0": (lambda x, y: nn.sum(nn.sqrt(x)), lambda jnp: lambda x, y: jnp.sum(jnp.sqrt(x)),
                  [[0.0, 1.0, 4.0], [9.0, 0.25, 2.0]], [0.0, 0.0, 0.0]),
}


@pytest.mark.parametrize("name", list(TIES))
def test_gradient_at_ties_is_jax(name):
    """max / min share the gradient equally among tied elements; maximum / minimum give half to
    each operand at a tie and clip half at a bound (to the bound the other half); abs has slope
    1 at 0 (also -0), leaky_relu too; sqrt is inf at 0: all exactly jax.grad's."""
    jax, jnp, _ = jax_modules()
    body, jax_body, x, y = TIES[name]
    x, y = np.array(x), np.array(y)

    def f(x: f64[x.shape], y: f64[y.shape]) -> f64:
        return body(x, y)
    vg = diffc.grad(diffc.function(f, name=f"tie_{name.replace('-', '_')}"), ["x", "y"])
    got = vg(x, y)
    want = jax.jit(jax.grad(jax_body(jnp), argnums=(0, 1)))(x, y)
    for g, w in zip(got, want, strict=True):
        np.testing.assert_array_equal(g, np.asarray(w))


# ----------------------------------------------------------------------------- argmax, masks

@functools.cache
def _indices(dt):
    @diffc.function(name=f"rows_argmax_{dt}")
    def rows(x: dt["R", 4]) -> i64["R"]:
        return x.argmax(axis=-1)

    @diffc.function(name=f"columns_argmin_{dt}")
    def columns(x: dt["R", 4]) -> i64[4]:
        return nn.argmin(x, axis=0)

    @diffc.function(name=f"flat_argmax_{dt}")
    def flat(x: dt["R", 4]) -> i64:
        return x.argmax()
    return rows, columns, flat


@pytest.mark.parametrize("dt", [f64, f32], ids=str)
def test_argmax_argmin_are_numpy(dt):
    """int64 indices along an axis or of the flattened array; ties give the first, a nan the
    first nan; eagerly numpy's own."""
    rows, columns, flat = _indices(dt)
    x = rng.integers(-2, 3, (7, 4)).astype(dt.np_dtype)  # many ties
    x[3, 2] = x[5, 0] = x[5, 3] = np.nan
    for v in (x, x[:1], -x[::-1]):
        v = np.ascontiguousarray(v)
        got = rows(v)
        assert got.dtype == np.int64
        np.testing.assert_array_equal(got, np.argmax(v, axis=1))
        np.testing.assert_array_equal(columns(v), np.argmin(v, axis=0))
        assert flat(v) == np.argmax(v) and isinstance(flat(v), int)
        np.testing.assert_array_equal(nn.argmax(v, axis=1), np.argmax(v, axis=1))
        assert nn.argmin(v) == np.argmin(v)


@pytest.mark.parametrize("dt", [f64, f32], ids=str)
def test_comparisons_are_masks(dt):
    """< <= > >= == != on traced arrays (reflected too, and with a numpy scalar or a numpy
    function first) give numpy's masks, nan included (only != holds with a nan); each mask is
    one bit of the result here."""
    @diffc.function(name=f"masks_{dt}")
    def masks(x: dt["R", 3], y: dt[3]) -> dt["R", 3]:
        bits = [x < y, x <= y, y < x, dt.np_dtype.type(0.5) >= x, np.equal(x, y), x != y]
        zero = dt.np_dtype.type(0)
        return sum(nn.where(m, dt.np_dtype.type(2 ** k), zero) if k % 2 else
                   m.astype(dt) * 2 ** k for k, m in enumerate(bits))

    x = rng.integers(-1, 2, (6, 3)).astype(dt.np_dtype) * 0.5
    x[0, 0], x[2, 1] = np.nan, 0.5
    y = np.array([0.5, -0.5, np.nan], dt.np_dtype)
    with np.errstate(invalid="ignore"):
        bits = [x < y, x <= y, x > y, 0.5 >= x, x == y, x != y]
    want = sum(b * 2.0 ** k for k, b in enumerate(bits))
    np.testing.assert_array_equal(masks(x, y), want)


@pytest.mark.parametrize("dt", [f64, f32], ids=str)
def test_logic_of_masks_is_numpys(dt):
    """& | ^ ~ on masks (reflected, with Python and numpy bools, broadcast, and numpy's
    logical_* and bitwise_* functions) and == != of masks are numpy's logic on boolean arrays,
    nan comparisons included; each combination is one bit of the result here."""
    @diffc.function(name=f"logic_{dt}")
    def logic(x: dt["R", 3], y: dt[3]) -> dt["R", 3]:
        a, b = x > 0, y < x
        bits = [a & b, a | (y > 0), a ^ b, ~a, True & a, False | ~b, np.logical_and(a, b),
                np.logical_or(a, y > 0), np.logical_xor(b, a), np.logical_not(b),
                np.bitwise_and(a, ~b), np.invert(a | b), np.logical_and(a, True),
                np.True_ ^ b, a == b, a != (y > 0)]
        return sum(m.astype(dt) * 2 ** k for k, m in enumerate(bits))

    x = rng.integers(-1, 2, (7, 3)).astype(dt.np_dtype) * 0.5
    x[0, 0] = np.nan
    y = np.array([0.5, -0.5, np.nan], dt.np_dtype)
    with np.errstate(invalid="ignore"):
        a, b = x > 0, y < x
        bits = [a & b, a | (y > 0), a ^ b, ~a, a, ~b, a & b, a | (y > 0), a ^ b, ~b, a & ~b,
                ~(a | b), a, ~b, a == b, a != (y > 0)]
    want = sum(m * 2.0 ** k for k, m in enumerate(bits))
    for rows in (7, 1):
        np.testing.assert_array_equal(logic(x[:rows], y), want[:rows])


def test_masks_of_a_gemm_select_its_gradient():
    """A mask combined from comparisons of a GEMM's output selects both the value and the
    gradient, as the numpy formula's."""
    @diffc.function
    def banded(W: f64[3, 4], x: f64["B", 4]) -> f64:
        z = x @ W.T
        return nn.sum(nn.where((z > 0) & ~(z > 1), z, -z))

    W, x = rng.standard_normal((3, 4)), rng.standard_normal((9, 4))
    z = x @ W.T
    inside = (z > 0) & ~(z > 1)
    value, (dW,) = diffc.value_and_grad(banded, ["W"])(W, x)
    assert value == pytest.approx(np.where(inside, z, -z).sum(), rel=1e-12)
    np.testing.assert_allclose(dW, np.where(inside, 1.0, -1.0).T @ x, rtol=1e-12)


@pytest.mark.parametrize("it", [diffc.i32, i64], ids=str)
def test_integer_comparisons_give_masks(it):
    """Integers compare signed, with each other (of either width) and with integer numbers:
    an argmax (i64) against labels of either width, as numpy's."""
    @diffc.function(name=f"int_masks_{it}")
    def int_masks(a: it["B"], b: it["B"]) -> f64["B"]:
        bits = [a == b, a != b, a < b, a <= -1, 2 > a, a >= b, (a > 0) & (b > 0)]
        return sum(m.astype(f64) * 2 ** k for k, m in enumerate(bits))

    @diffc.function(name=f"argmax_hits_{it}")
    def argmax_hits(z: f64["B", 4], y: it["B"]) -> f64:
        return nn.sum((nn.argmax(z, axis=1) == y).astype(f64))

    a = rng.integers(-3, 4, 40).astype(it.np_dtype)
    b = rng.integers(-3, 4, 40).astype(it.np_dtype)
    b[-1] = np.iinfo(it.np_dtype).min  # signed, not unsigned, comparison
    bits = [a == b, a != b, a < b, a <= -1, 2 > a, a >= b, (a > 0) & (b > 0)]
    np.testing.assert_array_equal(int_masks(a, b), sum(m * 2.0 ** k for k, m in enumerate(bits)))
    z, y = rng.standard_normal((50, 4)), rng.integers(0, 4, 50).astype(it.np_dtype)
    assert argmax_hits(z, y) == np.sum(z.argmax(1) == y)


def test_comparisons_refuse_mixed_dtypes():
    """Integers beside floats, a number beside integers that is not an integer of their range
    (numpy compares those right; a wrapped literal would not), masks ordered, and logic on
    floats or numbers are DTypeErrors at the user's line."""
    bodies = {"i32 < f64": lambda a, b, x: nn.sum((a < x).astype(f64)),
              "i32 < 2.5": lambda a, b, x: nn.sum((a < 2.5).astype(f64)),
              "i32 < 2**40": lambda a, b, x: nn.sum((a < 2 ** 40).astype(f64)),
              "i32 == 2**32 + 1": lambda a, b, x: nn.sum((a == 2 ** 32 + 1).astype(f64)),
              "i64 > 2**64": lambda a, b, x: nn.sum((b > 2 ** 64).astype(f64)),
              "mask < mask": lambda a, b, x: nn.sum(((a > 0) < (b > 0)).astype(f64)),
              "f64 & mask": lambda a, b, x: nn.sum(nn.where(x & (x > 0), x, 0.0)),
              "mask & 1": lambda a, b, x: nn.sum(nn.where((x > 0) & 1, x, 0.0))}
    for what, body in bodies.items():
        body.__annotations__ = {"a": diffc.i32["B"], "b": i64["B"], "x": f64["B"],
                                "return": f64}
        with pytest.raises(diffc.DTypeError, match=r"test_language\.py:\d+") as e:
            diffc.function(body, name="mixed")
        assert ("astype(f64)" in str(e.value)) != ("&" in what), what
