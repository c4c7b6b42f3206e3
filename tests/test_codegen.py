"""Native code: packed FMA in the assembly, no libm, and every kernel kind against numpy."""
import functools
import re

import llvmlite.binding as llvm
import numpy as np
import pytest

import diffc
from diffc import f32, f64, i32, i64, nn
from diffc.compiler.llvm import host_target
from diffc.compiler.target import Target

RTOL = {f32: 1e-5, f64: 1e-12}
FLOATS = [f32, f64]
_features = llvm.get_host_cpu_features()
needs_avx2_fma = pytest.mark.skipif(not (_features.get("avx2") and _features.get("fma")),
                                    reason="the host CPU lacks AVX2 or FMA")
WIDEST = "zmm" if _features.get("avx512f") else "ymm"  # the registers kernels must use


def assert_close(out, ref, rtol, scale=None):
    """|out - ref| <= rtol * scale elementwise (scale defaults to |ref|)."""
    out, ref = np.asarray(out, np.float64), np.asarray(ref, np.float64)
    assert out.shape == ref.shape
    bound = rtol * (np.abs(ref) if scale is None else np.asarray(scale, np.float64))
    err = np.abs(out - ref)
    assert np.all(err <= bound), f"worst error {np.max(err - bound) + np.max(bound)}"


def rand(rng, shape, dt):
    return rng.standard_normal(shape).astype(dt.np_dtype)


def asm_targets(asm: str) -> set[str]:
    """Every symbol the assembly calls or jumps to, with `@PLT` removed."""
    found = re.findall(r"^\s*(?:call|jmp)\w*\s+\*?([\w.$@]+)", asm, re.M)
    return {t.split("@")[0] for t in found}


# ----------------------------------------------------------------------------- assembly

@diffc.function
def dense64(W: f64[128, 784], x: f64[784], b: f64[128]) -> f64[128]:
    return nn.dense(W, x, b)


@diffc.function
def batched64(X: f64["B", 784], W: f64[128, 784]) -> f64["B", 128]:
    return X @ W.T


@diffc.function
def dense32(W: f32[128, 784], x: f32[784], b: f32[128]) -> f32[128]:
    return nn.dense(W, x, b)


@diffc.function
def batched32(X: f32["B", 784], W: f32[128, 784], b: f32[128]) -> f32["B", 128]:
    return nn.dense(W, X, b)


@diffc.function
def transcendental(z: f64["B", 10], y: i32["B"]) -> f64:
    h = nn.tanh(nn.log(nn.exp(z) + 1.0)) + nn.sigmoid(z) + nn.log_softmax(z) + nn.softmax(z)
    return nn.softmax_cross_entropy(h, y) + nn.cross_entropy(nn.softmax(z), y) + h.sum()


@diffc.function
def transcendental32(z: f32[10]) -> f32[10]:
    return nn.exp(nn.tanh(z)) * nn.log(nn.sigmoid(z)) ** 3


@needs_avx2_fma
@pytest.mark.parametrize("fn", [dense64, batched64], ids=["dense", "batched"])
def test_f64_asm_has_packed_fma_on_the_widest_registers(fn):
    assert re.search(rf"vfmadd\w*pd\s.*{WIDEST}", fn.asm)


@needs_avx2_fma
@pytest.mark.parametrize("fn", [dense32, batched32], ids=["dense", "batched"])
def test_f32_asm_has_packed_fma_on_the_widest_registers(fn):
    assert re.search(rf"vfmadd\w*ps\s.*{WIDEST}", fn.asm)


def test_llvm_ir_is_optimized_and_exports_entry_and_workspace_size():
    text = dense64.llvm_ir
    assert re.search(r"^define .*@diffc_dense64\(", text, re.M)
    assert re.search(r"^define .*@diffc_dense64_workspace_size\(", text, re.M)
    assert "llvm.loop.isvectorized" in text  # the loop vectorizer ran
    module = llvm.parse_assembly(text)
    module.verify()
    assert module.get_function("diffc_dense64").linkage == llvm.Linkage.external


def _language(dt):
    @diffc.function(name=f"language_{dt}")
    def language(z: dt["B", 10], w: dt[10, 10]) -> dt:
        h = nn.sin(z) * nn.cos(z) + nn.log1p(abs(z)) + nn.expm1(z) + nn.softplus(z) + \
            nn.gelu(z) + nn.sqrt(abs(z)) + nn.gelu(z, approximate="tanh")
        g = nn.leaky_relu(nn.dense(w, h))
        return nn.sum(nn.logsumexp(g, -1)) + h.max() + g.min() + nn.sum(
            nn.where(z > 0, h, nn.clip(z, -1, 1))) + nn.sum(nn.argmax(g, 1).astype(dt))
    return language


@pytest.mark.parametrize("fn", [transcendental, transcendental32, _language(f64), _language(f32)],
                         ids=["transcendental", "transcendental32", "language", "language32"])
def test_no_libm_calls(fn):
    """Not even for the language's sin, cos, erfc (gelu), sqrt, max, min."""
    libm = re.compile(r"_*(exp|expm1|exp2|log|log1p|log2|tanh|pow|sin|cos|sincos|tan|erf|erfc|"
                      r"sqrt|fmax|fmin|fabs|fma)f?(_finite)?")
    assert not [t for t in asm_targets(fn.asm) if libm.fullmatch(t)]
    declared = re.findall(r"^declare [^@]*@([\w.]+)\(", fn.llvm_ir, re.M)
    assert all(d.startswith("llvm.") for d in declared), declared
    assert not [d for d in declared if re.match(r"llvm\.(exp|log|tanh|pow|sin|cos)\d*\.", d)]


# ----------------------------------------------------------------------------- elementwise math

@functools.cache
def _unary(op, dt):
    @diffc.function(name=f"{op.__name__}_{dt}")
    def f(x: dt["N"]) -> dt["N"]:
        return op(x)
    return f


MATH_INPUTS = {
    (nn.exp, f64): np.concatenate([np.linspace(-700, 700, 4001), np.linspace(-1e-8, 1e-8, 11)]),
    (nn.exp, f32): np.concatenate([np.linspace(-85, 85, 4001), np.linspace(-1e-6, 1e-6, 11)]),
    (nn.log, f64): np.concatenate([np.logspace(-300, 300, 4001), 1 + np.linspace(-1e-3, 1e-3, 11),
                                   [5e-324, 1e-310]]),
    (nn.log, f32): np.concatenate([np.logspace(-37, 37, 4001), 1 + np.linspace(-1e-3, 1e-3, 11),
                                   [1e-40]]),
    (nn.tanh, f64): np.concatenate([np.linspace(-30, 30, 4001), np.logspace(-12, 0, 50)]),
    (nn.tanh, f32): np.concatenate([np.linspace(-15, 15, 4001), np.logspace(-6, 0, 50)]),
    (nn.sigmoid, f64): np.linspace(-700, 700, 4001),
    (nn.sigmoid, f32): np.linspace(-85, 85, 4001),
}
NUMPY_MATH = {nn.exp: np.exp, nn.log: np.log, nn.tanh: np.tanh,
              nn.sigmoid: lambda x: 1 / (1 + np.exp(-x))}


@pytest.mark.parametrize("op, dt", list(MATH_INPUTS), ids=lambda v: getattr(v, "__name__", v))
def test_libm_free_math_matches_numpy(op, dt):
    x = MATH_INPUTS[op, dt].astype(dt.np_dtype)
    ref = NUMPY_MATH[op](x.astype(np.float64))
    out = _unary(op, dt)(x)
    assert out.dtype == dt.np_dtype
    assert_close(out, ref, 4 * np.finfo(dt.np_dtype).eps, scale=np.abs(ref))


@pytest.mark.parametrize("dt", FLOATS)
def test_math_special_values(dt):
    x = np.array([0.0, np.inf, -np.inf, np.nan, -1.0, 1000.0, -1000.0], dt.np_dtype)
    with np.errstate(all="ignore"):
        for op in (nn.exp, nn.log, nn.tanh):
            np.testing.assert_allclose(_unary(op, dt)(x), NUMPY_MATH[op](x), err_msg=str(op),
                                       rtol=4 * np.finfo(dt.np_dtype).eps)


# ----------------------------------------------------------------------------- linear algebra

M, K, N = 19, 67, 33


def _linalg(dt):
    @diffc.function(name=f"matvec_{dt}")
    def matvec(A: dt[M, K], x: dt[K]) -> dt[M]:
        return A @ x

    @diffc.function(name=f"vecmat_{dt}")
    def vecmat(A: dt[M, K], x: dt[M]) -> dt[K]:
        return x @ A

    @diffc.function(name=f"matvec_t_{dt}")
    def matvec_t(A: dt[M, K], x: dt[M]) -> dt[K]:
        return A.T @ x

    @diffc.function(name=f"mm_nn_{dt}")
    def mm_nn(A: dt[M, K], B: dt[K, N]) -> dt[M, N]:
        return A @ B

    @diffc.function(name=f"mm_tn_{dt}")
    def mm_tn(A: dt[K, M], B: dt[K, N]) -> dt[M, N]:
        return A.T @ B

    @diffc.function(name=f"mm_nt_{dt}")
    def mm_nt(A: dt[M, K], B: dt[N, K]) -> dt[M, N]:
        return A @ B.T

    @diffc.function(name=f"mm_tt_{dt}")
    def mm_tt(A: dt[K, M], B: dt[N, K]) -> dt[M, N]:
        return A.T @ B.T

    return {"A@x": (matvec, (M, K), (K,), lambda a, x: a @ x),
            "x@A": (vecmat, (M, K), (M,), lambda a, x: x @ a),
            "A.T@x": (matvec_t, (M, K), (M,), lambda a, x: a.T @ x),
            "A@B": (mm_nn, (M, K), (K, N), lambda a, b: a @ b),
            "A.T@B": (mm_tn, (K, M), (K, N), lambda a, b: a.T @ b),
            "A@B.T": (mm_nt, (M, K), (N, K), lambda a, b: a @ b.T),
            "A.T@B.T": (mm_tt, (K, M), (N, K), lambda a, b: a.T @ b.T)}


LINALG = {dt: _linalg(dt) for dt in FLOATS}


@pytest.mark.parametrize("dt", FLOATS)
@pytest.mark.parametrize("kind", list(LINALG[f64]))
def test_linear_algebra_matches_numpy(dt, kind):
    fn, sa, sb, ref_fn = LINALG[dt][kind]
    rng = np.random.default_rng(0)
    a, b = rand(rng, sa, dt), rand(rng, sb, dt)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    out = fn(a, b)
    assert out.dtype == dt.np_dtype
    assert_close(out, ref_fn(a64, b64), RTOL[dt], scale=ref_fn(np.abs(a64), np.abs(b64)))


# Shapes around the tile sizes of gemm.py (rows 8/4/2, vectors of 16/8/4 lanes, dot blocks of 6
# and 4): whole tiles, leftover rows and vectors, and columns narrower than one vector; depths
# of several L1 chunks of dot tiles (a whole number of them, and not).
GEMM_SHAPES = [(1, 1, 1), (2, 3, 5), (8, 16, 32), (9, 17, 33), (13, 31, 47), (16, 64, 128),
               (21, 100, 71), (64, 7, 130), (9, 608, 21), (13, 1104, 47)]
TRANSPOSES = {"A@B": (False, False), "A.T@B": (True, False), "A@B.T": (False, True),
              "A.T@B.T": (True, True)}


@functools.cache
def _gemm(dt, kind, shape, epilogue: bool, target: Target):
    """op(A) op(B), optionally relu(... + bias): static shape (m, k, n), or symbolic if None;
    compiled for `target`."""
    ta, tb = TRANSPOSES[kind]
    m, k, n = shape or ("M", "K", "N")
    sa, sb = (k, m) if ta else (m, k), (n, k) if tb else (k, n)

    def f(A: dt[sa], B: dt[sb], bias: dt[n]) -> dt[m, n]:
        product = (A.T if ta else A) @ (B.T if tb else B)
        return nn.relu(product + bias) if epilogue else product
    traced = diffc.function(f)
    name = f"gemm_{kind.replace('.', '').replace('@', '_')}_{dt}_{epilogue}"
    return diffc.CompiledFunction.from_program(traced.program, traced.signature, name, target)


def without(target: Target, *prefixes: str) -> Target:
    """target with the features starting with `prefixes` turned off."""
    features = [("-" + f[1:]) if f[1:].startswith(prefixes) else f
                for f in target.features.split(",")]
    return Target(target.triple, target.cpu, ",".join(features))


HOST = host_target()
# the host, and (on this host) AVX2 and SSE machines: their vector registers set the tile sizes
TARGETS = {f"{HOST.vector_registers[0] * 8}-bit vectors": HOST,
           "avx2": without(HOST, "avx512"),
           "sse": without(HOST, "avx512", "avx", "fma", "f16c")}


@pytest.mark.parametrize("dt", FLOATS)
@pytest.mark.parametrize("kind", list(TRANSPOSES))
@pytest.mark.parametrize("symbolic", [False, True], ids=["static", "symbolic"])
@pytest.mark.parametrize("epilogue", [False, True], ids=["plain", "bias_relu"])
@pytest.mark.parametrize("target", list(TARGETS))
def test_gemm_tiles_and_edges_match_numpy(dt, kind, symbolic, epilogue, target):
    ta, tb = TRANSPOSES[kind]
    rng = np.random.default_rng(1)
    for m, k, n in GEMM_SHAPES:
        fn = _gemm(dt, kind, None if symbolic else (m, k, n), epilogue, TARGETS[target])
        a = rand(rng, (k, m) if ta else (m, k), dt)
        b = rand(rng, (n, k) if tb else (k, n), dt)
        bias = rand(rng, n, dt)
        a64, b64 = (a.T if ta else a).astype(np.float64), (b.T if tb else b).astype(np.float64)
        ref, scale = a64 @ b64, np.abs(a64) @ np.abs(b64)
        if epilogue:
            ref, scale = np.maximum(ref + bias, 0), scale + np.abs(bias)
        assert_close(fn(a, b, bias), ref, 4 * RTOL[dt], scale=scale)


# ----------------------------------------------------------------------------- reductions

REDUCTIONS = {"leading": 0, "trailing": -1, "middle": 1, "outer": (0, 2), "trailing2": (1, 2),
              "all": None}
SHAPE = (6, 5, 35)


@functools.cache
def _reduction(dt, kind, reducer):
    axis = REDUCTIONS[kind]
    axes = range(3) if axis is None else [a % 3 for a in np.atleast_1d(axis)]
    out = dt[tuple(d for i, d in enumerate(SHAPE) if i not in axes)]

    @diffc.function(name=f"{reducer.__name__}_{kind}_{dt}")
    def f(x: dt[SHAPE]) -> out:
        return reducer(x, axis)
    return f


@pytest.mark.parametrize("dt", FLOATS)
@pytest.mark.parametrize("kind", list(REDUCTIONS))
@pytest.mark.parametrize("reducer", [nn.sum, nn.mean])
def test_reductions_match_numpy(dt, kind, reducer):
    x = rand(np.random.default_rng(0), SHAPE, dt)
    x64, axis = x.astype(np.float64), REDUCTIONS[kind]
    numpy_reducer = np.sum if reducer is nn.sum else np.mean
    out = _reduction(dt, kind, reducer)(x)
    assert_close(out, numpy_reducer(x64, axis=axis), RTOL[dt],
                 scale=numpy_reducer(np.abs(x64), axis=axis))


@pytest.mark.parametrize("dt", FLOATS)
def test_method_reductions_on_symbolic_rows(dt):
    @diffc.function
    def f(x: dt["B", 7]) -> dt["B"]:
        return x.sum(1) + x.mean(axis=-1) + x.T.mean(0)

    x = rand(np.random.default_rng(0), (13, 7), dt)
    x64 = x.astype(np.float64)
    ref = x64.sum(1) + x64.mean(-1) + x64.T.mean(0)
    assert_close(f(x), ref, RTOL[dt], scale=3 * np.abs(x64).sum(1))


# ----------------------------------------------------------------------------- softmax, losses

def np_log_softmax(z):
    z = np.asarray(z, np.float64)
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def _logits(dt, rows=6, classes=11):
    """Random logits with a large-magnitude row that overflows an unshifted exp."""
    z = rand(np.random.default_rng(0), (rows, classes), dt) * 3
    z[1] += 1000.0 if dt is f64 else 100.0
    z[2] -= 1000.0 if dt is f64 else 100.0
    return z


def _softmaxes(dt):
    @diffc.function(name=f"softmax_{dt}")
    def softmax(z: dt["B", 11]) -> dt["B", 11]:
        return nn.softmax(z)

    @diffc.function(name=f"log_softmax_{dt}")
    def log_softmax(z: dt["B", 11]) -> dt["B", 11]:
        return nn.log_softmax(z)

    @diffc.function(name=f"softmax_vec_{dt}")
    def softmax_vec(z: dt[11]) -> dt[11]:
        return nn.softmax(z)

    return softmax, log_softmax, softmax_vec


SOFTMAXES = {dt: _softmaxes(dt) for dt in FLOATS}


@pytest.mark.parametrize("dt", FLOATS)
def test_softmax_rows_match_numpy(dt):
    softmax, _, softmax_vec = SOFTMAXES[dt]
    z = _logits(dt)
    ref = np.exp(np_log_softmax(z))
    assert_close(softmax(z), ref, RTOL[dt], scale=np.maximum(ref, 1e-300))
    assert_close(softmax_vec(z[1]), ref[1], RTOL[dt], scale=np.maximum(ref[1], 1e-300))
    np.testing.assert_allclose(softmax(z).astype(np.float64).sum(-1), 1.0, rtol=RTOL[dt])


@pytest.mark.parametrize("dt", FLOATS)
def test_log_softmax_rows_match_numpy(dt):
    z = _logits(dt)
    ref = np_log_softmax(z)
    assert_close(SOFTMAXES[dt][1](z), ref, RTOL[dt], scale=np.abs(z) + np.abs(ref))


def _losses(dt, label_dt):
    @diffc.function(name=f"ce_onehot_{dt}")
    def ce_onehot(z: dt["B", 11], y: dt["B", 11]) -> dt:
        return nn.cross_entropy(nn.softmax(z), y)

    @diffc.function(name=f"ce_labels_{dt}_{label_dt}")
    def ce_labels(z: dt["B", 11], y: label_dt["B"]) -> dt:
        return nn.cross_entropy(nn.softmax(z), y)

    @diffc.function(name=f"sce_onehot_{dt}")
    def sce_onehot(z: dt["B", 11], y: dt["B", 11]) -> dt:
        return nn.softmax_cross_entropy(z, y)

    @diffc.function(name=f"sce_labels_{dt}_{label_dt}")
    def sce_labels(z: dt["B", 11], y: label_dt["B"]) -> dt:
        return nn.softmax_cross_entropy(z, y)

    @diffc.function(name=f"sce_one_{dt}_{label_dt}")
    def sce_one(z: dt[11], y: label_dt) -> dt:
        return nn.softmax_cross_entropy(z, y)

    @diffc.function(name=f"ce_one_{dt}_{label_dt}")
    def ce_one(z: dt[11], y: label_dt) -> dt:
        return nn.cross_entropy(nn.softmax(z), y)

    return ce_onehot, ce_labels, sce_onehot, sce_labels, sce_one, ce_one


LOSSES = {(dt, lt): _losses(dt, lt) for dt, lt in [(f32, i32), (f64, i64), (f64, i32)]}


@pytest.mark.parametrize("dt, label_dt", list(LOSSES), ids=str)
def test_cross_entropy_matches_numpy(dt, label_dt):
    ce_onehot, ce_labels, sce_onehot, sce_labels, sce_one, ce_one = LOSSES[dt, label_dt]
    z = rand(np.random.default_rng(1), (6, 11), dt) * 3
    labels = np.array([3, 0, 10, 7, 7, 1], label_dt.np_dtype)
    onehot = np.eye(11, dtype=dt.np_dtype)[labels]
    per_row = -np_log_softmax(z)[np.arange(6), labels]
    ref = per_row.mean()
    for fn, y in [(ce_onehot, onehot), (ce_labels, labels), (sce_onehot, onehot),
                  (sce_labels, labels)]:
        out = fn(z, y)
        assert type(out) is float
        assert out == pytest.approx(ref, rel=RTOL[dt]), fn.name
    for fn in (sce_one, ce_one):
        assert fn(z[4], int(labels[4])) == pytest.approx(per_row[4], rel=RTOL[dt]), fn.name


@pytest.mark.parametrize("dt", FLOATS)
def test_softmax_cross_entropy_soft_targets_and_large_logits(dt):
    sce_onehot = LOSSES[dt, i32 if dt is f32 else i64][2]
    z = _logits(dt)
    y = np.random.default_rng(2).dirichlet(np.ones(11), size=6).astype(dt.np_dtype)
    ref = -(y.astype(np.float64) * np_log_softmax(z)).sum(-1).mean()
    assert sce_onehot(z, y) == pytest.approx(ref, rel=RTOL[dt])


# ----------------------------------------------------------------------------- symbolic batch

@diffc.function
def batch_probs(X: f64["B", 20], W1: f64[30, 20], b1: f64[30], W2: f64[5, 30],
                b2: f64[5]) -> f64["B", 5]:
    return nn.softmax(nn.dense(W2, nn.relu(nn.dense(W1, X, b1)), b2))


@diffc.function
def batch_mean(X: f64["B", 20], W1: f64[30, 20]) -> f64:
    return nn.mean(nn.tanh(nn.dense(W1, X)))


def test_symbolic_batch_sizes_in_sequence():
    rng = np.random.default_rng(0)
    W1, b1, W2, b2 = (rng.standard_normal(s) for s in [(30, 20), (30,), (5, 30), (5,)])
    results = {}
    for size in (1, 4, 1000, 2, 1, 4097, 3):
        X = rng.standard_normal((size, 20))
        hidden = np.maximum(X @ W1.T + b1, 0)
        ref = np.exp(np_log_softmax(hidden @ W2.T + b2))
        out = batch_probs(X, W1, b1, W2, b2)
        assert out.shape == (size, 5)
        assert_close(out, ref, 1e-12, scale=np.maximum(ref, 1e-300))
        assert batch_mean(X, W1) == pytest.approx(np.tanh(X @ W1.T).mean(), rel=1e-12)
        results[size] = X, out
    for X, out in results.values():  # earlier results are untouched by later, larger calls
        np.testing.assert_array_equal(batch_probs(X, W1, b1, W2, b2), out)


# ----------------------------------------------------------------------------- outputs

@diffc.function
def identity(x: f64[4, 3]) -> f64[4, 3]:
    return x


@diffc.function
def scalar_identity(a: f64, x: f64[3]) -> f64:
    return a


@diffc.function
def constant(x: f64[3]) -> f64:
    return 2.0 * 3.0 + 0.5


@diffc.function
def double(x: f32[4, 3]) -> f32[4, 3]:
    return x * 2.0


def test_returning_an_input_returns_a_copy():
    x = np.arange(12.0).reshape(4, 3)
    out = identity(x)
    np.testing.assert_array_equal(out, x)
    assert not np.shares_memory(out, x)
    again = identity(x)
    assert not np.shares_memory(out, again)
    x[0, 0] = 99.0
    assert out[0, 0] == 0.0 and again[0, 0] == 0.0


def test_returning_a_scalar_input_or_a_constant():
    out = scalar_identity(0.25, np.zeros(3))
    assert type(out) is float and out == 0.25
    out = constant(np.zeros(3))
    assert type(out) is float and out == 6.5


def test_array_results_are_new_arrays():
    rng = np.random.default_rng(0)
    x1, x2 = rand(rng, (4, 3), f32), rand(rng, (4, 3), f32)
    out1 = double(x1)
    out2 = double(x2)
    assert out1.dtype == np.float32 and out1.shape == (4, 3) and out1.flags.c_contiguous
    assert out1.flags.writeable and out1.flags.owndata
    assert not np.shares_memory(out1, out2)
    assert not np.shares_memory(out1, x1) and not np.shares_memory(out2, x2)
    np.testing.assert_array_equal(out1, x1 * 2)
    np.testing.assert_array_equal(out2, x2 * 2)
    out2[:] = 0
    np.testing.assert_array_equal(double(x2), x2 * 2)


def test_functions_with_the_same_name_keep_their_own_code():
    def make(scale):
        @diffc.function
        def same(x: f64[3]) -> f64[3]:
            return x * scale
        return same.compile()

    first, second = make(2.0), make(3.0)
    x = np.array([1.0, 2.0, 3.0])
    np.testing.assert_array_equal(first(x), x * 2)
    np.testing.assert_array_equal(second(x), x * 3)
    np.testing.assert_array_equal(first(x), x * 2)
