"""Programs in the language: masks fused into loops (never stored when fusion can avoid it),
in GEMM epilogues and stored where they must be; a Huber / L1-regularised regression trained
with train_step and fit against a numpy trajectory; the stable forms log1p and logsumexp; and
mistakes, reported at the user's line."""
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from models import assert_names_line

import diffc
from diffc import DTypeError, ShapeError, SignatureError, TraceError, f32, f64, nn
from diffc.compiler.pipeline import optimize
from diffc.core.tracer import trace_program
from diffc.core.types import bool_
from diffc.passes import stable_forms
from diffc.passes.memory import plan_memory

RTOL = {f32: 1e-5, f64: 1e-12}
rng = np.random.default_rng(0)


def names(program):
    return [e.prim.name for e in program.eqns]


def stored_dtypes(program):
    """The dtypes of the values an optimized program keeps in workspace slots or outputs."""
    return {t.dtype for t in plan_memory(program).slots} | {a.type.dtype for a in
                                                             program.outputs}


# ----------------------------------------------------------------------------- fusion of masks

@diffc.function
def activations(x: f64["B", 4], a: f64["B", 4], b: f64["B", 4]) -> f64["B", 4]:
    return nn.relu(x) * nn.softplus(x) + nn.where(x > 0, a, b)


@diffc.function
def leaky(x: f32["B", 4]) -> f32["B", 4]:
    return nn.where(x > 0, x, 0.01 * x)


@pytest.mark.parametrize("f, body", [
    (activations, ["relu", "softplus", "mul", "gt", "select", "add"]),
    (leaky, ["gt", "mul", "select"])], ids=["activations", "leaky"])
def test_mask_stays_in_the_loop(f, body):
    """relu(x) * softplus(x) + where(x > 0, a, b) and where(x > 0, x, 0.01 * x) are one fused
    loop each: the mask lives in a register, no bool buffer exists, the result is numpy's."""
    program = optimize(f.program)
    assert names(program) == ["fused"]
    assert names(program.eqns[0].params["body"]) == body
    assert bool_ not in stored_dtypes(program)
    args = [rng.standard_normal((5, 4)).astype(p.type.dtype.np_dtype)
            for p in f.signature.params]
    np.testing.assert_allclose(f(*args), f.fn(*args), rtol=RTOL[f.signature.result.dtype])


def _epilogue(dt, depth):
    @diffc.function(name=f"dense_leaky_{dt}_{depth}")
    def dense_leaky(W: dt[19, depth], b: dt[19], x: dt["B", depth]) -> dt["B", 19]:
        return nn.leaky_relu(nn.dense(W, x, b), 0.1)

    @diffc.function(name=f"dense_mask_out_{dt}_{depth}")
    def dense_mask_out(W: dt[19, depth], x: dt["B", depth]) -> dt[19]:
        h = nn.dense(W, x)
        m = h > 0  # read in the epilogue and, converted, outside it: stored from the GEMM
        return nn.sum(nn.where(m, h, 0.0 * h), 0) + nn.sum(m.astype(dt), 0)

    @diffc.function(name=f"dense_only_mask_{dt}_{depth}")
    def dense_only_mask(W: dt[19, depth], x: dt["B", depth]) -> dt[19]:
        return nn.sum((nn.dense(W, x) > 0).astype(dt), 0)  # the GEMM's only output: a mask
    return dense_leaky, dense_mask_out, dense_only_mask


@pytest.mark.parametrize("depth", [37, 1024])  # 1024: chunked dot tiles, sums kept in C
@pytest.mark.parametrize("dt", [f32, f64], ids=str)
def test_masks_in_gemm_epilogues(dt, depth):
    """A dense layer's leaky_relu (a comparison and a select) finishes the GEMM in vector
    registers; a mask that leaves the GEMM is stored as bytes (vector stores) and read back."""
    dense_leaky, dense_mask_out, dense_only_mask = _epilogue(dt, depth)
    program = optimize(dense_leaky.program)
    assert names(program) == ["fused"]
    assert names(program.eqns[0].params["body"])[0] == "matmul"
    for f in (dense_mask_out, dense_only_mask):
        stored = optimize(f.program)
        assert names(stored.eqns[0].params["body"])[:2] == ["matmul", "gt"]
        assert bool_ in stored_dtypes(stored)
    W, b = rng.standard_normal((19, depth)), rng.standard_normal(19)
    tol = RTOL[dt] * 10
    for batch in (1, 7, 33):
        x = rng.standard_normal((batch, depth))
        h = x @ W.T
        args = [a.astype(dt.np_dtype) for a in (W, b, x)]
        np.testing.assert_allclose(dense_leaky(*args), np.where(h + b >= 0, h + b, 0.1 * (h + b)),
                                   rtol=tol, atol=tol * np.sqrt(depth))
        np.testing.assert_allclose(dense_mask_out(args[0], args[2]),
                                   np.where(h > 0, h, 0).sum(0) + (h > 0).sum(0),
                                   rtol=tol, atol=tol * np.sqrt(depth) * batch)


ONLY_MASK = """
import sys
import numpy as np
sys.path.insert(0, sys.argv[1])
from test_language_programs import _epilogue
from diffc import f32, f64
rng = np.random.default_rng(3)
for dt in (f32, f64):
    only_mask = _epilogue(dt, 1024)[2]
    W, x = rng.standard_normal((19, 1024)), rng.standard_normal((33, 1024))
    got = only_mask(W.astype(dt.np_dtype), x.astype(dt.np_dtype))
    np.testing.assert_array_equal(got, (x @ W.T > 0).sum(0))
print("ok")
"""


def test_a_mask_as_the_only_gemm_output():
    """The GEMM's only output is a mask, over a depth that chunked dot tiles would split with
    partial sums kept in a C-typed output: there is none, so no chunks (in a subprocess: sums
    written into the mask's bytes would overrun them)."""
    done = subprocess.run([sys.executable, "-c", ONLY_MASK, str(Path(__file__).parent)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0 and done.stdout.strip() == "ok", done.stderr[-2000:]


def test_a_broadcast_mask_is_stored_and_read_back():
    """A mask of shape (3,) used over (B, 3): computed once, stored as bytes, broadcast."""
    @diffc.function
    def flip(x: f64["B", 3], c: f64[3]) -> f64["B", 3]:
        return nn.where(c > 0, x, -x)

    assert bool_ in stored_dtypes(optimize(flip.program))
    x, c = rng.standard_normal((4, 3)), np.array([1.0, -1.0, 0.0])
    np.testing.assert_array_equal(flip(x, c), np.where(c > 0, x, -x))


# ----------------------------------------------------------------------------- Huber / L1

D, DELTA, LAM, BOUND = 4, 1.0, 0.05, 4.0


def _regression(dt):
    def huber_l1(w: dt[D], b: dt[1], X: dt["B", D], y: dt["B"]) -> dt:
        r = nn.clip(X @ w + b, -BOUND, BOUND) - y
        a = abs(r)
        huber = nn.where(a <= DELTA, 0.5 * r * r, DELTA * (a - 0.5 * DELTA))
        return nn.mean(huber) + LAM * nn.sum(nn.abs(w))
    return diffc.function(huber_l1, name=f"huber_l1_{dt}")


def np_huber_step(w, b, X, y, lr):
    """The loss and one SGD step, by hand in float64 (|.| has slope 1 at 0, as in JAX)."""
    z = X @ w + b[0]
    r = np.clip(z, -BOUND, BOUND) - y
    a = np.abs(r)
    loss = np.mean(np.where(a <= DELTA, 0.5 * r * r, DELTA * (a - 0.5 * DELTA))) + \
        LAM * np.sum(np.abs(w))
    dr = np.where(a <= DELTA, r, DELTA * np.where(r >= 0, 1.0, -1.0)) / len(y)
    dz = dr * (np.abs(z) < BOUND)  # no z lies exactly on a bound here
    dw = X.T @ dz + LAM * np.where(w >= 0, 1.0, -1.0)
    return loss, w - lr * dw, b - lr * np.sum(dz)


def _data(dt, n=40):
    """Targets of a sparse linear model with outliers: predictions past the clip bounds, the
    Huber loss's both branches, weights at exactly 0 at the start."""
    r = np.random.default_rng(7)
    X = r.standard_normal((n, D))
    y = X @ np.array([3.0, -2.0, 0.0, 0.5]) + 0.1 * r.standard_normal(n)
    y[::7] += 6.0
    return X.astype(dt.np_dtype), y.astype(dt.np_dtype)


@pytest.mark.parametrize("dt", [f64, f32], ids=str)
def test_huber_l1_regression_trains_like_numpy(dt):
    """train_step (full batch, 25 steps) and fit (batches of 16: 16, 16, 8; 2 epochs, in
    order) follow the numpy trajectory: every loss and the final parameters."""
    f, lr = _regression(dt), 0.3
    X, y = _data(dt)
    X64, y64 = X.astype(np.float64), y.astype(np.float64)
    step = diffc.train_step(f, ["w", "b"], diffc.SGD(lr=lr))
    w, b = np.zeros(D, dt.np_dtype), np.zeros(1, dt.np_dtype)
    w_ref, b_ref = np.zeros(D), np.zeros(1)
    tol, trajectory = (1e-10 if dt is f64 else 1e-4), []
    for _ in range(25):
        loss_ref, w_ref, b_ref = np_huber_step(w_ref, b_ref, X64, y64, lr)
        trajectory.append(step(w, b, X, y))
        assert trajectory[-1] == pytest.approx(loss_ref, rel=tol)
    np.testing.assert_allclose(w, w_ref, rtol=tol, atol=tol)
    np.testing.assert_allclose(b, b_ref, rtol=tol, atol=tol)
    assert trajectory[-1] < 0.7 * trajectory[0]  # it learned

    w, b = np.zeros(D, dt.np_dtype), np.zeros(1, dt.np_dtype)
    losses = step.fit(w, b, X, y, batch_size=16, epochs=2, shuffle=False)
    w_ref, b_ref, want = np.zeros(D), np.zeros(1), []
    for _ in range(2):
        for start in range(0, len(y), 16):
            loss_ref, w_ref, b_ref = np_huber_step(w_ref, b_ref, X64[start:start + 16],
                                                   y64[start:start + 16], lr)
            want.append(loss_ref)
    np.testing.assert_allclose(losses, want, rtol=tol)
    np.testing.assert_allclose(w, w_ref, rtol=tol, atol=tol)


# ----------------------------------------------------------------------------- stable forms

def _stable(body, *types, result=f64):
    arg_names = body.__code__.co_varnames[:body.__code__.co_argcount]
    body.__annotations__ = dict(zip(arg_names, types, strict=True), **{"return": result})
    return diffc.function(body)


STABLE = {  # traced body, types, the primitives after stable_forms
    "log(1 + x)": (lambda x: nn.sum(nn.log(1 + x)), (f64[3],), ["log1p", "reduce_sum"]),
    "log(x + 1)": (lambda x: nn.log(x + 1.0) * 2.0, (f64[()],), ["log1p", "mul"]),
    "log(sum(exp))": (lambda z: nn.sum(nn.log(nn.sum(nn.exp(z), axis=-1))), (f64["B", 3],),
                      ["logsumexp", "reduce_sum"]),
    "log(sum(exp)) all": (lambda z: nn.log(nn.sum(nn.exp(z))), (f64[2, 3],), ["logsumexp"]),
    "log(sum(exp, keepdims))": (lambda z: nn.sum(nn.log(nn.sum(nn.exp(z), 1, keepdims=True))),
                                (f64["B", 3],), ["logsumexp", "reshape", "reduce_sum"]),
    "keepdims_read_elsewhere": (lambda z: nn.sum(nn.log(k := nn.exp(z).sum(0, keepdims=True)) * k),
                                (f64[2, 3],),
                                ["exp", "reduce_sum", "reshape", "logsumexp", "reshape", "mul",
                                 "reduce_sum"]),
    "one_plus_read_elsewhere": (lambda x: nn.sum(nn.log(u := 1 + x) * u), (f64[3],),
                                ["add", "log1p", "mul", "reduce_sum"]),
    "exp_read_elsewhere": (lambda z: nn.log(nn.sum(e := nn.exp(z))) + nn.sum(e), (f64[3],),
                           ["exp", "logsumexp", "reduce_sum", "add"]),
    "not_one": (lambda x: nn.sum(nn.log(2 + x)), (f64[3],), ["add", "log", "reduce_sum"]),
    "not_a_literal": (lambda x, o: nn.sum(nn.log(o + x)), (f64[3], f64[()]),
                      ["add", "log", "reduce_sum"]),
    "weighted_sum": (lambda z, w: nn.log(nn.sum(nn.exp(z) * w)), (f64[3], f64[3]),
                     ["exp", "mul", "reduce_sum", "log"]),
    "sum_without_exp": (lambda z: nn.log(nn.sum(z)), (f64[3],), ["reduce_sum", "log"]),
}


@pytest.mark.parametrize("name", list(STABLE))
def test_stable_forms_log1p_and_logsumexp(name):
    body, types, prims = STABLE[name]
    f = _stable(body, *types)
    assert names(f.program) == prims
    traced = trace_program(f.fn, f.signature)
    assert stable_forms(f.program).eqns == f.program.eqns  # nothing left to rewrite
    args = [np.abs(rng.standard_normal(tuple(3 if isinstance(d, str) else d for d in t.shape)))
            + 0.5 for t in types]
    args = [float(a) if a.ndim == 0 else a for a in args]
    np.testing.assert_allclose(f(*args), diffc.eval_program(traced, *args)[0], rtol=1e-12)


def test_stable_forms_keep_extremes_finite():
    """log(1 + x) at x = 1e-20 is x (not 0) with derivative 1 / (1 + x); log(sum(exp(z))) at
    z = [1000, 0, -1000] is 1000 (not inf) with gradient softmax(z) (not nan)."""
    x = np.array([1e-20, -0.5, -1.0])
    log1p = _stable(lambda x: nn.log(1 + x), f64[3], result=f64[3])
    with np.errstate(divide="ignore"):
        np.testing.assert_array_equal(log1p(x), np.log1p(x))
    grad = diffc.grad(_stable(lambda x: nn.sum(nn.log(1 + x)), f64[2]), "x")(x[:2])
    np.testing.assert_allclose(grad, [1.0, 2.0], rtol=1e-15)
    lse = _stable(lambda z: nn.log(nn.sum(nn.exp(z))), f64[3])
    value, grad = diffc.value_and_grad(lse, "z")(np.array([1000.0, 0.0, -1000.0]))
    assert value == 1000.0
    np.testing.assert_array_equal(grad, [1.0, 0.0, 0.0])  # exp(-1000) rounds to 0


def test_log_softmax_written_with_keepdims_is_finite():
    """z - log(sum(exp(z), keepdims=True)), the log-softmax as numpy users write it, at
    |z| = 1000: finite values and gradients, equal to the stable numpy formula."""
    hand = _stable(lambda z, y: -nn.sum(y * (z - nn.log(nn.sum(nn.exp(z), axis=1, keepdims=True)))),
                   f64["B", 3], f64["B", 3])
    z = np.array([[1000.0, 0.0, -1000.0], [-1000.0, -999.0, -1001.0]])
    y = np.array([[0.0, 1.0, 0.0], [0.5, 0.0, 0.5]])
    m = z.max(1, keepdims=True)
    log_p = z - m - np.log(np.exp(z - m).sum(1, keepdims=True))
    value, (dz,) = diffc.value_and_grad(hand, ["z"])(z, y)
    assert value == pytest.approx(-np.sum(y * log_p), rel=1e-12)
    np.testing.assert_allclose(dz, np.exp(log_p) * y.sum(1, keepdims=True) - y, rtol=1e-12,
                               atol=1e-300)


# ----------------------------------------------------------------------------- mistakes

def float_mask(x: f64[3]) -> f64[3]:
    return nn.where(x, x, -x)  # float_mask


def mixed_branches(x: f64[3], y: f32[3]) -> f64[3]:
    return nn.where(x > 0, x, y)  # mixed_branches


def mixed_maximum(x: f64[3], y: f32[3]) -> f64[3]:
    return nn.maximum(x, y)  # mixed_maximum


def mixed_comparison(x: f64[3], y: f32[3]) -> f64[3]:
    return nn.where(x < y, x, x)  # mixed_comparison


def mask_arithmetic(x: f64[3]) -> f64[3]:
    return (x > 0) * x  # mask_arithmetic


def mask_sum(x: f64[3]) -> f64:
    return nn.sum(x > 0)  # mask_sum


def mask_result(x: f64[3]) -> f64[3]:
    return x > 0  # mask_result


def max_axis(x: f64[2, 3]) -> f64[2]:
    return x.max(axis=2)  # max_axis


def argmax_axes(x: f64[2, 3]) -> f64:
    return nn.argmax(x, axis=(0, 1)).astype(f64)  # argmax_axes


def astype_int(x: f64[3]) -> f64[3]:
    return x.astype(np.int32)  # astype_int


def gelu_form(x: f64[3]) -> f64[3]:
    return nn.gelu(x, approximate="erf")  # gelu_form


def numpy_clip_out(x: f64[3]) -> f64[3]:
    return np.clip(x, 0.0, 1.0, out=None)  # numpy_clip_out


MISTAKES = [
    (float_mask, DTypeError, ["mask", "f64[3]"]),
    (mixed_branches, DTypeError, ["f64", "f32"]),
    (mixed_maximum, DTypeError, ["f64", "f32"]),
    (mixed_comparison, DTypeError, ["comparison '<'", "f32"]),
    (mask_arithmetic, DTypeError, ["floating", "bool[3]"]),
    (mask_sum, DTypeError, ["floating", "bool[3]"]),
    (mask_result, DTypeError, ["bool[3]", "f64[3]"]),
    (max_axis, ShapeError, ["axis 2", "f64[2,3]"]),
    (argmax_axes, ShapeError, ["one axis", "(0, 1)"]),
    (astype_int, DTypeError, ["f32 or f64", "int32"]),
    (gelu_form, TraceError, ["'none' or 'tanh'", "'erf'"]),
    (numpy_clip_out, TraceError, ["clip", "out", "diffc.nn"]),
]


@pytest.mark.parametrize("body, error, expected", MISTAKES, ids=lambda v: getattr(v, "__name__",
                                                                                   None))
def test_mistakes_name_the_users_line(body, error, expected):
    with pytest.raises(error) as info:
        diffc.function(body)
    assert_names_line(info.value, __file__, (body.__name__,), *expected)


def test_masks_are_not_parameters():
    with pytest.raises(SignatureError, match="'m'"):
        @diffc.function
        def f(m: bool_[3], x: f64[3]) -> f64:
            return nn.sum(x)
