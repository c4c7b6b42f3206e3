"""Reverse-mode AD: every reverse rule against finite differences, compiled gradients against
the oracle, whole networks against hand-written backpropagation, and the transforms' API.

Rule checks build `sum(w * prim(inputs))` (w random, so the cotangent is not all ones), take
`ad.vjp` of it and evaluate the gradient program with `eval_program` in float64; the reference
is central differences of the forward program, also through `eval_program` in float64.
"""
import math
from dataclasses import dataclass, field

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from models import BATCH_NETS, init, mlp_loss, mlp_loss32

import diffc
from diffc import SignatureError, TraceError, f32, f64, i32, i64, nn
from diffc.core.ir import Eqn, Lit, Program, Var, eval_program, verify
from diffc.core.primitive import PRIMITIVES, Primitive
from diffc.core.trace import bind
from diffc.core.types import ArrayType, bool_
from diffc.transforms.ad import vjp

RTOL = {f32: 1e-5, f64: 1e-12}
FD_EPS = 1e-5  # central differences in f64: truncation ~eps^2, rounding ~1e-16 / eps
FD_RTOL = 1e-6
LABEL_DTYPES = {"i32": i32, "i64": i64}
B = 3  # the size the symbolic dim "B" takes in rule checks


# ----------------------------------------------------------------------------- helpers

def rel_error(got, want) -> float:
    """max |got - want| relative to the larger of the two arrays' magnitudes (0 if both 0)."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"shape {got.shape}, expected {want.shape}"
    scale = max(np.max(np.abs(got), initial=0.0), np.max(np.abs(want), initial=0.0))
    return 0.0 if scale == 0 else float(np.max(np.abs(got - want)) / scale)


def finite_differences(program: Program, args: list, index: int, eps: float = FD_EPS):
    """d program / d args[index], element by element, by central differences in float64."""
    args = [np.array(a, np.float64) if np.asarray(a).dtype.kind == "f" else a for a in args]
    x = args[index]
    grad = np.zeros(x.shape)
    for i in np.ndindex(x.shape):
        plus, minus = x.copy(), x.copy()
        plus[i] += eps
        minus[i] -= eps
        (fp,) = eval_program(program, *args[:index], plus, *args[index + 1:], float64=True)
        (fm,) = eval_program(program, *args[:index], minus, *args[index + 1:], float64=True)
        grad[i] = (float(fp) - float(fm)) / (2 * eps)
    return grad


def np_softmax(z):
    e = np.exp(z - z.max(-1, keepdims=True))
    return e / e.sum(-1, keepdims=True)


# ----------------------------------------------------------------------------- the rule table

@dataclass(frozen=True)
class RuleCase:
    """Operands as (kind, shape) (kind: 'x' normal, 'away' normal but |x| >= 0.1, 'pos' in
    [0.5, 2], 'unit' in [0, 1], ('i32'|'i64', classes) labels, ('lit', value) a literal) and
    the primitive's params; shapes may use the symbolic dim 'B'."""

    inputs: tuple
    params: dict = field(default_factory=dict)


def _c(*inputs, **params) -> RuleCase:
    return RuleCase(inputs, params)


def _unary(kind="x"):
    return {"vec": _c((kind, (5,))), "mat": _c((kind, ("B", 4))), "rank0": _c((kind, ()))}


def _binary(right="x"):
    """Equal shapes, a rank-0 operand on either side (un-broadcast in ad.py), literals."""
    return {"same": _c(("x", ("B", 3)), (right, ("B", 3))),
            "rank0-right": _c(("x", (4,)), (right, ())),
            "rank0-left": _c(("x", ()), (right, (2, 3))),
            "rank0-both": _c(("x", ()), (right, ())),
            "lit-left": _c(("lit", 1.5), (right, (4,))),
            "lit-right": _c(("x", (4,)), ("lit", 2.5))}


def _bcast(shape_in, shape, dims):
    return _c(("x", shape_in), shape=shape, broadcast_dimensions=dims)


def _mm(a, b, ta, tb):
    return _c(("x", a), ("x", b), transpose_a=ta, transpose_b=tb)


RULE_CASES: dict[str, dict[str, RuleCase]] = {
    "neg": _unary(),
    "exp": _unary(),
    "log": _unary("pos"),
    "tanh": _unary(),
    "sigmoid": _unary(),
    "relu": _unary("away"),
    "step": _unary("away"),
    "pow": {f"y={y}": _c(("pos", (2, 3)), y=y) for y in (2, 3, 0.5, -1, 2.5, 0, 1, -2)}
    | {"rank0-y=3": _c(("pos", ()), y=3)},
    "add": _binary(),
    "sub": _binary(),
    "mul": _binary(),
    "div": _binary("pos"),
    "convert_element_type": {"to-f32": _c(("x", ("B", 4)), dtype=f32),
                             "to-f32-rank0": _c(("x", ()), dtype=f32),
                             "same": _c(("x", (5,)), dtype=f64)},
    "broadcast_in_dim": {"row": _bcast((3,), (2, 3), (1,)), "col": _bcast(("B",), ("B", 4), (0,)),
                         "scalar": _bcast((), (2, 3), ()),
                         "middle": _bcast((2, 3), (2, 4, 3), (0, 2))},
    "reshape": {"insert": _c(("x", (4,)), shape=(1, 4, 1)),
                "remove": _c(("x", ("B", 1, 3)), shape=("B", 3)),
                "scalar": _c(("x", (1, 1)), shape=())},
    "transpose": {"(1,0)": _c(("x", ("B", 4)), perm=(1, 0)),
                  "(2,0,1)": _c(("x", (2, 3, 4)), perm=(2, 0, 1)),
                  "(0,2,1)": _c(("x", (2, 3, 4)), perm=(0, 2, 1))},
    "reduce_sum": {"(0,)": _c(("x", ("B", 4)), axes=(0,)), "(1,)": _c(("x", ("B", 4)), axes=(1,)),
                   "(0,1)": _c(("x", (3, 4)), axes=(0, 1)),
                   "(0,2)": _c(("x", (2, 3, 4)), axes=(0, 2)),
                   "(1,)-3d": _c(("x", (2, 3, 4)), axes=(1,)), "vec": _c(("x", (5,)), axes=(0,))},
    "dim_size": {"static": _c(("x", (3, 4)), axis=1, dtype=f64),
                 "symbolic": _c(("x", ("B", 4)), axis=0, dtype=f64)},
    "fill": {"mat": _c(shape=(2, 3), dtype=f64, value=2.5)},
    "matmul": {"nn": _mm((3, 4), (4, 2), False, False), "nt": _mm(("B", 4), (5, 4), False, True),
               "tn": _mm((4, 3), (4, 2), True, False), "tt": _mm((4, 3), (2, 4), True, True)},
    "matvec": {"n": _c(("x", (3, 4)), ("x", (4,)), transpose_a=False),
               "t": _c(("x", (3, 4)), ("x", (3,)), transpose_a=True),
               "n-sym": _c(("x", ("B", 4)), ("x", (4,)), transpose_a=False)},
    "outer": {"vecs": _c(("x", (3,)), ("x", (4,)))},
    "softmax": {"vec": _c(("x", (5,))), "batch": _c(("x", ("B", 5))), "3d": _c(("x", (2, 3, 4)))},
    "log_softmax": {"vec": _c(("x", (5,))), "batch": _c(("x", ("B", 5))),
                    "3d": _c(("x", (2, 3, 4)))},
    "pick": {"i32-batch": _c(("x", ("B", 5)), (("i32", 5), ("B",))),
             "i64-single": _c(("x", (6,)), (("i64", 6), ())),
             "i64-3d": _c(("x", (2, 3, 4)), (("i64", 4), (2, 3)))},
    "unpick": {"i32-batch": _c(("x", ("B",)), (("i32", 5), ("B",)), shape=("B", 5)),
               "i64-single": _c(("x", ()), (("i64", 4), ()), shape=(4,))},
    "softmax_cross_entropy": {
        "i32-batch": _c(("x", ("B", 5)), (("i32", 5), ("B",))),
        "i64-batch": _c(("x", (4, 6)), (("i64", 6), (4,))),
        "i64-single": _c(("x", (6,)), (("i64", 6), ())),
        "targets-batch": _c(("x", ("B", 5)), ("unit", ("B", 5))),  # rows not summing to 1
        "targets-single": _c(("x", (4,)), ("unit", (4,))),
    },
}
RULE_CASES["reshape"] |= {"merge": _c(("x", ("B", 4, 3)), shape=("B", 12)),
                          "split": _c(("x", (6,)), shape=(3, 2))}
RULE_CASES |= {  # shape primitives
    "slice": {"strided": _c(("x", ("B", 5)), start=(0, 1), step=(1, 2), shape=("B", 2)),
              "reversed": _c(("x", (6,)), start=(5,), step=(-2,), shape=(3,)),
              "scalar": _c(("x", ("B", 4)), start=(-1, 2), step=(0, 0), shape=())},
    "unslice": {"strided": _c(("x", (2, 2)), shape=(2, 5), start=(0, 1), step=(1, 2)),
                "scalar": _c(("x", ()), shape=(3, 4), start=(2, 1), step=(0, 0))},
    "concatenate": {"two": _c(("x", ("B", 2)), ("x", ("B", 3)), axis=1),
                    "three": _c(("x", (2, 3)), ("x", (1, 3)), ("x", (2, 3)), axis=0)},
    "gather": {"rows": _c(("x", (5, 3)), (("i32", 5), ("B", 2)), axis=0),
               "columns": _c(("x", ("B", 4)), (("i64", 4), (6,)), axis=1),
               "one": _c(("x", (6,)), (("i32", 6), ()), axis=0)},
    "scatter_add": {"rows": _c(("x", ("B", 2, 3)), (("i32", 5), ("B", 2)), shape=(5, 3),
                               axis=0)},
}

def _reduce(*axes_cases):
    return {f"{shape}-{axes}": _c((kind, shape), axes=axes) for kind, shape, axes in axes_cases}


RULE_CASES |= {  # the language
    "abs": _unary("away"),
    "sqrt": _unary("pos"),
    "log1p": _unary("pos"),
    "expm1": _unary(),
    "sin": _unary(),
    "cos": _unary(),
    "softplus": _unary(),
    "erfc": _unary(),
    "maximum": _binary(),
    "minimum": _binary(),
    "select": {"same": _c(("mask", ("B", 3)), ("x", ("B", 3)), ("x", ("B", 3))),
               "rank0": _c(("mask", (4,)), ("x", ()), ("x", (4,))),
               "lit": _c(("mask", (2, 3)), ("x", (2, 3)), ("lit", 0.5))},
    "convert_element_type": RULE_CASES["convert_element_type"] | {
        "from-mask": _c(("mask", ("B", 4)), dtype=f64), "from-i32": _c((("i32", 9), (5,)),
                                                                   dtype=f64)},
    "reduce_max": _reduce(("x", ("B", 4), (1,)), ("x", ("B", 4), (0,)),
                          ("x", (2, 3, 4), (0, 2)), ("x", (5,), (0,))),
    "reduce_min": _reduce(("x", ("B", 4), (1,)), ("x", (2, 3, 4), (1,))),
    "logsumexp": _reduce(("x", ("B", 4), (1,)), ("x", ("B", 4), (0,)), ("x", (2, 3, 4), (0, 2)),
                         ("x", (5,), (0,))),
}
NOT_DIFFERENTIABLE = {"softmax_cross_entropy_grad", "fused", "sgd_outer", "update_matvec",
                      "lt", "le", "gt", "ge", "eq", "ne", "argmax", "argmin", "logical_and",
                      "logical_or", "logical_xor", "logical_not"}
RULE_IDS = [(name, key) for name, cases in RULE_CASES.items() for key in cases]
WORST: dict[str, float] = {}  # primitive -> worst relative gradient error seen (f64)


def _resolve(shape: tuple) -> tuple:
    return tuple(B if d == "B" else d for d in shape)


def _operand(rng, kind, shape):
    shape = _resolve(shape)
    if kind[0] in ("i32", "i64"):
        return rng.integers(0, kind[1], shape).astype(LABEL_DTYPES[kind[0]].np_dtype)
    return {"x": lambda: rng.standard_normal(shape),
            "mask": lambda: rng.random(shape) < 0.5,
            "away": lambda: rng.choice([-1, 1], shape) * rng.uniform(0.1, 2.0, shape),
            "pos": lambda: rng.uniform(0.5, 2.0, shape),
            "unit": lambda: rng.uniform(0.0, 1.0, shape)}[kind]()


def build_rule_program(name: str, case: RuleCase) -> Program:
    """Inputs: the operand vars, then w; output: sum(w * prim(operands))."""
    atoms = []
    for kind, shape in case.inputs:
        if kind == "lit":
            atoms.append(Lit(shape, ArrayType(f64, ())))
        elif isinstance(kind, tuple):
            atoms.append(Var(ArrayType(LABEL_DTYPES[kind[0]], shape)))
        elif kind == "mask":
            atoms.append(Var(ArrayType(bool_, shape)))
        else:
            atoms.append(Var(ArrayType(f64, shape)))
    prim = PRIMITIVES[name]
    out = Var(prim.shape_rule(*[a.type for a in atoms], **case.params))
    w, wy = Var(out.type), Var(out.type)
    eqns = [Eqn(prim, tuple(atoms), dict(case.params), (out,)),
            Eqn(PRIMITIVES["mul"], (w, out), {}, (wy,))]
    loss = wy
    if out.type.ndim:
        loss = Var(ArrayType(out.type.dtype, ()))
        eqns.append(Eqn(PRIMITIVES["reduce_sum"], (wy,), {"axes": tuple(range(out.type.ndim))},
                        (loss,)))
    inputs = tuple(a for a in atoms if isinstance(a, Var)) + (w,)
    return Program(inputs, eqns, (loss,))


def rule_arguments(case: RuleCase, program: Program, seed: int) -> list:
    """Random operands, then w with 0.5 <= |w| <= 1.5 and random signs."""
    rng = np.random.default_rng(seed)
    args = [_operand(rng, kind, shape) for kind, shape in case.inputs if kind != "lit"]
    shape = _resolve(program.inputs[-1].type.shape)
    return args + [rng.uniform(0.5, 1.5, shape) * rng.choice([-1, 1], shape)]


@pytest.fixture(scope="module", autouse=True)
def print_worst_errors():
    """After the module: the worst relative gradient error per primitive (`pytest -s`)."""
    yield
    if WORST:
        print("\nworst relative gradient error per primitive (f64, vjp vs central differences):")
        for name in sorted(WORST):
            print(f"  {name:>22}: {WORST[name]:.2e}")


def test_rule_table_covers_every_primitive():
    with_rule = {n for n, p in PRIMITIVES.items() if p.vjp is not None}
    without = {n for n, p in PRIMITIVES.items() if p.vjp is None}
    assert set(RULE_CASES) == with_rule
    assert without == NOT_DIFFERENTIABLE


@pytest.mark.parametrize("name,key", RULE_IDS, ids=[f"{n}-{k}" for n, k in RULE_IDS])
def test_reverse_rule_matches_finite_differences(name, key):
    """vjp of sum(w * prim(x)) equals central differences, for every float input (and w)."""
    case = RULE_CASES[name][key]
    program = build_rule_program(name, case)
    verify(program)
    wrt = [i for i, v in enumerate(program.inputs) if v.type.dtype.is_float]
    backward = vjp(program, wrt)
    verify(backward)
    args = rule_arguments(case, program, seed=RULE_IDS.index((name, key)))
    value, *grads = eval_program(backward, *args, float64=True)
    (want_value,) = eval_program(program, *args, float64=True)
    assert value == pytest.approx(float(want_value), rel=1e-14, abs=1e-300)
    for i, g in zip(wrt, grads, strict=True):
        err = rel_error(g, finite_differences(program, args, i))
        if i < len(wrt) - 1 or len(wrt) == 1:  # w's gradient is the value: not the rule's
            WORST[name] = max(WORST.get(name, 0.0), err)
        assert err < FD_RTOL, f"{name}[{key}]: gradient of input {i} off by {err:.2e}"


def test_missing_reverse_rule_is_named():
    """Differentiating through a primitive without a rule names it."""
    x, y, s, inner, e = Var(f64[3]), Var(f64[3]), Var(f64[()]), Var(f64[3]), Var(f64[3])
    body = Program((inner,), [Eqn(PRIMITIVES["exp"], (inner,), {}, (e,))], (e,))
    p = Program((x,), [Eqn(PRIMITIVES["fused"], (x,), {"body": body}, (y,)),
                       Eqn(PRIMITIVES["reduce_sum"], (y,), {"axes": (0,)}, (s,))], (s,))
    verify(p)
    with pytest.raises(TraceError, match="'fused'"):
        vjp(p, [0])


def test_fan_out_cotangents_are_summed():
    """x used three times: d/dx sum(x * x + x) = 2x + 1."""
    x, sq, s, t = Var(f64[4]), Var(f64[4]), Var(f64[4]), Var(f64[()])
    p = Program((x,), [Eqn(PRIMITIVES["mul"], (x, x), {}, (sq,)),
                       Eqn(PRIMITIVES["add"], (sq, x), {}, (s,)),
                       Eqn(PRIMITIVES["reduce_sum"], (s,), {"axes": (0,)}, (t,))], (t,))
    xv = np.array([0.5, -1.0, 2.0, 3.0])
    _, g = eval_program(vjp(p, [0]), xv)
    np.testing.assert_array_equal(g, 2 * xv + 1)


# ----------------------------------------------------------------------------- compiled vs oracle

def _functions(dt):
    """Functions whose compiled gradients are compared with the oracle, for one dtype."""

    def mlp(W1: dt[16, 12], b1: dt[16], W2: dt[5, 16], b2: dt[5], x: dt[12], y: dt[5]) -> dt:
        h = nn.relu(nn.dense(W1, x, b1))
        return nn.cross_entropy(nn.softmax(nn.dense(W2, h, b2)), y)

    def batched(W1: dt[9, 7], b1: dt[9], W2: dt[4, 9], b2: dt[4], X: dt["B", 7],
                labels: i32["B"]) -> dt:
        h = nn.tanh(nn.dense(W1, X, b1))
        return nn.softmax_cross_entropy(nn.dense(W2, h, b2), labels)

    def pointwise(x: dt[6], z: dt[6], s: dt) -> dt:
        u = nn.exp(-x * x) + nn.sigmoid(x) * s - nn.log(1 + z * z) / (2 + nn.tanh(z))
        return nn.sum(u ** 3 + (1 + z * z) ** 0.5 - 0.5 / (1.5 + nn.sigmoid(x * s)))

    def rows(X: dt["B", 5], W: dt[3, 5], T: dt["B", 3]) -> dt:
        Z = X @ W.T
        loss = nn.cross_entropy(nn.softmax(Z), T)
        return loss + nn.mean(nn.log_softmax(Z).sum(0) ** 2) + nn.sum(X.mean(0) * W.sum(0))

    def regression(X: dt["B", 4], b: dt[4], t: dt["B", 4], scale: dt) -> dt:
        return nn.mse(X * scale + b, t) + nn.mean(nn.relu(X - b))

    return {f.__name__: diffc.function(f, name=f"{f.__name__}_{dt}") for f in
            (mlp, batched, pointwise, rows, regression)}


def _arguments(f, rng, batch=5) -> list:
    """Random arguments for f's signature; symbolic dims take `batch`."""
    args = []
    for p in f.signature.params:
        shape = tuple(batch if isinstance(d, str) else d for d in p.type.shape)
        if p.type.dtype.is_float:
            a = rng.uniform(0.0, 1.0, shape) if p.name in ("y", "T") else \
                rng.standard_normal(shape)
            args.append(a.astype(p.type.dtype.np_dtype) if shape else float(a))
        else:
            classes = f.signature.param("b2").type.shape[0]  # labels index the logits
            args.append(rng.integers(0, classes, shape).astype(p.type.dtype.np_dtype))
    return args


FUNCTIONS = {dt: _functions(dt) for dt in (f32, f64)}


@pytest.mark.parametrize("dt", [f32, f64], ids=str)
@pytest.mark.parametrize("fname", list(FUNCTIONS[f64]))
def test_compiled_gradients_match_the_oracle(fname, dt):
    """value_and_grad's native code equals eval_program of its own backward program."""
    f = FUNCTIONS[dt][fname]
    vg = diffc.value_and_grad(f)
    args = _arguments(f, np.random.default_rng(1))
    value, grads = vg(*args)
    want = eval_program(vg.program, *args, float64=True)
    got = [value, *grads]
    assert len(got) == len(want) == 1 + len(vg.wrt)
    for name, g, w in zip(("value",) + vg.wrt, got, want, strict=True):
        assert np.asarray(g).dtype == dt.np_dtype or isinstance(g, float)
        err = rel_error(g, w)
        assert err <= RTOL[dt], f"{fname} {name}: relative error {err:.2e}"


# ----------------------------------------------------------------------------- whole networks

def np_mlp_grads(W1, b1, W2, b2, x, y):
    """Hand-derived backprop of cross_entropy(softmax(W2 relu(W1 x + b1) + b2), y), float64."""
    W1, b1, W2, b2, x, y = (np.asarray(a, np.float64) for a in (W1, b1, W2, b2, x, y))
    a1 = W1 @ x + b1
    h = np.maximum(a1, 0.0)
    p = np_softmax(W2 @ h + b2)
    dz = p * y.sum() - y  # = p - y for a one-hot y
    dh = W2.T @ dz
    da1 = dh * (a1 > 0)
    return np.outer(da1, x), da1, np.outer(dz, h), dz


def np_batch_grads(W1, b1, W2, b2, W3, b3, X, labels):
    """The batch mean of softmax cross-entropy and its hand-derived backprop (W: (out, in))."""
    W1, b1, W2, b2, W3, b3, X = (np.asarray(a, np.float64) for a in (W1, b1, W2, b2, W3, b3, X))
    a1 = X @ W1.T + b1
    h1 = np.maximum(a1, 0.0)
    a2 = h1 @ W2.T + b2
    h2 = np.maximum(a2, 0.0)
    p = np_softmax(h2 @ W3.T + b3)
    loss = -np.log(p[np.arange(len(labels)), labels]).mean()
    dz = (p - np.eye(10)[labels]) / len(labels)
    grads = [dz.T @ h2, dz.sum(0)]
    dz = (dz @ W3) * (a2 > 0)
    grads = [dz.T @ h1, dz.sum(0)] + grads
    dz = (dz @ W2) * (a1 > 0)
    return loss, [dz.T @ X, dz.sum(0)] + grads


@pytest.mark.parametrize("fn,dt", [(mlp_loss, f64), (mlp_loss32, f32)], ids=["f64", "f32"])
def test_mlp_gradients_vs_hand_backprop(fn, dt):
    rng = np.random.default_rng(2)
    params = init(rng, (784, 128, 10), dt.np_dtype)
    x = rng.random(784).astype(dt.np_dtype)
    y = np.eye(10, dtype=dt.np_dtype)[7]
    grads = diffc.grad(fn, ["W1", "b1", "W2", "b2"])(*params, x, y)
    for name, g, want in zip(("W1", "b1", "W2", "b2"), grads, np_mlp_grads(*params, x, y),
                             strict=True):
        assert g.dtype == dt.np_dtype and g.shape == want.shape
        err = rel_error(g, want)
        assert err <= RTOL[dt], f"d{name}: relative error {err:.2e}"


@pytest.mark.parametrize("batch", [1, 5, 64])
@pytest.mark.parametrize("dt", [f32, f64], ids=str)
def test_batched_network_gradients_vs_hand_backprop(dt, batch):
    f = BATCH_NETS[dt]
    rng = np.random.default_rng(batch)
    params = init(rng, (784, 128, 64, 10), dt.np_dtype)
    X = rng.random((batch, 784)).astype(dt.np_dtype)
    labels = rng.integers(0, 10, batch).astype(np.int32)
    names = ("W1", "b1", "W2", "b2", "W3", "b3")
    loss, grads = diffc.value_and_grad(f, list(names))(*params, X, labels)
    want_loss, want = np_batch_grads(*params, X, labels)
    assert type(loss) is float and rel_error(loss, want_loss) <= RTOL[dt]
    for name, g, w in zip(names, grads, want, strict=True):
        assert g.dtype == dt.np_dtype and g.shape == w.shape
        err = rel_error(g, w)
        assert err <= RTOL[dt], f"d{name}: relative error {err:.2e} (B={batch})"


# ----------------------------------------------------------------------------- the API

@diffc.function
def affine(W: f64[3, 4], b: f64[3], x: f64[4], k: i32, unused: f64[2]) -> f64:
    return nn.sum(nn.tanh(nn.dense(W, x, b))) + nn.sum(x * x) * 0.5


def _affine_args():
    rng = np.random.default_rng(3)
    return [rng.standard_normal((3, 4)), rng.standard_normal(3), rng.standard_normal(4), 2,
            rng.standard_normal(2)]


def _affine_grads(W, b, x, k, unused):
    """d/dW, d/db, d/dx of sum(tanh(W x + b)) + |x|^2 / 2, in numpy."""
    d = 1 - np.tanh(W @ x + b) ** 2
    return np.outer(d, x), d, W.T @ d + x


def test_grad_of_one_name_is_one_array():
    args = _affine_args()
    dW = diffc.grad(affine, "W")(*args)
    assert isinstance(dW, np.ndarray) and dW.shape == (3, 4)
    np.testing.assert_allclose(dW, _affine_grads(*args)[0], rtol=1e-12)


def test_grad_of_names_is_a_tuple_in_wrt_order():
    args = _affine_args()
    db, dW = diffc.grad(affine, ["b", "W"])(*args)
    want_dW, want_db, _ = _affine_grads(*args)
    np.testing.assert_allclose(db, want_db, rtol=1e-12)
    np.testing.assert_allclose(dW, want_dW, rtol=1e-12)
    (only,) = diffc.grad(affine, ["x"])(*args)
    np.testing.assert_allclose(only, _affine_grads(*args)[2], rtol=1e-12)


def test_default_wrt_is_every_float_parameter():
    args = _affine_args()
    g = diffc.grad(affine)
    assert g.wrt == ("W", "b", "x", "unused")
    dW, db, dx, dunused = g(*args)
    for got, want in zip((dW, db, dx), _affine_grads(*args), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_array_equal(dunused, np.zeros(2))


def test_value_and_grad_returns_a_float_and_the_gradients():
    args = _affine_args()
    value, (dx, dW) = diffc.value_and_grad(affine, ["x", "W"])(*args)
    assert type(value) is float
    assert value == pytest.approx(affine(*args), rel=1e-14)
    W, b, x = args[:3]
    assert value == pytest.approx(np.tanh(W @ x + b).sum() + 0.5 * x @ x, rel=1e-12)
    np.testing.assert_allclose(dW, _affine_grads(*args)[0], rtol=1e-12)
    np.testing.assert_allclose(dx, _affine_grads(*args)[2], rtol=1e-12)
    value1, db = diffc.value_and_grad(affine, "b")(*args)
    assert value1 == value and db.shape == (3,)


@pytest.mark.parametrize("wrt", ["k", ["W", "k"]])
def test_integer_parameter_in_wrt_is_refused(wrt):
    with pytest.raises(SignatureError, match="'k'"):
        diffc.grad(affine, wrt)


@pytest.mark.parametrize("transform", [diffc.grad, diffc.value_and_grad])
def test_unknown_name_in_wrt_is_refused(transform):
    with pytest.raises(SignatureError, match="'nope'"):
        transform(affine, ["W", "nope"])


def test_unused_parameter_gets_a_zero_gradient():
    args = _affine_args()
    args[4] = np.array([1e300, -7.0])
    dunused = diffc.grad(affine, "unused")(*args)
    assert dunused.shape == (2,) and dunused.dtype == np.float64
    np.testing.assert_array_equal(dunused, np.zeros(2))


def test_value_and_grad_ir_holds_forward_and_backward():
    text = diffc.value_and_grad(affine, ["W", "b"]).ir
    lines = text.splitlines()
    forward = affine.ir.splitlines()[1:-1]  # the equations, without the lambda and `in` lines
    assert [line.strip() for line in lines[1:1 + len(forward)]] == \
        [line.strip() for line in forward]
    backward = " ".join(lines[1 + len(forward):-1])
    assert "fill[dtype=f64 shape=() value=1.0]" in backward  # the seed
    assert "outer" in backward  # the weight gradient of the matrix-vector product
    assert lines[-1].count(",") == 2  # ( value, dW, db )


def test_scalar_parameter_gradient():
    @diffc.function
    def scaled(s: f64, x: f64[4]) -> f64:
        return nn.sum(nn.sigmoid(s * x)) + s * s * s

    x = np.array([0.5, -1.0, 2.0, 0.25])
    ds = diffc.grad(scaled, "s")(0.7, x)
    sig = 1 / (1 + np.exp(-0.7 * x))
    assert isinstance(ds, float)
    assert ds == pytest.approx(np.sum(sig * (1 - sig) * x) + 3 * 0.7 ** 2, rel=1e-12)


# ----------------------------------------------------------------------------- golden backward IR

@diffc.function
def logreg(w: f64[3], b: f64, x: f64[3], y: f64) -> f64:
    p = nn.sigmoid(x @ w + b)
    return -(y * nn.log(p) + (1 - y) * nn.log(1 - p))


# Backward lines (after the forward e..p): q = dL/dp = 1 (seed); r = d/do = -q (p = -o);
# s = d/dm = r * k (n = k * m, k = 1 - y); t = d/dl = s / l (m = log l); u = -t, the part of
# d/dh through l = 1 - h; v = d/di = r * d (j = y * i); w = v / h, the part through i = log h;
# x = d/dh = u + w; y, z, ba = d/dg = x * h * (1 - h) (sigmoid) = d/db (g = f + b); bb = d/de,
# ba broadcast over the sum f = sum(e); bc = d/dw = bb * x (e = x * w). d/dx and d/dy are not
# asked for: their equations are gone.
LOGREG_BACKWARD = """\
{ lambda a:f64[3] b:f64 c:f64[3] d:f64 .
  let e:f64[3] = mul c a
      f:f64 = reduce_sum[axes=(0,)] e
      g:f64 = add f b
      h:f64 = sigmoid g
      i:f64 = log h
      j:f64 = mul d i
      k:f64 = sub 1.0 d
      l:f64 = sub 1.0 h
      m:f64 = log l
      n:f64 = mul k m
      o:f64 = add j n
      p:f64 = neg o
      q:f64 = fill[dtype=f64 shape=() value=1.0]
      r:f64 = neg q
      s:f64 = mul r k
      t:f64 = div s l
      u:f64 = neg t
      v:f64 = mul r d
      w:f64 = div v h
      x:f64 = add u w
      y:f64 = sub 1.0 h
      z:f64 = mul h y
      ba:f64 = mul x z
      bb:f64[3] = broadcast_in_dim[broadcast_dimensions=() shape=(3,)] ba
      bc:f64[3] = mul bb c
  in ( p, bc, ba ) }"""


def test_golden_logistic_regression_backward():
    vg = diffc.value_and_grad(logreg, ["w", "b"])
    assert vg.ir == LOGREG_BACKWARD
    verify(vg.program)
    w, b, x, y = np.array([0.1, -0.2, 0.3]), 0.5, np.array([1.0, 2.0, -3.0]), 1.0
    value, (dw, db) = vg(w, b, x, y)
    p = 1 / (1 + np.exp(-(x @ w + b)))
    assert value == pytest.approx(-np.log(p), rel=1e-12)
    np.testing.assert_allclose(dw, (p - y) * x, rtol=1e-12)  # the textbook gradient
    assert db == pytest.approx(p - y, rel=1e-12)


# ----------------------------------------------------------------------------- check_grad

def test_check_grad_reports_small_errors_for_correct_gradients():
    args = _affine_args()
    report = diffc.check_grad(affine, *args)
    assert set(report.errors) == {"W", "b", "x", "unused"}
    assert max(report.errors.values()) < 1e-6
    assert report.worst == float(report) == max(report.errors.values())
    for name in report.errors:
        assert name in str(report)


def _affine_with_tanh_rule(vjp):
    """`affine` with tanh replaced by a primitive computing tanh whose reverse rule is vjp."""
    tanh = PRIMITIVES["tanh"]
    broken = Primitive("tanh", tanh.impl, tanh.shape_rule, vjp, elementwise=True)

    def f(W: f64[3, 4], b: f64[3], x: f64[4], k: i32, unused: f64[2]) -> f64:
        return nn.sum(bind(broken, nn.dense(W, x, b))) + nn.sum(x * x) * 0.5
    return diffc.function(f, name=f"affine_{id(vjp)}")


def test_check_grad_catches_a_wrong_rule():
    """With tanh's rule broken (1 + t^2 for 1 - t^2), the parameters behind tanh fail."""
    f = _affine_with_tanh_rule(lambda g, x, *, out: (g * (1 + out * out),))
    report = diffc.check_grad(f, *_affine_args(), wrt=["W", "b", "x"])
    assert report.errors["W"] > 0.1 and report.errors["b"] > 0.1
    assert report.worst == max(report.errors.values())


def test_check_grad_reports_nan_gradients():
    """A nan gradient is the worst error there is, not one that max() skips."""
    f = _affine_with_tanh_rule(lambda g, x, *, out: (g * (out - out) / 0.0,))
    report = diffc.check_grad(f, *_affine_args(), wrt=["W", "b", "x"])
    assert math.isnan(report.errors["W"]) and math.isnan(report)
    assert not report < 1e-6


# ----------------------------------------------------------------------------- random programs

UNARY = ("exp", "tanh", "sigmoid", "relu", "square", "log1p2", "softmax", "dense")
BINARY = ("add", "sub", "mul", "div")


def _apply(op: str, h, x, W, b, kinks: list):
    """One step of a random composition, on traced values or (eagerly) on numpy arrays."""
    if op == "relu":
        kinks.append(h)
        return nn.relu(h)
    return {"exp": lambda: nn.exp(nn.tanh(h)), "tanh": lambda: nn.tanh(h),
            "sigmoid": lambda: nn.sigmoid(h), "square": lambda: h ** 2,
            "log1p2": lambda: nn.log(1 + h * h), "softmax": lambda: nn.softmax(h),
            "dense": lambda: nn.dense(W, h, b), "add": lambda: h + x, "sub": lambda: x - h,
            "mul": lambda: h * x, "div": lambda: h / (1.5 + nn.tanh(x))}[op]()


def _composition(ops: tuple):
    """`f(x, W, b, c)`: the ops applied in turn to x, then sum(c * h) (annotated by the caller)."""
    def f(x, W, b, c):
        h = x
        for op in ops:
            h = _apply(op, h, x, W, b, [])
        return nn.sum(c * h)
    return f


@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow])
@given(ops=st.lists(st.sampled_from(UNARY + BINARY), min_size=2, max_size=5),
       rows=st.sampled_from([None, 1, 3]), n=st.integers(1, 4), seed=st.integers(0, 2 ** 16))
def test_random_compositions_match_finite_differences(ops, rows, n, seed):
    """Compiled gradients of random elementwise/dense/softmax chains equal central differences."""
    shape = (n,) if rows is None else (rows, n)
    rng = np.random.default_rng(seed)
    args = [rng.standard_normal(shape), rng.standard_normal((n, n)), rng.standard_normal(n),
            rng.standard_normal(shape)]
    kinks: list = []
    h = args[0]
    for op in ops:  # eagerly, to keep relu's inputs away from its kink
        h = _apply(op, h, *args[:3], kinks)
    assume(all(np.min(np.abs(k)) > 1e-3 for k in kinks))
    f = _composition(tuple(ops))
    f.__annotations__ = {"x": f64[shape], "W": f64[n, n], "b": f64[n], "c": f64[shape],
                         "return": f64}
    fn = diffc.function(f, name="composition")
    value, grads = diffc.value_and_grad(fn)(*args)
    assert value == pytest.approx(float(np.sum(args[3] * h)), rel=1e-12, abs=1e-300)
    for i, g in enumerate(grads):
        err = rel_error(g, finite_differences(fn.program, args, i))
        assert err < FD_RTOL, f"{ops} on {shape}: input {i} off by {err:.2e}"
