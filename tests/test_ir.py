"""The IR: golden printed text, the verifier's invariants and eval_program against numpy."""
import itertools
import re

import numpy as np
import pytest

import diffc
from diffc import f32, f64, i32, nn
from diffc.core.ir import Eqn, Lit, Program, Var, VerifyError, eval_program, verify
from diffc.core.primitive import PRIMITIVES
from diffc.core.types import ArrayType

B = "B"  # a symbolic dim


def scalar(dt) -> ArrayType:
    return ArrayType(dt, ())


def eqn(name: str, inputs, outputs, **params) -> Eqn:
    return Eqn(PRIMITIVES[name], tuple(inputs), params, tuple(outputs))


# ----------------------------------------------------------------------------- traced programs

@diffc.function
def logreg(w: f64[3], b: f64, x: f64[3], y: f64) -> f64:
    p = nn.sigmoid(w @ x + b)
    return -(y * nn.log(p) + (1 - y) * nn.log(1 - p))


@diffc.function
def broadcast(x: f32[2, 3], c: f32[2, 1]) -> f32[2, 3]:
    return x * c


@diffc.function
def batched_mse(X: f32[B, 4], W: f32[5, 4], b: f32[5]) -> f32:
    return nn.mse(nn.dense(W, X, b), 0.0)


@diffc.function
def classifier(W: f64[4, 3], b: f64[4], x: f64[B, 3], y: i32[B]) -> f64:
    return nn.softmax_cross_entropy(nn.relu(nn.dense(W, x, b)), y)


TRACED = [logreg, broadcast, batched_mse, classifier]


# ----------------------------------------------------------------------------- golden text

def test_golden_logistic_regression():
    assert logreg.ir == """\
{ lambda a:f64[3] b:f64 c:f64[3] d:f64 .
  let e:f64[3] = mul a c
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
  in ( p ) }"""


def test_golden_broadcast():
    assert broadcast.ir == """\
{ lambda a:f32[2,3] b:f32[2,1] .
  let c:f32[2] = reshape[shape=(2,)] b
      d:f32[2,3] = broadcast_in_dim[broadcast_dimensions=(0,) shape=(2,3)] c
      e:f32[2,3] = mul a d
  in ( e ) }"""


def test_golden_symbolic_dim():
    assert batched_mse.ir == """\
{ lambda a:f32[B,4] b:f32[5,4] c:f32[5] .
  let d:f32[B,5] = matmul[transpose_a=False transpose_b=True] a b
      e:f32[B,5] = broadcast_in_dim[broadcast_dimensions=(1,) shape=(B,5)] c
      f:f32[B,5] = add d e
      g:f32[B,5] = sub f 0.0
      h:f32[B,5] = mul g g
      i:f32 = reduce_sum[axes=(0,1)] h
      j:f32 = dim_size[axis=0 dtype=f32] h
      k:f32 = div i j
      l:f32 = div k 5.0
  in ( l ) }"""


def test_golden_integer_labels():
    assert classifier.ir == """\
{ lambda a:f64[4,3] b:f64[4] c:f64[B,3] d:i32[B] .
  let e:f64[B,4] = matmul[transpose_a=False transpose_b=True] c a
      f:f64[B,4] = broadcast_in_dim[broadcast_dimensions=(1,) shape=(B,4)] b
      g:f64[B,4] = add e f
      h:f64[B,4] = relu g
      i:f64[B] = softmax_cross_entropy h d
      j:f64 = reduce_sum[axes=(0,)] i
      k:f64 = dim_size[axis=0 dtype=f64] i
      l:f64 = div j k
  in ( l ) }"""


def test_params_print_sorted_and_fused_bodies_nest():
    x, m = Var(f32[3]), Var(f32[2, 3])
    bx, by, bt = Var(f32[2, 3]), Var(f32[2, 3]), Var(f32[2, 3])
    body = Program((bx, by), [eqn("mul", (bx, by), (bt,))], (bt,))
    xb, out = Var(f32[2, 3]), Var(f32[2, 3])
    # params given out of order: the printer sorts them
    p = Program((x, m), [eqn("broadcast_in_dim", (x,), (xb,), shape=(2, 3),
                             broadcast_dimensions=(1,)),
                         eqn("fused", (xb, m), (out,), body=body)], (out,))
    assert str(p) == """\
{ lambda a:f32[3] b:f32[2,3] .
  let c:f32[2,3] = broadcast_in_dim[broadcast_dimensions=(1,) shape=(2,3)] a
      d:f32[2,3] = fused[body=
        { lambda e:f32[2,3] f:f32[2,3] .
          let g:f32[2,3] = mul e f
          in ( g ) }] c b
  in ( d ) }"""


def test_updates_print():
    w, g, lr = Var(f64[2]), Var(f64[2]), Var(scalar(f64))
    step, new = Var(f64[2]), Var(f64[2])
    p = Program((w, g, lr), [eqn("mul", (g, lr), (step,)), eqn("sub", (w, step), (new,))],
                (Lit(0.5, scalar(f64)),), ((w, new),))
    assert str(p) == """\
{ lambda a:f64[2] b:f64[2] c:f64 .
  let d:f64[2] = mul b c
      e:f64[2] = sub a d
  in ( 0.5 ) updates ( a <- e ) }"""


def _chain(n: int) -> Program:
    """x -> neg -> neg -> ... with n equations: n + 1 vars."""
    vs = [Var(f32[2]) for _ in range(n + 1)]
    return Program((vs[0],), [eqn("neg", (a,), (b,)) for a, b in itertools.pairwise(vs)], (vs[-1],))


def test_names_in_binding_order_past_z():
    lines = str(_chain(29)).splitlines()
    names = [lines[0].split()[2].split(":")[0]] + [line.split()[-4].split(":")[0]
                                                  for line in lines[1:-1]]
    assert names == list("abcdefghijklmnopqrstuvwxyz") + ["ba", "bb", "bc", "bd"]
    assert lines[-1] == "  in ( bd ) }"
    assert lines[26] == "      ba:f32[2] = neg z"


def test_names_continue_past_zz():
    last = str(_chain(702)).splitlines()[-1]  # 703 vars: the last, number 702, is 27 * 26 + 0
    assert last == "  in ( bba ) }"


def test_every_line_one_equation():
    for fn in TRACED:
        lines = fn.ir.splitlines()
        assert len(lines) == len(fn.program.eqns) + 2
        assert all(" = " in line for line in lines[1:-1])


# ----------------------------------------------------------------------------- verify

@pytest.mark.parametrize("fn", TRACED, ids=lambda f: f.name)
def test_verify_accepts_traced_programs(fn):
    verify(fn.program)


def test_verify_accepts_updates_and_literal_outputs():
    w, g = Var(f64[2]), Var(f64[2])
    new = Var(f64[2])
    verify(Program((w, g), [eqn("sub", (w, g), (new,))], (Lit(1.0, scalar(f64)),),
                   ((w, new),)))


def _window_check(message: str, lines: list[str], bad_at: int) -> None:
    """The marker line is the bad equation; its neighbours are shown unmarked around it."""
    shown = message.splitlines()[1:]
    marked = [s for s in shown if s.startswith("> ")]
    assert marked == ["> " + lines[bad_at + 1]]
    at = shown.index(marked[0])
    assert shown[at - 1] == "  " + lines[bad_at]
    assert shown[at + 1] == "  " + lines[bad_at + 2]


def test_verify_rejects_use_before_bind():
    p = _chain(6)
    stray = Var(f32[2])
    p.eqns[3] = eqn("neg", (stray,), p.eqns[3].outputs)
    lines = str(p).splitlines()
    with pytest.raises(VerifyError, match=r"equation 3 \(neg\) uses a var before it is bound") \
            as info:
        verify(p)
    _window_check(str(info.value), lines, 3)


def test_verify_rejects_use_of_a_later_var():
    p = _chain(6)
    p.eqns[2], p.eqns[3] = p.eqns[3], p.eqns[2]
    with pytest.raises(VerifyError, match=r"equation 2 \(neg\) uses a var before it is bound"):
        verify(p)


def test_verify_rejects_var_bound_twice():
    p = _chain(6)
    p.eqns[4] = eqn("neg", p.eqns[4].inputs, p.eqns[1].outputs)
    lines = str(p).splitlines()
    with pytest.raises(VerifyError, match=r"equation 4 \(neg\) binds a var that is already "
                                          r"bound") as info:
        verify(p)
    _window_check(str(info.value), lines, 4)


def test_verify_rejects_rebinding_an_input():
    p = _chain(3)
    p.eqns[1] = eqn("neg", p.eqns[1].inputs, (p.inputs[0],))
    with pytest.raises(VerifyError, match="already bound"):
        verify(p)


def test_verify_rejects_output_type_not_the_rule():
    p = _chain(6)
    wrong = Var(f64[2])
    p.eqns[2] = eqn("neg", p.eqns[2].inputs, (wrong,))
    p.eqns[3] = eqn("neg", (wrong,), p.eqns[3].outputs)
    lines = str(p).splitlines()
    with pytest.raises(VerifyError, match=r"equation 2 \(neg\) has output types \(f64\[2\],\), "
                                          r"its rule gives \(f32\[2\],\)") as info:
        verify(p)
    _window_check(str(info.value), lines, 2)


def test_verify_rejects_a_failing_shape_rule():
    x, y, out = Var(f32[2]), Var(f32[3]), Var(f32[2])
    with pytest.raises(VerifyError, match=r"equation 0 \(add\) fails its shape rule"):
        verify(Program((x, y), [eqn("add", (x, y), (out,))], (out,)))


def test_verify_rejects_update_type_mismatch():
    w, s, total = Var(f32[3]), Var(scalar(f32)), Var(scalar(f32))
    p = Program((w, s), [eqn("reduce_sum", (w,), (total,), axes=(0,))], (total,),
                ((w, total),))
    with pytest.raises(VerifyError, match=r"an update replaces a f32\[3\] input with a f32 "
                                          r"value"):
        verify(p)


def test_verify_rejects_update_of_a_non_input():
    x, a, b = Var(f32[3]), Var(f32[3]), Var(f32[3])
    p = Program((x,), [eqn("neg", (x,), (a,)), eqn("neg", (a,), (b,))], (b,), ((a, b),))
    with pytest.raises(VerifyError, match="an update replaces something that is not a program "
                                          "input"):
        verify(p)


def test_verify_rejects_unbound_update_value():
    x = Var(f32[3])
    p = Program((x,), [], (x,), ((x, Var(f32[3])),))
    with pytest.raises(VerifyError, match="an update's new value is not bound"):
        verify(p)


def test_verify_rejects_unbound_output():
    p = _chain(2)
    p.outputs = (Var(f32[2]),)
    with pytest.raises(VerifyError, match="a program output is not bound"):
        verify(p)


def test_verify_rejects_duplicate_inputs():
    x = Var(f32[2])
    with pytest.raises(VerifyError, match="program inputs must be distinct Vars"):
        verify(Program((x, x), [], (x,)))


def test_verify_checks_fused_bodies():
    bx, bt = Var(f32[2]), Var(f64[2])  # the body's neg claims the wrong dtype
    body = Program((bx,), [eqn("neg", (bx,), (bt,))], (bt,))
    x, out = Var(f32[2]), Var(f64[2])
    p = Program((x,), [eqn("fused", (x,), (out,), body=body)], (out,))
    with pytest.raises(VerifyError, match=r"equation 0 \(neg\) has output types"):
        verify(p)


# ----------------------------------------------------------------------------- eval_program

def _sigmoid(z):
    return 1 / (1 + np.exp(-z))


def test_eval_logistic_regression():
    rng = np.random.default_rng(0)
    for _ in range(5):
        w, x = rng.standard_normal(3), rng.standard_normal(3)
        b, y = rng.standard_normal(), rng.uniform()
        p = _sigmoid(np.dot(w, x) + b)
        want = -(y * np.log(p) + (1 - y) * np.log(1 - p))
        (got,) = eval_program(logreg.program, w, b, x, y)
        assert got.dtype == np.float64 and got.shape == ()
        np.testing.assert_allclose(got, want, rtol=1e-13)


def test_eval_broadcast():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 3)).astype(np.float32)
    c = rng.standard_normal((2, 1)).astype(np.float32)
    (got,) = eval_program(broadcast.program, x, c)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, x * c)


@pytest.mark.parametrize("batch", [1, 3, 17])
def test_eval_symbolic_dim_for_different_batch_sizes(batch):
    rng = np.random.default_rng(batch)
    W, b = rng.standard_normal((4, 3)), rng.standard_normal(4)
    x, y = rng.standard_normal((batch, 3)), rng.integers(0, 4, batch).astype(np.int32)
    h = np.maximum(x @ W.T + b, 0)
    m = h.max(axis=1, keepdims=True)
    log_p = h - m - np.log(np.exp(h - m).sum(axis=1, keepdims=True))
    want = -log_p[np.arange(batch), y].mean()
    (got,) = eval_program(classifier.program, W, b, x, y)
    np.testing.assert_allclose(got, want, rtol=1e-13)


@pytest.mark.parametrize("batch", [2, 9])
def test_eval_symbolic_mean_divides_by_the_batch(batch):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((batch, 4)).astype(np.float32)
    W, b = rng.standard_normal((5, 4)).astype(np.float32), rng.standard_normal(5).astype(
        np.float32)
    want = np.mean((X.astype(np.float64) @ W.T.astype(np.float64) + b) ** 2)
    (got,) = eval_program(batched_mse.program, X, W, b)
    assert got.dtype == np.float32
    np.testing.assert_allclose(got, want, rtol=1e-5)


def test_eval_float64_flag_computes_f32_programs_in_f64():
    rng = np.random.default_rng(0)
    X = rng.standard_normal((3, 4)).astype(np.float32)
    W, b = rng.standard_normal((5, 4)).astype(np.float32), rng.standard_normal(5).astype(
        np.float32)
    want = np.mean((X.astype(np.float64) @ W.T.astype(np.float64) + b) ** 2)
    (got,) = eval_program(batched_mse.program, X, W, b, float64=True)
    assert got.dtype == np.float64
    np.testing.assert_allclose(got, want, rtol=1e-13)


def test_eval_wrong_argument_count():
    with pytest.raises(TypeError, match="program takes 4 arguments, got 3"):
        eval_program(logreg.program, np.ones(3), 0.0, np.ones(3))


def _sgd_program() -> Program:
    """loss = sum(w * g); w <- w - lr * g (g and lr untouched)."""
    w, g, lr = Var(f64[3]), Var(f64[3]), Var(scalar(f64))
    wg, loss, step, new = Var(f64[3]), Var(scalar(f64)), Var(f64[3]), Var(f64[3])
    eqns = [eqn("mul", (w, g), (wg,)), eqn("reduce_sum", (wg,), (loss,), axes=(0,)),
            eqn("mul", (g, lr), (step,)), eqn("sub", (w, step), (new,))]
    return Program((w, g, lr), eqns, (loss,), ((w, new),))


def test_eval_applies_updates_in_place():
    p = _sgd_program()
    verify(p)
    w, g = np.array([1.0, 2.0, 3.0]), np.array([0.5, -1.0, 2.0])
    w_id, g_before = id(w), g.copy()
    (loss,) = eval_program(p, w, g, 0.1)
    assert loss == pytest.approx(1.0 * 0.5 - 2.0 + 6.0, rel=1e-15)  # with w before the update
    assert id(w) == w_id
    np.testing.assert_allclose(w, [0.95, 2.1, 2.8], rtol=1e-15)
    np.testing.assert_array_equal(g, g_before)


def test_eval_updates_are_simultaneous():
    """(a <- b, b <- a) swaps: every new value is read before any input is written."""
    a, b = Var(f64[2]), Var(f64[2])
    p = Program((a, b), [], (Lit(0.0, scalar(f64)),), ((a, b), (b, a)))
    verify(p)
    x, y = np.array([1.0, 2.0]), np.array([3.0, 4.0])
    eval_program(p, x, y)
    np.testing.assert_array_equal(x, [3.0, 4.0])
    np.testing.assert_array_equal(y, [1.0, 2.0])


def test_eval_outputs_hold_values_from_before_the_updates():
    """An output that is an updated input is its value before the update (as compiled code)."""
    w, g, new = Var(f64[2]), Var(f64[2]), Var(f64[2])
    p = Program((w, g), [eqn("sub", (w, g), (new,))], (w, new), ((w, new),))
    verify(p)
    x = np.array([1.0, 2.0])
    old, updated = eval_program(p, x, np.array([0.25, 0.5]))
    np.testing.assert_array_equal(x, [0.75, 1.5])
    np.testing.assert_array_equal(old, [1.0, 2.0])
    np.testing.assert_array_equal(updated, [0.75, 1.5])


def test_eval_resolves_symbolic_shape_params():
    """A broadcast to (B, 3) takes B from the arguments of each call."""
    x, b = Var(f32[B, 3]), Var(f32[3])
    bb, out = Var(f32[B, 3]), Var(f32[B, 3])
    p = Program((x, b), [eqn("broadcast_in_dim", (b,), (bb,), shape=(B, 3),
                             broadcast_dimensions=(1,)), eqn("sub", (x, bb), (out,))], (out,))
    verify(p)
    rng = np.random.default_rng(0)
    for batch in (1, 4, 6):
        xv = rng.standard_normal((batch, 3)).astype(np.float32)
        bv = rng.standard_normal(3).astype(np.float32)
        (got,) = eval_program(p, xv, bv)
        assert got.shape == (batch, 3)
        np.testing.assert_array_equal(got, xv - bv[None, :])


def test_golden_text_is_deterministic():
    """Tracing the same function twice prints the same text (no set iteration, no ids)."""
    again = diffc.function(classifier.fn)
    assert again.ir == classifier.ir
    assert not re.search(r"0x[0-9a-f]+", classifier.ir)
