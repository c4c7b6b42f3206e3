"""The shape operations users write (core/shapes.py, core/indexing.py, core/sizes.py): each
compiled, eagerly on numpy and against numpy written here, in f32 and f64, with static and
symbolic dims; gradients against finite differences and jax; and what the optimized program
does with them (fusion, views instead of copies)."""
import numpy as np
import pytest
from models import traced

import diffc
from diffc import nn
from diffc.compiler.pipeline import optimize
from diffc.core.types import f32, f64, i32, i64
from diffc.passes.memory import plan_memory

B = "B"
SIZES = (3, 6)  # what B takes: > 2, so x[2] and x[-3] of a B axis are in range
RTOL = {f32: 1e-5, f64: 1e-12}


def _iterate(x):
    total = x[0] * 0.0
    for row in x:  # numpy's iteration over a static first axis: x[0], x[1], x[2]
        total = total + row * row
    return total


# name: (body, dtype -> (parameter types, result type), numpy/jax reference (xp, *args), the
# bound of the integer arguments' values)
CASES = {
    "reshape_merge": (lambda x: x.reshape(x.shape[0], -1), lambda dt: ([dt[B, 4, 3]], dt[B, 12]),
                      lambda xp, x: xp.reshape(x, (x.shape[0], 12)), None),
    "reshape_split": (lambda x: nn.reshape(x, (2, 3, -1)), lambda dt: ([dt[12]], dt[2, 3, 2]),
                      lambda xp, x: xp.reshape(x, (2, 3, 2)), None),
    "reshape_middle": (lambda x: nn.reshape(x * 2.0, (3, x.shape[1], 2)),
                       lambda dt: ([dt[2, B, 3]], dt[3, B, 2]),
                       lambda xp, x: xp.reshape(x * 2.0, (3, x.shape[1], 2)), None),
    "transpose": (lambda x: nn.transpose(x, (2, 0, -2)), lambda dt: ([dt[B, 3, 4]], dt[4, B, 3]),
                  lambda xp, x: xp.transpose(x, (2, 0, 1)), None),
    "method_T": (lambda x: x.T * 1.5 + x.transpose()[::-1] - x.transpose(1, 0),
                 lambda dt: ([dt[3, B]], dt[B, 3]), lambda xp, x: 0.5 * x.T + x.T[::-1], None),
    "expand_squeeze": (lambda x: nn.squeeze(nn.expand_dims(x, (0, 2)), 0),
                       lambda dt: ([dt[B, 3]], dt[B, 1, 3]), lambda xp, x: x[:, None, :], None),
    "broadcast_to": (lambda x: nn.broadcast_to(x, (x.shape[0], 4, 3)),
                     lambda dt: ([dt[B, 1, 3]], dt[B, 4, 3]),
                     lambda xp, x: xp.broadcast_to(x, (x.shape[0], 4, 3)), None),
    "concatenate": (lambda x, y: nn.concatenate([x, y * 2.0], axis=-1),
                    lambda dt: ([dt[B, 2], dt[B, 3]], dt[B, 5]),
                    lambda xp, x, y: xp.concatenate([x, y * 2.0], axis=1), None),
    "stack": (lambda x, y: nn.stack([x, y], axis=1), lambda dt: ([dt[B, 3], dt[B, 3]],
                                                                 dt[B, 2, 3]),
              lambda xp, x, y: xp.stack([x, y], axis=1), None),
    "basic_index": (lambda x: x[:, None, 3:0:-2], lambda dt: ([dt[B, 5]], dt[B, 1, 2]),
                    lambda xp, x: xp.stack([x[:, 3], x[:, 1]], axis=1)[:, None, :], None),
    "rows_of_B": (lambda x: x[-1] + x[2] * 3.0, lambda dt: ([dt[B, 3]], dt[3]),
                  lambda xp, x: x[x.shape[0] - 1] + 3.0 * x[2], None),
    "strided": (lambda x: x[1::2, ::2, ::-1], lambda dt: ([dt[4, 6, B]], dt[2, 3, B]),
                lambda xp, x: xp.flip(x[1::2, ::2], axis=2), None),
    "ellipsis": (lambda x: x[..., 1] - x[-1, ..., -1], lambda dt: ([dt[2, 3, 4]], dt[2, 3]),
                 lambda xp, x: x[:, :, 1] - x[1, :, 3], None),
    "iterate": (_iterate, lambda dt: ([dt[3, B]], dt[B]), lambda xp, x: (x * x).sum(0), None),
    "take_rows": (lambda E, idx: nn.take(E, idx) * 2.0, lambda dt: ([dt[6, 3], i32[B, 2]],
                                                                    dt[B, 2, 3]),
                  lambda xp, E, idx: xp.take(E, idx, axis=0) * 2.0, 6),
    "take_columns": (lambda x, idx: x[:, idx] - x[:, idx] ** 2,
                     lambda dt: ([dt[B, 4], i64[5]], dt[B, 5]),
                     lambda xp, x, idx: xp.take(x, idx, axis=1) - xp.take(x, idx, axis=1) ** 2, 4),
    "take_scalar": (lambda x, k: x[k] + nn.take(x, -1, axis=1)[0],
                    lambda dt: ([dt[4, 3], i32[()]], dt[3]),
                    lambda xp, x, k: x[k] + x[0, 2], 4),
    "mixed_apart": (lambda x, idx: x[0, :, idx] * 2.0, lambda dt: ([dt[3, B, 4], i32[2]],
                                                                   dt[2, B]),
                    lambda xp, x, idx: x[0, :, idx] * 2.0, 4),
    "mixed_adjacent": (lambda x, idx: x[:, -1, idx], lambda dt: ([dt[3, B, 4], i64[2, 2]],
                                                                 dt[3, 2, 2]),
                       lambda xp, x, idx: x[:, -1, idx], 4),
    "sizes": (lambda x: nn.sum(x) / x.shape[0] + x.shape[0] * 2.0 - x.shape[1] / (
        x.shape[0] - 0.5), lambda dt: ([dt[B, 3]], dt[()]),
              lambda xp, x: xp.sum(x) / x.shape[0] + x.shape[0] * 2.0 - 3 / (x.shape[0] - 0.5),
              None),
}


def _arguments(types, high, size, seed=0):
    rng = np.random.default_rng(seed)
    args = []
    for t in types:
        shape = tuple(size if isinstance(d, str) else d for d in t.shape)
        if t.dtype.is_float:
            args.append(rng.standard_normal(shape).astype(t.dtype.np_dtype))
        else:
            value = rng.integers(0, high, shape).astype(t.dtype.np_dtype)
            args.append(value if shape else int(value))
    return args


def _wide(args):
    return [a.astype(np.float64) if isinstance(a, np.ndarray) and a.dtype.kind == "f" else a
            for a in args]


def _close(got, want, dt, what):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape}, expected {want.shape}"
    np.testing.assert_allclose(got, want, rtol=RTOL[dt], atol=RTOL[dt] * 1e-3, err_msg=what)


@pytest.mark.parametrize("dt", [f32, f64], ids=str)
@pytest.mark.parametrize("name", list(CASES))
def test_operation_compiled_eager_and_numpy(name, dt):
    body, types, ref, high = CASES[name]
    params, result = types(dt)
    f = traced(body, params, result, f"{name}_{dt}")
    for size in SIZES:
        args = _arguments(params, high, size)
        want = ref(np, *_wide(args))
        compiled = f(*args)
        assert np.asarray(compiled).dtype == dt.np_dtype or isinstance(compiled, float)
        _close(compiled, want, dt, f"compiled, B={size}")
        _close(body(*args), want, dt, f"eager, B={size}")


def _loss(body, arity):
    """sum(w * body(...)): w weighs each output element (the cotangent is not all ones)."""
    if arity == 1:
        return lambda a, w: nn.sum(body(a) * w)
    return lambda a, b, w: nn.sum(body(a, b) * w)


def _loss_function(name):
    body, types, _, high = CASES[name]
    params, result = types(f64)
    loss = traced(_loss(body, len(params)), params + [result], f64, f"loss_{name}")
    size = SIZES[0]
    args = _arguments(params + [result], high, size, seed=1)
    return loss, args, [p.name for p, t in zip(loss.signature.params, params + [result],
                                               strict=True) if t.dtype.is_float]


@pytest.mark.parametrize("name", list(CASES))
def test_operation_gradient_matches_finite_differences(name):
    loss, args, wrt = _loss_function(name)
    report = diffc.check_grad(loss, *args, wrt=wrt)
    assert report.worst < 1e-6, str(report)


@pytest.mark.parametrize("name", list(CASES))
def test_operation_gradient_matches_jax(name):
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    loss, args, wrt = _loss_function(name)
    ref = CASES[name][2]
    floats = [i for i, a in enumerate(args) if isinstance(a, np.ndarray) and a.dtype.kind == "f"]

    def jax_loss(*values):
        full = list(args)
        for i, v in zip(floats, values, strict=True):
            full[i] = v
        return jnp.sum(ref(jnp, *full[:-1]) * full[-1])

    want = jax.jit(jax.grad(jax_loss, argnums=tuple(range(len(floats)))))(
        *[args[i] for i in floats])
    got = diffc.grad(loss, wrt)(*args)
    for name_, g, w in zip(wrt, got, want, strict=True):
        np.testing.assert_allclose(g, np.asarray(w), rtol=1e-12, atol=1e-13, err_msg=name_)


# ----------------------------------------------------------------------------- optimized code

def _names(program) -> list[str]:
    return [e.prim.name for e in program.eqns]


def _bodies(program) -> list[list[str]]:
    return [_names(e.params["body"]) for e in program.eqns if e.prim.name == "fused"]


@diffc.function
def rectangles(x: f64[4], w: f64[4]) -> f64:
    h = x[0] * w[0]
    for i in range(1, 4):
        h = h + x[i] * w[i]
    return h


def test_scalar_indexing_loop_is_one_fused_kernel():
    """x[i] * w[i] summed over i: eight scalar reads and the arithmetic in one loop-free fused
    kernel, no slice copied out; its gradient writes w's four entries in one fused kernel."""
    forward = optimize(rectangles.program)
    assert _names(forward) == ["fused"]
    assert _bodies(forward)[0].count("slice") == 8
    step = diffc.train_step(rectangles, ["w"], optimizer=diffc.SGD(lr=0.1))
    optimized = optimize(step.program)
    assert "slice" not in _names(optimized) and "unslice" not in _names(optimized)
    update = [body for body in _bodies(optimized) if "unslice" in body]
    assert len(update) == 1 and update[0].count("unslice") == 4 and update[0][-1] == "sub"
    plan = plan_memory(optimized)
    (w_new,) = [new for param, new in optimized.updates if param is optimized.inputs[1]]
    assert id(w_new) in plan.in_place  # w is updated in its own buffer


def _reshape_program(return_view: bool):
    def f(x: f64[B, 4, 3], W: f64[5, 12]) -> f64:
        return nn.sum(nn.tanh((x * 2.0).reshape(x.shape[0], 12) @ W.T))

    def g(x: f64[B, 4, 3]) -> f64[B, 12]:
        return (x * 2.0).reshape(x.shape[0], 12)
    return diffc.function(g if return_view else f, name=f"reshape_view_{return_view}")


def test_reshape_is_a_view_of_its_input_buffer():
    """A reshape between computations costs nothing: it lives in its input's buffer and has no
    kernel. One that is a result is computed into the output buffer."""
    f = _reshape_program(False)
    optimized = optimize(f.program)
    (view,) = [e for e in optimized.eqns if e.prim.name == "reshape"]
    plan = plan_memory(optimized)
    assert plan.home[id(view.outputs[0])] == plan.home[id(view.inputs[0])]
    assert ".reshape" not in f.llvm_ir
    rng = np.random.default_rng(0)
    for size in SIZES:
        x, W = rng.standard_normal((size, 4, 3)), rng.standard_normal((5, 12))
        assert f(x, W) == pytest.approx(np.tanh((2 * x).reshape(size, 12) @ W.T).sum(),
                                        rel=1e-12)
    g = _reshape_program(True)
    assert ".reshape" in g.llvm_ir  # a kernel copies into the caller's output
    x = rng.standard_normal((3, 4, 3))
    np.testing.assert_array_equal(g(x), (2 * x).reshape(3, 12))


@diffc.function
def flat_weights(w1: f64[12], w2: f64[8], x: f64[3], t: f64[2]) -> f64:
    h = nn.tanh(w1.reshape(4, 3) @ x)
    return nn.sum((w2.reshape(2, 4) @ h - t) ** 2)


def _np_flat_weights_step(w1, w2, x, t, lr):
    W1, W2 = w1.reshape(4, 3), w2.reshape(2, 4)
    h = np.tanh(W1 @ x)
    d = 2 * (W2 @ h - t)
    dh = (W2.T @ d) * (1 - h * h)
    return np.sum((W2 @ h - t) ** 2), w1 - lr * np.outer(dh, x).ravel(), w2 - lr * np.outer(
        d, h).ravel()


def test_views_of_params_updated_in_place():
    """Params read through reshapes (views of their buffers) and updated in place: every read
    of a view comes before the update writes the buffer (a numpy trajectory)."""
    step = diffc.train_step(flat_weights, ["w1", "w2"], optimizer=diffc.SGD(lr=0.05))
    optimized = optimize(step.program)
    plan = plan_memory(optimized)
    views = [e for e in optimized.eqns if e.prim.name == "reshape"]
    assert any(plan.home[id(e.outputs[0])][0] == "input" for e in views)
    rng = np.random.default_rng(3)
    w1, w2 = rng.standard_normal(12) * 0.5, rng.standard_normal(8) * 0.5
    r1, r2 = w1.copy(), w2.copy()
    for _ in range(5):
        x, t = rng.standard_normal(3), rng.standard_normal(2)
        loss = step(w1, w2, x, t)
        want, r1, r2 = _np_flat_weights_step(r1, r2, x, t, 0.05)
        assert loss == pytest.approx(want, rel=1e-12)
        np.testing.assert_allclose(w1, r1, rtol=1e-12)
        np.testing.assert_allclose(w2, r2, rtol=1e-12)


@diffc.function
def gathered_scaled(E: f32[6, 3], idx: i32[B], s: f32[B, 3]) -> f32[B, 3]:
    return nn.take(E, idx) * s + E[idx[::-1]] - nn.exp(s[:, ::-1] * s[::-1])


def test_slices_and_gathers_fuse_with_elementwise_work():
    """take and slices read their inputs at mapped indices inside one fused loop."""
    optimized = optimize(gathered_scaled.program)
    assert _names(optimized) == ["slice", "fused"]  # idx[::-1] moves integers: its own kernel
    assert sorted(_bodies(optimized)[0]) == sorted(["gather", "mul", "gather", "add", "slice",
                                                    "slice", "mul", "exp", "sub"])
    rng = np.random.default_rng(4)
    E = rng.standard_normal((6, 3)).astype(np.float32)
    for size in SIZES:
        idx = rng.integers(0, 6, size).astype(np.int32)
        s = rng.standard_normal((size, 3)).astype(np.float32)
        want = E[idx] * s + E[idx[::-1]] - np.exp(s[:, ::-1] * s[::-1])
        np.testing.assert_allclose(gathered_scaled(E, idx, s), want, rtol=1e-5, atol=1e-6)


@diffc.function
def strided_fit(w: f64[7], t: f64[3]) -> f64:
    return nn.sum((w[::-3] * 3.0 - t) ** 2) + nn.sum(w[1:3] * w[1:3])


def test_strided_slice_gradient_is_fused_into_the_update():
    """The gradient of a reversed strided slice (unslice) is computed inside the fused SGD
    update, which writes w in place; the trajectory is numpy's."""
    step = diffc.train_step(strided_fit, ["w"], optimizer=diffc.SGD(lr=0.01))
    optimized = optimize(step.program)
    assert "unslice" not in _names(optimized)
    assert any(body.count("unslice") == 2 for body in _bodies(optimized))
    rng = np.random.default_rng(5)
    w = rng.standard_normal(7)
    ref = w.copy()
    for _ in range(4):
        t = rng.standard_normal(3)
        loss = step(w, t)
        d = 2 * (ref[::-3] * 3 - t)
        grad = np.zeros(7)
        grad[::-3] = 3 * d
        grad[1:3] += 2 * ref[1:3]
        assert loss == pytest.approx(np.sum((ref[::-3] * 3 - t) ** 2) + ref[1:3] @ ref[1:3],
                                     rel=1e-12)
        ref = ref - 0.01 * grad
        np.testing.assert_allclose(w, ref, rtol=1e-12)


@diffc.function
def printed(x: f64[B, 4, 3], idx: i32[2]) -> f64[2, 3, 2]:
    y = x[-1, 1::2, None]
    return nn.stack([y[:, 0], x[0, idx]], axis=0).transpose(0, 2, 1) * x.shape[0]


PRINTED = """\
{ lambda a:f64[B,4,3] b:i32[2] .
  let c:f64[2,3] = slice[shape=(2,3) start=(-1,1,0) step=(0,2,1)] a
      d:f64[2,1,3] = reshape[shape=(2,1,3)] c
      e:f64[2,3] = slice[shape=(2,3) start=(0,0,0) step=(1,0,1)] d
      f:f64[4,3] = slice[shape=(4,3) start=(0,0,0) step=(0,1,1)] a
      g:f64[2,3] = gather[axis=0] f b
      h:f64[1,2,3] = reshape[shape=(1,2,3)] e
      i:f64[1,2,3] = reshape[shape=(1,2,3)] g
      j:f64[2,2,3] = concatenate[axis=0] h i
      k:f64[2,3,2] = transpose[perm=(0,2,1)] j
      l:f64 = dim_size[axis=0 dtype=f64] a
      m:f64[2,3,2] = mul k l
  in ( m ) }"""


def test_printed_form_of_indexing_and_shapes():
    """x[-1, 1::2, None] is one slice (step 0: an integer index, the axis dropped; a negative
    start on a symbolic axis counts from its end) and a reshape adding the new axis."""
    assert printed.ir == PRINTED


@diffc.function
def transposed_sum(x: f64[B, 3, 4], y: f64[4, B, 3]) -> f64[4, B, 3]:
    return nn.transpose(x, (2, 0, 1)) * y + nn.exp(y)


def test_transposes_fuse_with_elementwise_work():
    assert _bodies(optimize(transposed_sum.program)) == [["transpose", "mul", "exp", "add"]]
    rng = np.random.default_rng(6)
    x, y = rng.standard_normal((5, 3, 4)), rng.standard_normal((4, 5, 3))
    np.testing.assert_allclose(transposed_sum(x, y), x.transpose(2, 0, 1) * y + np.exp(y),
                               rtol=1e-12)
