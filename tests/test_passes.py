"""IR passes: each keeps programs valid and equal under eval_program, and does its job."""
import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from models import compile_program

import diffc
from diffc import f64, i32, nn
from diffc.compiler.pipeline import optimize
from diffc.core.elementwise import elementwise
from diffc.core.ir import Program, Var, eval_program, verify
from diffc.core.primitive import PRIMITIVES
from diffc.core.trace import TraceContext
from diffc.core.tracer import Tracer, trace_program
from diffc.core.types import ArrayType, Param, Signature
from diffc.passes import cse, dce, fold_transposes, fuse, stable_forms
from diffc.passes.memory import END, plan_memory

PASSES = {"stable_forms": stable_forms, "fold_transposes": fold_transposes, "cse": cse,
          "dce": dce, "fuse": fuse, "optimize": optimize}
B = "B"  # a symbolic dim
BATCH = 4  # the size given to symbolic dims
CLASSES = 3  # every integer label below is a class of 3


# ----------------------------------------------------------------------------- programs

@diffc.function
def mlp(W1: f64[6, 4], b1: f64[6], W2: f64[3, 6], b2: f64[3], x: f64[4], y: f64[3]) -> f64:
    h = nn.relu(nn.dense(W1, x, b1))
    return nn.cross_entropy(nn.softmax(nn.dense(W2, h, b2)), y)


@diffc.function
def mlp_batch(W1: f64[6, 4], b1: f64[6], W2: f64[3, 6], b2: f64[3], x: f64[B, 4],
              y: i32[B]) -> f64:
    h = nn.tanh(nn.dense(W1, x, b1))
    return nn.softmax_cross_entropy(nn.dense(W2, h, b2), y)


@diffc.function
def redundant(x: f64[4, 3], w: f64[3]) -> f64:
    a, b = nn.exp(x), nn.exp(x)
    unused = nn.sigmoid(x) * 3.0  # noqa: F841 - dead code for dce
    return nn.sum(nn.tanh(a * b + w) - x * 2.0) + nn.mean(nn.log(nn.softmax(x * w)))


@diffc.function
def dense_layer(W: f64[4, 3], b: f64[4], x: f64[B, 3], y: f64[B, 4]) -> f64:
    return nn.mse(nn.dense(W, x, b), y)


@diffc.function
def transposed(A: f64[B, 4], W: f64[3, 4], V: f64[5, 3]) -> f64:
    h = nn.tanh(A @ W.T)  # B x 3
    z = (V @ h.T).T  # B x 5, through two transposes
    return nn.sum(z * z) + nn.sum(W.T @ V.T)


@diffc.function
def softmax_chain(x: f64[6]) -> f64:
    for _ in range(6):
        x = nn.softmax(x)
    return nn.sum(x * x)


@diffc.function
def language(W: f64[3, 4], x: f64[B, 4], t: f64[B, 3]) -> f64:
    h = nn.where(x > 0, x, 0.1 * x)  # masks in fused loops, a GEMM epilogue and the backward
    z = nn.leaky_relu(nn.dense(W, h))
    r = abs(z - t)
    return nn.mean(nn.where(r < 1, r * r, r)) + nn.sum(nn.logsumexp(z, -1)) + z.max() + \
        nn.sum(nn.clip(nn.sin(x), -0.5, 0.5)) + nn.sum(nn.astype(nn.argmax(z, 1), f64))


def _cases():
    """(name, program, number of leading inputs that may be negative; the rest are > 0)."""
    out = []
    for f in (mlp, mlp_batch, redundant, dense_layer, transposed, softmax_chain, language):
        out.append((f.name, f.program, len(f.program.inputs)))
        out.append((f"vg_{f.name}", diffc.value_and_grad(f).program, len(f.program.inputs)))
    optimizers = [diffc.SGD(lr=0.1), diffc.SGD(lr=0.1, momentum=0.9, nesterov=True,
                                              weight_decay=0.01), diffc.Adam(weight_decay=0.1)]
    for f, params in ((mlp, ["W1", "W2", "b2"]), (mlp_batch, ["W1", "b1", "W2", "b2"]),
                      (dense_layer, ["W", "b"]), (language, ["W"])):
        for k, opt in enumerate(optimizers):
            step = diffc.train_step(f, params, opt)
            out.append((f"step{k}_{f.name}", step.program, len(f.program.inputs)))
    return out


CASES = _cases()


def make_args(program, signed, seed=0):
    """Random arguments: floats normal (uniform in (0.5, 1.5) from input `signed` on: lr, t and
    optimizer state), integers labels of CLASSES classes, symbolic dims of size BATCH."""
    rng = np.random.default_rng(seed)
    args = []
    for k, v in enumerate(program.inputs):
        shape = tuple(BATCH if isinstance(d, str) else d for d in v.type.shape)
        if not v.type.dtype.is_float:
            a = rng.integers(0, CLASSES, shape)
        elif k < signed:
            a = rng.normal(0, 1, shape)
        else:
            a = rng.uniform(0.5, 1.5, shape)
        args.append(np.asarray(a, v.type.dtype.np_dtype))
    return args


def run(program, args):
    """Outputs and the arguments after the updates, evaluated on copies of args."""
    args = [a.copy() for a in args]
    with np.errstate(all="ignore"):
        outs = eval_program(program, *args)
    return outs, args


def assert_same_results(before, after, args):
    (outs_a, args_a), (outs_b, args_b) = run(before, args), run(after, args)
    assert len(outs_a) == len(outs_b)
    for a, b in zip(outs_a + args_a, outs_b + args_b, strict=True):
        np.testing.assert_allclose(b, a, rtol=1e-12, atol=1e-12)


def prim_names(program):
    return [e.prim.name for e in program.eqns]


def fused_bodies(program):
    return [e.params["body"] for e in program.eqns if e.prim.name == "fused"]


def assert_matmul_heads_epilogues_only(program):
    """A fused body holds a matmul only as its first equation, followed by primitives
    flagged `epilogue`."""
    for body in fused_bodies(program):
        names = prim_names(body)
        assert "matmul" not in names[1:], names
        if names[0] == "matmul":
            assert all(e.prim.epilogue for e in body.eqns[1:]), names


def assert_valid_plan(program, plan):
    """Every var has a home; values sharing a slot have its type and disjoint live ranges; a
    value in an input's buffer is that input or its in-place update with no later read. A view
    (a reshape in its input's buffer) is not a value of its own: its reads are its root's."""
    root = {}  # view var id -> the id of the var whose buffer it reads
    for e in program.eqns:
        if e.prim.view and plan.home[id(e.outputs[0])] == plan.home[id(e.inputs[0])]:
            root[id(e.outputs[0])] = root.get(id(e.inputs[0]), id(e.inputs[0]))
    owner = lambda a: root.get(id(a), id(a))  # noqa: E731
    defined, last = {}, {}
    for v in program.inputs:
        defined[id(v)] = -1
    for i, e in enumerate(program.eqns):
        defined.update((id(v), i) for v in e.outputs)
        last.update((owner(a), i) for a in e.inputs if isinstance(a, Var))
    last.update((id(a), END) for a in program.outputs if isinstance(a, Var))
    last.update((id(v), END) for _, v in program.updates if isinstance(v, Var))
    assert set(defined) <= set(plan.home)
    by_slot = {}
    for e in program.eqns:
        for v in e.outputs:
            kind, k = plan.home[id(v)]
            if kind == "slot" and id(v) not in root:
                assert plan.slots[k] == v.type
                by_slot.setdefault(k, []).append((defined[id(v)], last.get(id(v), defined[id(v)])))
    for ranges in by_slot.values():
        ranges.sort()
        for (_, end), (start, _) in itertools.pairwise(ranges):
            assert end < start, ranges
    update_of = {id(new): p for p, new in program.updates}
    assert not root.keys() & ({id(a) for a in program.outputs} | update_of.keys())
    for i, e in enumerate(program.eqns):
        for v in e.outputs:
            kind, k = plan.home[id(v)]
            if kind != "input" or id(v) in root:
                continue
            param = program.inputs[k]
            assert update_of.get(id(v)) is param and id(v) in plan.in_place
            later = [j for j, o in enumerate(program.eqns)
                     if j > i and id(param) in {owner(a) for a in o.inputs}]
            assert not later


# ----------------------------------------------------------------------------- every pass

@pytest.mark.parametrize("pass_name", list(PASSES))
@pytest.mark.parametrize("name, program, signed", CASES, ids=[c[0] for c in CASES])
def test_pass_preserves_validity_and_results(name, program, signed, pass_name):
    after = PASSES[pass_name](program)
    verify(after)
    assert after.inputs == program.inputs
    assert [p for p, _ in after.updates] == [p for p, _ in program.updates]
    assert_same_results(program, after, make_args(program, signed))
    assert_matmul_heads_epilogues_only(after)


@pytest.mark.parametrize("name, program, signed", CASES, ids=[c[0] for c in CASES])
def test_memory_plan_of_optimized_programs_is_valid(name, program, signed):
    optimized = optimize(program)
    assert_valid_plan(optimized, plan_memory(optimized))


# ----------------------------------------------------------------------------- transposes

def test_fold_transposes_reads_matmul_operands_where_they_lie():
    after = dce(fold_transposes(transposed.program))
    flags = [(e.params["transpose_a"], e.params["transpose_b"]) for e in after.eqns
             if e.prim.name == "matmul"]
    # A @ W.T; (V @ h.T).T as h @ V.T; W.T @ V.T folds W only (A^T B^T has no vector kernel)
    assert flags == [(False, True), (False, True), (True, False)]
    left = [e.inputs[0] for e in after.eqns if e.prim.name == "transpose"]
    assert left == [transposed.program.inputs[2]]  # V's copy
    assert_same_results(transposed.program, after, make_args(transposed.program, 3))


@diffc.function
def dense_by_hand(W: f64[4, 3], b: f64[4], x: f64[B, 3], y: i32[B]) -> f64:
    return nn.softmax_cross_entropy(x @ W.T + b, y)


def test_weight_used_transposed_gets_one_fused_gemm_update():
    """The gradient of W in `x @ W.T` comes out of AD transposed; folded, the update is one
    GEMM with the SGD step as its epilogue, as for nn.dense."""
    program = diffc.train_step(dense_by_hand, ["W", "b"], diffc.SGD(lr=0.1)).program
    after = optimize(program)
    assert "transpose" in prim_names(program) and "transpose" not in prim_names(after)
    (update,) = [e for e in after.eqns if e.outputs[0] is after.updates[0][1]]
    assert prim_names(update.params["body"]) == ["matmul", "mul", "sub"]
    assert_same_results(program, after, make_args(program, 3))


@diffc.function
def per_sample_by_hand(W: f64[4, 3], b: f64[4], x: f64[3], y: f64[4]) -> f64:
    return nn.cross_entropy(nn.softmax(x @ W.T + b), y)


def test_per_sample_weight_used_transposed_compiles_as_dense():
    """x @ W.T is a matvec of W's transpose and its gradient an outer product transposed: both
    fold, and the update is the row-wise SGD kernel, as for nn.dense."""
    program = diffc.train_step(per_sample_by_hand, ["W", "b"], diffc.SGD(lr=0.1)).program
    after = optimize(program)
    assert "transpose" in prim_names(program) and "transpose" not in prim_names(after)
    assert "sgd_outer" in prim_names(after)
    assert_same_results(program, after, make_args(program, 2))


# ----------------------------------------------------------------------------- stable forms

def as_traced(f) -> Program:
    """f's program as traced, before `stable_forms` (which Function applies)."""
    return trace_program(f.fn, f.signature)


@diffc.function
def ce_targets(z: f64[3], y: f64[3]) -> f64:
    return nn.cross_entropy(nn.softmax(z), y)


@diffc.function
def ce_labels(z: f64[B, 3], y: i32[B]) -> f64:
    return nn.cross_entropy(nn.softmax(z), y)


GOLDEN_STABLE = {
    ce_targets: ("""\
{ lambda a:f64[3] b:f64[3] .
  let c:f64[3] = softmax a
      d:f64[3] = log c
      e:f64[3] = mul b d
      f:f64 = reduce_sum[axes=(0,)] e
      g:f64 = neg f
  in ( g ) }""", """\
{ lambda a:f64[3] b:f64[3] .
  let c:f64 = softmax_cross_entropy a b
  in ( c ) }"""),
    ce_labels: ("""\
{ lambda a:f64[B,3] b:i32[B] .
  let c:f64[B,3] = softmax a
      d:f64[B] = pick c b
      e:f64[B] = log d
      f:f64[B] = neg e
      g:f64 = reduce_sum[axes=(0,)] f
      h:f64 = dim_size[axis=0 dtype=f64] f
      i:f64 = div g h
  in ( i ) }""", """\
{ lambda a:f64[B,3] b:i32[B] .
  let c:f64[B] = softmax_cross_entropy a b
      d:f64 = reduce_sum[axes=(0,)] c
      e:f64 = dim_size[axis=0 dtype=f64] c
      f:f64 = div d e
  in ( f ) }"""),
}


@pytest.mark.parametrize("f", list(GOLDEN_STABLE), ids=lambda f: f.name)
def test_stable_forms_rewrites_cross_entropy_of_softmax(f):
    before, after = GOLDEN_STABLE[f]
    traced = as_traced(f)
    assert str(traced) == before
    assert str(f.program) == str(stable_forms(traced)) == after
    root = next(e for e in traced.eqns if e.prim.name == "neg")  # the replaced equation
    assert f.program.eqns[0].source == root.source and __file__ in root.source
    assert_same_results(traced, f.program, make_args(traced, 1))


def _stable(body, *types):
    names = body.__code__.co_varnames[:body.__code__.co_argcount]
    body.__annotations__ = dict(zip(names, types, strict=True), **{"return": f64})
    return diffc.function(body)


# a pattern's values read elsewhere stay computed; forms that are not the pattern stay as they
# are; a softmax that is not logged stays a softmax
STABLE_CASES = {
    "log_softmax": (lambda z, w: nn.sum(nn.log(nn.softmax(z)) * w), (f64[B, 3], f64[B, 3]),
                    ["log_softmax", "mul", "reduce_sum"]),
    "log_sigmoid": (lambda z, w: nn.sum(nn.log(nn.sigmoid(z)) * w), (f64[B, 3], f64[B, 3]),
                    ["sigmoid", "log", "mul", "reduce_sum"]),
    "pick_sigmoid": (lambda z, y: nn.cross_entropy(nn.sigmoid(z), y), (f64[B, 3], i32[B]),
                     ["sigmoid", "pick", "log", "neg", "reduce_sum", "dim_size", "div"]),
    "no_neg": (lambda z, y: nn.sum(y * nn.log(nn.softmax(z))), (f64[3], f64[3]),
               ["log_softmax", "mul", "reduce_sum"]),
    "not_last_axis": (lambda z, y: nn.sum(-nn.sum(y * nn.log(nn.softmax(z)), 0)),
                      (f64[B, 3], f64[B, 3]), ["log_softmax", "mul", "reduce_sum", "neg",
                                               "reduce_sum"]),
    "scalar_weight": (lambda z: -nn.sum(2.0 * nn.log(nn.softmax(z)), -1), (f64[3],),
                      ["log_softmax", "mul", "reduce_sum", "neg"]),
    "broadcast_targets": (lambda z, y: nn.sum(-nn.sum(y * nn.log(nn.softmax(z)), -1)),
                          (f64[B, 3], f64[3]), ["broadcast_in_dim", "softmax_cross_entropy",
                                                "reduce_sum"]),
    "constant_label": (lambda z: nn.cross_entropy(nn.softmax(z), 2), (f64[3],),
                       ["softmax_cross_entropy"]),
    "log_softmax_by_hand": (lambda z, y: -nn.sum(nn.log_softmax(z) * y), (f64[3], f64[3]),
                            ["softmax_cross_entropy"]),
    "softmax_read_elsewhere": (lambda z, y, w: nn.cross_entropy(p := nn.softmax(z), y) +
                               nn.sum(p * w), (f64[B, 3], i32[B], f64[B, 3]),
                               ["softmax", "softmax_cross_entropy", "reduce_sum", "dim_size",
                                "div", "mul", "reduce_sum", "add"]),
    "product_read_elsewhere": (lambda z, y: -nn.sum(t := y * nn.log(nn.softmax(z))) +
                               nn.sum(t * t), (f64[3], f64[3]),
                               ["log_softmax", "mul", "softmax_cross_entropy", "mul",
                                "reduce_sum", "add"]),
}


@pytest.mark.parametrize("name", list(STABLE_CASES))
def test_stable_forms_rewrites_only_the_patterns(name):
    body, types, prims = STABLE_CASES[name]
    f = _stable(body, *types)
    verify(f.program)
    assert prim_names(f.program) == prims
    traced = as_traced(f)
    assert_same_results(traced, f.program, make_args(traced, len(traced.inputs)))
    assert stable_forms(f.program).eqns == f.program.eqns  # nothing left to rewrite


def test_softmax_read_elsewhere_keeps_value_and_gradient_stable():
    """cross_entropy(p, y) + sum(p * w), p = softmax(z), at logits where p underflows: the loss
    is 800 + sum(p * w); its gradient softmax(z) - onehot + p * (w - sum(p * w)) (per row)."""
    f = _stable(STABLE_CASES["softmax_read_elsewhere"][0], f64[1, 3], i32[1], f64[1, 3])
    z, y, w = np.array([[0.0, 800.0, -800.0]]), np.array([0], np.int32), np.array([[1.0, 2, 3]])
    p = np.array([[0.0, 1.0, 0.0]])
    loss, dz = diffc.value_and_grad(f, "z")(z, y, w)
    assert loss == 802.0
    np.testing.assert_allclose(dz, p - [[1, 0, 0]] + p * (w - (p * w).sum()), atol=1e-300)
    z = np.random.default_rng(1).normal(0, 3, (1, 3))
    assert diffc.check_grad(f, z, y, w, wrt="z") < 1e-7


# ----------------------------------------------------------------------------- dce and cse

def test_dce_removes_unused_computation_only():
    program = redundant.program
    after = dce(program)
    assert prim_names(program).count("sigmoid") == 1 and "sigmoid" not in prim_names(after)
    assert len(after.eqns) == len(program.eqns) - 2  # the sigmoid and its scaling
    assert dce(after).eqns == after.eqns


def test_dce_keeps_values_only_an_update_reads():
    ctx = TraceContext()
    p, x = Var(f64[4]), Var(f64[4])
    new = Tracer(ctx, p) - 0.5 * Tracer(ctx, x)
    total = nn.sum(Tracer(ctx, x))
    program = Program((p, x), ctx.eqns, (total.var,), ((p, new.var),))
    after = dce(program)
    assert after.eqns == program.eqns
    assert_same_results(program, after, make_args(program, 2))


def test_cse_merges_a_repeated_exp():
    @diffc.function
    def twice(x: f64[3]) -> f64:
        return nn.sum(nn.exp(x) * nn.exp(x))

    program = twice.program
    after = cse(program)
    assert prim_names(program) == ["exp", "exp", "mul", "reduce_sum"]
    assert prim_names(after) == ["exp", "mul", "reduce_sum"]
    (mul,) = [e for e in after.eqns if e.prim.name == "mul"]
    assert mul.inputs[0] is mul.inputs[1] is after.eqns[0].outputs[0]
    assert_same_results(program, after, make_args(program, 1))


def test_cse_keeps_different_operands_and_literals_apart():
    @diffc.function
    def different(x: f64[3], y: f64[3]) -> f64:
        return nn.sum(nn.exp(x) + nn.exp(y) + x * 2.0 + x * 3.0)

    program = different.program
    after = cse(program)
    assert prim_names(after) == prim_names(program)
    assert_same_results(program, after, make_args(program, 2))


# ----------------------------------------------------------------------------- fuse

GOLDEN_CHAIN = """\
{ lambda a:f64[5] b:f64[5] .
  let c:f64[5] = fused[body=
        { lambda d:f64[5] e:f64[5] .
          let f:f64[5] = mul d e
              g:f64[5] = add f 1.0
              h:f64[5] = tanh g
          in ( h ) }] a b
  in ( c ) }"""


def test_fuse_turns_an_elementwise_chain_into_one_equation():
    @diffc.function
    def chain(x: f64[5], y: f64[5]) -> f64[5]:
        return nn.tanh(x * y + 1.0)

    after = fuse(chain.program)
    assert prim_names(chain.program) == ["mul", "add", "tanh"]
    assert prim_names(after) == ["fused"]
    (body,) = fused_bodies(after)
    assert prim_names(body) == ["mul", "add", "tanh"]
    assert str(after) == GOLDEN_CHAIN
    assert_same_results(chain.program, after, make_args(chain.program, 2))


def test_fuse_puts_matmul_bias_relu_in_one_equation():
    @diffc.function
    def layer(W: f64[5, 3], b: f64[5], x: f64[B, 3]) -> f64[B, 5]:
        return nn.relu(nn.dense(W, x, b))

    after = fuse(layer.program)
    assert prim_names(after) == ["fused"]
    (body,) = fused_bodies(after)
    assert prim_names(body) == ["matmul", "broadcast_in_dim", "add", "relu"]
    assert_same_results(layer.program, after, make_args(layer.program, 3))


def test_fuse_never_puts_exp_after_a_matmul_head():
    @diffc.function
    def layer(W: f64[5, 3], b: f64[5], x: f64[B, 3]) -> f64[B, 5]:
        return nn.exp(nn.dense(W, x, b)) * 2.0

    after = fuse(layer.program)
    assert not PRIMITIVES["exp"].epilogue
    assert prim_names(after).count("exp") + sum(
        prim_names(b).count("exp") for b in fused_bodies(after)) == 1
    for body in fused_bodies(after):
        assert not {"matmul", "exp"} <= set(prim_names(body))
    assert_matmul_heads_epilogues_only(after)
    assert_same_results(layer.program, after, make_args(layer.program, 3))


def test_fuse_keeps_matmul_first_when_merging_an_earlier_group():
    """add(neg(A), X @ W.T): the neg group joins the matmul's group after the matmul (or not at
    all), and the compiled result is right."""
    @diffc.function
    def shifted(X: f64[3, 4], W: f64[5, 4], A: f64[3, 5]) -> f64[3, 5]:
        return -A + X @ W.T

    after = fuse(shifted.program)
    assert_matmul_heads_epilogues_only(after)
    X, W, A = make_args(shifted.program, 3)
    np.testing.assert_allclose(shifted(X, W, A), X @ W.T - A, rtol=1e-12)


def test_sgd_weight_update_of_a_batched_dense_layer_is_one_fused_gemm():
    step = diffc.train_step(dense_layer, ["W", "b"], diffc.SGD(lr=0.1))
    program = step.program
    after = fuse(program)
    W = program.inputs[0]
    (new_W,) = [v for p, v in after.updates if p is W]
    (producer,) = [e for e in after.eqns if new_W in e.outputs]
    assert producer.prim.name == "fused"
    assert prim_names(producer.params["body"]) == ["matmul", "mul", "sub"]
    assert_same_results(program, after, make_args(program, 4))


# ----------------------------------------------------------------------------- plan_memory

def test_plan_memory_reuses_slots_of_dead_values():
    program = optimize(softmax_chain.program)
    plan = plan_memory(program)
    assert prim_names(program).count("softmax") == 6
    intermediates = [v for e in program.eqns for v in e.outputs
                     if plan.home[id(v)][0] != "output"]
    assert len(plan.slots) == 2 < len(intermediates)
    assert_valid_plan(program, plan)


def _update_program(late_read: bool) -> Program:
    """p <- 0.5 * p - x; the output reads p after (late_read) or before the update's value."""
    ctx = TraceContext()
    p, x = Var(f64[5]), Var(f64[5])
    tp, tx = Tracer(ctx, p), Tracer(ctx, x)
    if late_read:
        new = tp * 0.5 - tx
        total = nn.sum(nn.softmax(new) * tp)  # softmax: fusion cannot move this read earlier
    else:
        total = nn.sum(nn.softmax(tx) * tp)
        new = tp * 0.5 - tx
    return Program((p, x), ctx.eqns, (total.var,), ((p, new.var),))


def _compile(program: Program, name: str):

    params = tuple(Param(n, v.type) for n, v in zip("px", program.inputs, strict=True))
    return compile_program(program, Signature(params, ArrayType(f64, ())), name)


@pytest.mark.parametrize("late_read", [True, False])
def test_update_is_in_place_only_when_every_read_precedes_it(late_read):
    program = _update_program(late_read)
    verify(program)
    new = program.updates[0][1]
    for candidate in (program, optimize(program)):
        plan = plan_memory(candidate)
        assert (id(new) in plan.in_place) is not late_read
        assert_valid_plan(candidate, plan)
    compiled = _compile(program, f"update_late_{late_read}")
    p, x = make_args(program, 2, seed=3)
    (want,), (want_p, want_x) = run(program, [p, x])
    (got,) = compiled(p, x)
    np.testing.assert_allclose(got, want, rtol=1e-12)
    np.testing.assert_allclose(p, want_p, rtol=1e-12)
    assert np.array_equal(x, want_x)


# ----------------------------------------------------------------------------- random programs

UNARY = ["neg", "relu", "tanh", "sigmoid", "exp"]
BINARY = ["add", "sub", "mul"]
OPS = st.tuples(st.sampled_from(UNARY + BINARY + ["bias", "scale"]),
                st.integers(0, 99), st.integers(0, 99))


def random_program(ops, matmul_at, outputs, update):
    """Elementwise ops over f64[3,5] values (a pool starting with A), with X @ W.T added to the
    pool before op `matmul_at`; outputs and the optional update of A pick values by index."""
    ctx = TraceContext()
    inputs = (Var(f64[3, 4]), Var(f64[5, 4]), Var(f64[3, 5]), Var(f64[5]))
    X, W, A, c = (Tracer(ctx, v) for v in inputs)
    pool = [A]
    for k, (op, i, j) in enumerate(ops):
        if k == matmul_at:
            (product,) = ctx.emit(PRIMITIVES["matmul"], [X.var, W.var],
                                  {"transpose_a": False, "transpose_b": True})
            pool.append(Tracer(ctx, product))
        a, b = pool[i % len(pool)], pool[j % len(pool)]
        if op == "bias":
            pool.append(a + c)
        elif op == "scale":
            pool.append(a * 0.5)
        elif op in BINARY:
            pool.append(elementwise(op, a, b))
        else:
            pool.append(elementwise(op, a))
    outs = tuple(dict.fromkeys(pool[o % len(pool)].var for o in outputs))
    updates = () if update is None else ((inputs[2], pool[update % len(pool)].var),)
    return Program(inputs, ctx.eqns, outs, updates)


@settings(max_examples=30, deadline=None, derandomize=True)
@given(ops=st.lists(OPS, min_size=2, max_size=8), matmul_at=st.integers(0, 2),
       outputs=st.lists(st.integers(0, 99), min_size=1, max_size=3),
       update=st.none() | st.integers(0, 99), seed=st.integers(0, 2**16))
def test_passes_preserve_random_programs(ops, matmul_at, outputs, update, seed):
    program = random_program(ops, matmul_at, outputs, update)
    verify(program)
    args = make_args(program, 4, seed)
    for run_pass in (cse, dce, fuse, optimize):
        after = run_pass(program)
        verify(after)
        assert_same_results(program, after, args)
        assert_matmul_heads_epilogues_only(after)
    optimized = optimize(program)
    assert_valid_plan(optimized, plan_memory(optimized))
