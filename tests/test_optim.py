"""train_step and fit against numpy references of torch.optim's SGD and Adam."""
import math
import re

import numpy as np
import pytest
from models import mlp_loss

import diffc
from diffc import ArgumentError, f32, f64, i32, nn
from diffc.compiler import pipeline
from diffc.passes.memory import plan_memory

D, H, C = 5, 7, 3  # input, hidden and class counts of the small MLPs
B = "B"  # the symbolic batch dim
PARAMS = ["W1", "b1", "W2", "b2"]
TOL = {f32: 1e-5, f64: 1e-12}


def _functions(dt):
    """The small MLP loss per sample (one-hot targets), per sample with an integer label, and
    batched with integer labels."""

    @diffc.function
    def mlp_sample(W1: dt[H, D], b1: dt[H], W2: dt[C, H], b2: dt[C], x: dt[D], y: dt[C]) -> dt:
        h = nn.relu(nn.dense(W1, x, b1))
        return nn.cross_entropy(nn.softmax(nn.dense(W2, h, b2)), y)

    @diffc.function
    def mlp_label(W1: dt[H, D], b1: dt[H], W2: dt[C, H], b2: dt[C], x: dt[D], y: i32) -> dt:
        h = nn.relu(nn.dense(W1, x, b1))
        return nn.softmax_cross_entropy(nn.dense(W2, h, b2), y)

    @diffc.function
    def mlp_batch(W1: dt[H, D], b1: dt[H], W2: dt[C, H], b2: dt[C], x: dt[B, D],
                  y: i32[B]) -> dt:
        h = nn.relu(nn.dense(W1, x, b1))
        return nn.softmax_cross_entropy(nn.dense(W2, h, b2), y)

    return {"sample": mlp_sample, "label": mlp_label, "batch": mlp_batch}


FUNCTIONS = {dt: _functions(dt) for dt in (f32, f64)}

CONFIGS = {
    "sgd": ("SGD", {"lr": 0.1}),
    "momentum": ("SGD", {"lr": 0.05, "momentum": 0.9}),
    "nesterov_wd": ("SGD", {"lr": 0.05, "momentum": 0.8, "nesterov": True,
                            "weight_decay": 0.01}),
    "adam": ("Adam", {}),
    "adam_wd_betas": ("Adam", {"lr": 0.01, "betas": (0.8, 0.95), "eps": 1e-6,
                               "weight_decay": 0.02}),
}


def make_step(kind, dt, config, params=PARAMS):
    name, hyper = CONFIGS[config]
    return diffc.train_step(FUNCTIONS[dt][kind], params, getattr(diffc, name)(**hyper))


# ----------------------------------------------------------------------------- numpy references

class RefSGD:
    """torch.optim.SGD (dampening 0): the momentum buffer starts as the first gradient."""

    def __init__(self, lr, momentum=0.0, nesterov=False, weight_decay=0.0):
        self.lr, self.momentum, self.nesterov, self.wd = lr, momentum, nesterov, weight_decay
        self.bufs = None

    def step(self, params, grads):
        if self.bufs is None:
            self.bufs = [np.zeros_like(p) for p in params]
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            g = g + self.wd * p
            if self.momentum:
                self.bufs[i] = self.momentum * self.bufs[i] + g
                g = g + self.momentum * self.bufs[i] if self.nesterov else self.bufs[i]
            p -= self.lr * g


class RefAdam:
    """torch.optim.Adam with L2 weight decay added to the gradient."""

    def __init__(self, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0):
        self.lr, self.betas, self.eps, self.wd = lr, betas, eps, weight_decay
        self.m = self.v = None
        self.t = 0

    def step(self, params, grads):
        b1, b2 = self.betas
        if self.m is None:
            self.m = [np.zeros_like(p) for p in params]
            self.v = [np.zeros_like(p) for p in params]
        self.t += 1
        c1, c2 = 1 - b1 ** self.t, 1 - b2 ** self.t
        for i, (p, g) in enumerate(zip(params, grads, strict=True)):
            g = g + self.wd * p
            self.m[i] = b1 * self.m[i] + (1 - b1) * g
            self.v[i] = b2 * self.v[i] + (1 - b2) * g * g
            denom = np.sqrt(self.v[i]) / math.sqrt(c2) + self.eps
            p -= (self.lr / c1) * self.m[i] / denom


def ref_optimizer(config):
    name, hyper = CONFIGS[config]
    return {"SGD": RefSGD, "Adam": RefAdam}[name](**hyper)


def softmax(z):
    e = np.exp(z - z.max(axis=-1, keepdims=True))
    return e / e.sum(axis=-1, keepdims=True)


def loss_and_grads(params, x, y):
    """Loss and (dW1, db1, dW2, db2) by hand: x of shape (D,) with y one-hot (C,) or an int
    label, or x of shape (B, D) with int labels (B,) and the batch mean."""
    W1, b1, W2, b2 = params
    X = np.atleast_2d(x)
    Y = np.asarray(y)
    if Y.dtype.kind == "f":
        Y = np.atleast_2d(Y)
    else:
        Y = np.eye(C)[np.atleast_1d(Y)]
    hp = X @ W1.T + b1
    h = np.maximum(hp, 0)
    p = softmax(h @ W2.T + b2)
    n = len(X)
    loss = -np.sum(Y * np.log(p)) / n
    dz = (p * Y.sum(axis=1, keepdims=True) - Y) / n
    dhp = (dz @ W2) * (hp > 0)
    return loss, [dhp.T @ X, dhp.sum(0), dz.T @ h, dz.sum(0)]


def reference_run(params, batches, config, lrs=None):
    """Losses of a numpy training run from float64 copies of params, and the final params."""
    params = [np.array(p, np.float64) for p in params]
    opt = ref_optimizer(config)
    losses = []
    for k, (x, y) in enumerate(batches):
        if lrs is not None:
            opt.lr = lrs[k]
        loss, grads = loss_and_grads(params, np.asarray(x, np.float64), y)
        losses.append(loss)
        opt.step(params, grads)
    return np.array(losses), params


# ----------------------------------------------------------------------------- data

def init_params(seed, dt=f64):
    rng = np.random.default_rng(seed)
    shapes = [(H, D), (H,), (C, H), (C,)]
    return [rng.normal(0, 0.6, s).astype(dt.np_dtype) for s in shapes]


def dataset(seed, n, dt=f64):
    """(X, one-hot Y, int32 labels) with n samples."""
    rng = np.random.default_rng(seed)
    X = rng.normal(0, 1, (n, D)).astype(dt.np_dtype)
    labels = rng.integers(0, C, n).astype(np.int32)
    return X, np.eye(C, dtype=dt.np_dtype)[labels], labels


def targets(kind, Y, labels):
    return Y if kind == "sample" else labels


def batches_of(kind, X, T, order, batch):
    """The (x, y) of each step over the samples in `order`, `batch` at a time when batched."""
    if kind != "batch":
        return [(X[i], T[i]) for i in order]
    return [(X[order[s:s + batch]], T[order[s:s + batch]]) for s in range(0, len(order), batch)]


def run_steps(step, params, batches):
    return np.array([step(*params, x, y) for x, y in batches])


def assert_close(got, want, tol):
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    np.testing.assert_allclose(got, want, rtol=tol, atol=tol * max(np.abs(want).max(), 1e-300))


def assert_params_close(got, want, tol):
    for g, w in zip(got, want, strict=True):
        assert_close(g, w, tol)


# ----------------------------------------------------------------------------- train_step

@pytest.mark.parametrize("config", list(CONFIGS))
@pytest.mark.parametrize("dt", [f32, f64], ids=["f32", "f64"])
@pytest.mark.parametrize("kind", ["sample", "batch"])
def test_train_step_matches_numpy(kind, dt, config):
    """20 steps: returned losses and the params updated in place equal the numpy reference."""
    step = make_step(kind, dt, config)
    params = init_params(1, dt)
    X, Y, labels = dataset(2, 20 if kind == "sample" else 60, dt)
    batches = batches_of(kind, X, targets(kind, Y, labels), np.arange(len(X)), 3)
    want_losses, want_params = reference_run(params, batches, config)
    ids = [id(p) for p in params]
    losses = run_steps(step, params, batches)
    assert [id(p) for p in params] == ids
    assert all(p.dtype == dt.np_dtype for p in params)
    assert step.steps == len(batches) == 20
    assert_close(losses, want_losses, TOL[dt])
    assert_params_close(params, want_params, TOL[dt])


def test_returns_loss_before_update():
    """The loss returned is f at the params as they were before the call's update."""
    step = make_step("sample", f64, "sgd")
    params = init_params(3)
    X, Y, _ = dataset(4, 1)
    before = [p.copy() for p in params]
    loss = step(*params, X[0], Y[0])
    assert isinstance(loss, float)
    assert loss == pytest.approx(loss_and_grads(before, X[0], Y[0])[0], rel=1e-12)
    assert not any(np.array_equal(p, q) for p, q in zip(params, before, strict=True))
    want = loss_and_grads(params, X[0], Y[0])[0]
    assert step(*params, X[0], Y[0]) == pytest.approx(want, rel=1e-12)


def test_lr_change_takes_effect_without_recompiling():
    step = make_step("sample", f64, "momentum").compile()
    artifacts = step.artifacts
    params = init_params(5)
    X, Y, _ = dataset(6, 12)
    lrs = [0.05] * 4 + [0.3] * 4 + [0.0] * 4
    losses = []
    for k in range(12):
        step.lr = lrs[k]
        losses.append(step(*params, X[k], Y[k]))
    want_losses, want_params = reference_run(init_params(5), list(zip(X, Y, strict=True)),
                                             "momentum", lrs)
    assert step.artifacts is artifacts
    assert step.lr == 0.0
    assert_close(losses, want_losses, 1e-12)
    assert_params_close(params, want_params, 1e-12)


@pytest.mark.parametrize("bad", [-0.1, "0.1", float("nan"), None])
def test_invalid_lr_is_refused(bad):
    step = make_step("sample", f64, "sgd")
    with pytest.raises((ValueError, TypeError, diffc.DiffcError)):
        step.lr = bad
    assert step.lr == 0.1


@diffc.function
def scaled_norm(w: f64[3], s: f64) -> f64:
    return nn.sum(w * w) * s


def test_step_has_the_signature_of_f_and_a_default_sgd():
    step = diffc.train_step(scaled_norm, ["w"])
    assert step.signature == scaled_norm.signature
    assert step.optimizer == diffc.SGD(lr=0.01) and step.lr == 0.01
    w = np.array([1.0, 2.0, 3.0])
    assert step(w, s=2.0) == 28.0  # keyword arguments by f's parameter names
    np.testing.assert_array_equal(w, [1.0, 2.0, 3.0] - 0.01 * 2 * 2.0 * np.array([1, 2, 3]))


def test_scalar_param_is_refused_when_the_step_is_made():
    with pytest.raises(diffc.SignatureError, match=r"'s' is a scalar \(f64\).*f64\[1\]"):
        diffc.train_step(scaled_norm, ["w", "s"])


def test_optimizer_settings_are_fixed_the_step_lr_is_not():
    opt = diffc.Adam(lr=0.1)
    with pytest.raises(AttributeError):
        opt.lr = 0.2  # the step's lr is what changes: step.lr
    step = diffc.train_step(scaled_norm, ["w"], opt)
    step.lr = 0.2
    assert step.lr == 0.2 and opt.lr == 0.1


def test_reset_zeroes_state_and_step_count():
    """After reset, training continues like a fresh numpy Adam started at the current params."""
    step = make_step("sample", f64, "adam_wd_betas")
    params = init_params(7)
    X, Y, _ = dataset(8, 10)
    run_steps(step, params, zip(X[:4], Y[:4], strict=True))
    assert any(s.any() for s in step.state.values())
    step.reset()
    assert step.steps == 0
    assert all(not s.any() for s in step.state.values())
    start = [p.copy() for p in params]
    losses = run_steps(step, params, zip(X[4:], Y[4:], strict=True))
    want_losses, want_params = reference_run(start, list(zip(X[4:], Y[4:], strict=True)),
                                             "adam_wd_betas")
    assert_close(losses, want_losses, 1e-12)
    assert_params_close(params, want_params, 1e-12)


def assert_names(error, *names):
    """The message opens with one of `names` ("name: ...") and mentions each as a word."""
    message = str(error)
    assert message.split(":")[0] in names, message
    assert all(re.search(rf"\b{re.escape(n)}\b", message) for n in names), message


def _read_only(args):
    args[0] = args[0].copy()
    args[0].flags.writeable = False
    return ("W1",)


def _non_contiguous(args):
    args[2] = np.asfortranarray(args[2])
    return ("W2",)


def _wrong_dtype(args):
    args[1] = args[1].astype(np.float32)
    return ("b1",)


def _overlap(args):
    args[4] = args[0][:4]  # rows of W1 as the batch x: the same buffer
    return ("W1", "x")


def _wrong_data_shape(args):
    args[4] = np.zeros((4, D + 1))
    return ("x",)


def _label_out_of_range(args):
    args[5] = np.array([0, 1, C, 2], np.int32)
    return ("y",)


def _batch_bound_twice(args):
    args[5] = np.zeros(5, np.int32)
    return ("y",)


@pytest.mark.parametrize("spoil", [_read_only, _non_contiguous, _wrong_dtype, _overlap,
                                   _wrong_data_shape, _label_out_of_range, _batch_bound_twice])
def test_rejected_call_writes_nothing(spoil):
    step = make_step("batch", f64, "adam")
    params = init_params(9)
    X, _, labels = dataset(10, 4)
    run_steps(step, params, [(X, labels)] * 2)
    args = params + [X, labels]
    names = spoil(args)
    before = [a.tobytes() for a in params + args]
    state = [s.tobytes() for s in step.state.values()]
    with pytest.raises(ArgumentError) as info:
        step(*args)
    assert_names(info.value, *names)
    assert [a.tobytes() for a in params + args] == before
    assert [s.tobytes() for s in step.state.values()] == state
    assert step.steps == 2


# ----------------------------------------------------------------------------- fit

FIT_N = 10


def fit_and_loop(kind, config, order_of_epoch, epochs=2, batch=4, **fit_kwargs):
    """(fit's losses and params, a Python loop's losses and params) from the same start."""
    X, Y, labels = dataset(11, FIT_N)
    T = targets(kind, Y, labels)
    fit_step, loop_step = make_step(kind, f64, config), make_step(kind, f64, config)
    fit_params, loop_params = init_params(12), init_params(12)
    extra = {"batch_size": batch} if kind == "batch" else {}
    fit_losses = fit_step.fit(*fit_params, X, T, epochs=epochs, **extra, **fit_kwargs)
    loop_losses = np.concatenate([
        run_steps(loop_step, loop_params, batches_of(kind, X, T, order_of_epoch(e), batch))
        for e in range(epochs)])
    assert fit_step.steps == loop_step.steps == len(loop_losses)
    return (fit_losses, fit_params), (loop_losses, loop_params)


def assert_same_run(a, b, tol=1e-12):
    (losses_a, params_a), (losses_b, params_b) = a, b
    assert losses_a.dtype == np.float64 and losses_a.shape == np.shape(losses_b)
    assert_close(losses_a, losses_b, tol)
    assert_params_close(params_a, params_b, tol)


@pytest.mark.parametrize("config", ["sgd", "momentum"])
@pytest.mark.parametrize("kind", ["sample", "label", "batch"])
def test_fit_in_order_equals_loop_of_steps(kind, config):
    fit, loop = fit_and_loop(kind, config, lambda e: np.arange(FIT_N), epochs=3, shuffle=False)
    assert len(fit[0]) == 3 * (FIT_N if kind != "batch" else 3)
    assert_same_run(fit, loop)


def test_fit_short_last_batch_loss_matches_numpy():
    """Batches 4, 4, 2: the last step's loss is the mean over its 2 samples."""
    step = make_step("batch", f64, "sgd")
    params = init_params(13)
    X, _, labels = dataset(14, FIT_N)
    want_losses, want_params = reference_run(
        params, batches_of("batch", X, labels, np.arange(FIT_N), 4), "sgd")
    losses = step.fit(*params, X, labels, batch_size=4, shuffle=False)
    assert len(losses) == 3
    assert_close(losses, want_losses, 1e-12)
    assert_params_close(params, want_params, 1e-12)


@pytest.mark.parametrize("kind", ["sample", "batch"])
def test_fit_shuffles_by_seed_and_epoch(kind):
    def order(e):
        return np.random.default_rng([7, e]).permutation(FIT_N)

    fit, loop = fit_and_loop(kind, "momentum", order, epochs=2, seed=7)
    assert_same_run(fit, loop)


def test_fit_same_seed_same_run_other_seed_differs():
    X, Y, _ = dataset(15, FIT_N)
    runs = []
    for seed in (3, 3, 4):
        params = init_params(16)
        losses = make_step("sample", f64, "sgd").fit(*params, X, Y, epochs=2, seed=seed)
        runs.append((losses, params))
    (l0, p0), (l1, p1), (l2, p2) = runs
    assert np.array_equal(l0, l1)
    assert all(np.array_equal(a, b) for a, b in zip(p0, p1, strict=True))
    assert not np.array_equal(l0, l2)
    assert not np.array_equal(p0[0], p2[0])


def test_each_fit_call_numbers_epochs_from_zero():
    X, Y, _ = dataset(17, FIT_N)
    step, loop_step = make_step("sample", f64, "momentum"), make_step("sample", f64, "momentum")
    params, loop_params = init_params(18), init_params(18)
    losses = np.concatenate([step.fit(*params, X, Y, seed=5) for _ in range(2)])
    order = np.random.default_rng([5, 0]).permutation(FIT_N)
    loop_losses = run_steps(loop_step, loop_params, batches_of("sample", X, Y, order, 1) * 2)
    assert_same_run((losses, params), (loop_losses, loop_params))


@pytest.mark.parametrize("kind", ["sample", "batch"])
def test_adam_fit_continues_the_step_count(kind):
    """3 step calls, then fit: the same as 3 + N (or 3 + batches) step calls."""
    X, Y, labels = dataset(19, FIT_N)
    T = targets(kind, Y, labels)
    first = batches_of(kind, X, T, np.arange(3), 3)
    rest = batches_of(kind, X, T, np.arange(FIT_N), 4)
    extra = {"batch_size": 4} if kind == "batch" else {}
    step, loop_step = make_step(kind, f64, "adam"), make_step(kind, f64, "adam")
    params, loop_params = init_params(20), init_params(20)
    run_steps(step, params, first)
    losses = step.fit(*params, X, T, shuffle=False, **extra)
    loop_losses = run_steps(loop_step, loop_params, first + rest)[len(first):]
    assert step.steps == loop_step.steps == len(first) + len(rest)
    assert_same_run((losses, params), (loop_losses, loop_params))
    want_losses, want_params = reference_run(init_params(20), first + rest, "adam")
    assert_same_run((losses, params), (want_losses[len(first):], want_params))


def _fit_error_cases():
    X, Y, labels = dataset(21, FIT_N)
    return [
        ("sample", (X, Y[:-1]), {}, ("x", "y")),
        ("batch", (X[:-1], labels), {}, ("x", "y")),
        ("sample", (X, Y), {"batch_size": 2}, ("batch_size",)),
        ("batch", (X, labels), {"batch_size": 0}, ("batch_size",)),
        ("batch", (X, labels), {"epochs": -1}, ("epochs",)),
        ("sample", (X, Y), {"epochs": -1}, ("epochs",)),
    ]


@pytest.mark.parametrize("kind, data, kwargs, names", _fit_error_cases())
def test_fit_rejects_bad_arguments(kind, data, kwargs, names):
    step = make_step(kind, f64, "momentum")
    params = init_params(22)
    before = [p.tobytes() for p in params]
    with pytest.raises(ArgumentError) as info:
        step.fit(*params, *data, **kwargs)
    assert all(re.search(rf"\b{n}\b", str(info.value)) for n in names), info.value
    assert [p.tobytes() for p in params] == before
    assert step.steps == 0 and all(not s.any() for s in step.state.values())


@diffc.function
def scalar_data(W: f64[4, 6], x: f64[6], y: i32, t: f64) -> f64:
    return nn.softmax_cross_entropy(W @ x, y) * t


@pytest.mark.parametrize("name, dtype", [("y", np.int64), ("y", np.int16), ("y", np.float64),
                                         ("t", np.float32), ("t", np.int64), ("x", np.float32)])
def test_fit_rejects_data_of_another_dtype(name, dtype):
    """Every sample is read natively as its declared dtype: data of another one (also scalar
    data, whose first sample alone would pass as a number) is rejected, nothing written."""
    rng = np.random.default_rng(23)
    W = rng.standard_normal((4, 6))
    data = {"x": rng.standard_normal((5, 6)), "y": np.array([3, 1, 2, 3, 1], np.int32),
            "t": rng.random(5)}
    data[name] = data[name].astype(dtype)
    step = diffc.train_step(scalar_data, ["W"], diffc.SGD(lr=0.1))
    before = W.tobytes()
    with pytest.raises(ArgumentError, match=rf"^{name}: expected .*, got {np.dtype(dtype)}"):
        step.fit(W, *data.values())
    assert W.tobytes() == before and step.steps == 0


def test_fit_with_scalar_data_equals_step_calls():
    rng = np.random.default_rng(24)
    W, X = rng.standard_normal((4, 6)), rng.standard_normal((5, 6))
    Y, T = np.array([3, 1, 2, 3, 1], np.int32), rng.random(5)
    fitted, looped = W.copy(), W.copy()
    step, loop_step = (diffc.train_step(scalar_data, ["W"], diffc.SGD(lr=0.1)) for _ in "ab")
    losses = step.fit(fitted, X, Y, T, shuffle=False)
    loop_losses = [loop_step(looped, X[i], int(Y[i]), float(T[i])) for i in range(5)]
    assert np.array_equal(losses, loop_losses) and np.array_equal(fitted, looped)


def test_fit_progress_writes_to_stderr_and_changes_nothing(capsys):
    X, Y, _ = dataset(23, 200)
    runs = []
    for progress in (False, True):
        params = init_params(24)
        losses = make_step("sample", f64, "sgd").fit(*params, X, Y, epochs=2, progress=progress)
        runs.append((losses, params))
    err = capsys.readouterr().err
    assert "loss" in err and "400" in err
    assert_same_run(runs[1], runs[0])


# ----------------------------------------------------------------------------- memory

def test_mnist_step_workspace_is_smaller_than_a_weight_copy():
    step = diffc.train_step(mlp_loss, PARAMS, diffc.SGD(lr=0.01)).compile()
    program = pipeline.optimize(step.program)  # what was compiled
    plan = plan_memory(program)
    assert sum(math.prod(t.shape) * t.dtype.itemsize for t in plan.slots) < 128 * 784 * 8
    assert len(program.updates) == 5  # the params and the step count
    assert all(id(new) in plan.in_place for _, new in program.updates)


# ----------------------------------------------------------------------------- what fit refuses

@diffc.function
def batch_in_fixed(W: f64[3, 4], x: f64[B, 4], M: f64[2, B]) -> f64:
    return (nn.dense(W, x).sum(1) * M).sum()


@diffc.function
def batch_in_other_axis(W: f64[3, 4], x: f64[B, 4], K: f64[B, B]) -> f64:
    return (nn.dense(W, x).sum(1) * K).sum()


@diffc.function
def labels_index_batch(W: f64[3, 4], x: f64[B, 4], y: i32[B]) -> f64:
    return nn.softmax_cross_entropy(x @ x.T * W.sum(), y)


@diffc.function
def constant_indexes_batch(W: f64[3, 4], x: f64[B, 4]) -> f64:
    return nn.softmax_cross_entropy((nn.dense(W, x) @ W).sum(1), 1)


ROWS = np.ones((5, 4))


@pytest.mark.parametrize("fn, data, two, found", [
    (batch_in_fixed, (ROWS, np.ones((2, 2))), (ROWS[:2], np.ones((2, 2))),
     "M: f64[2,B] uses the batch dim B in a fixed argument"),
    (batch_in_other_axis, (ROWS, np.ones((5, 5))), (ROWS[:2], np.ones((2, 2))),
     "K: f64[B,B] uses the batch dim B in a data argument's other axes"),
    (labels_index_batch, (ROWS, np.zeros(5, np.int32)), (ROWS[:2], np.zeros(2, np.int32)),
     "y: its labels index the batch dim B"),
    (constant_indexes_batch, (ROWS,), (ROWS[:2],),
     "a constant label or index indexes the batch dim B"),
], ids=["fixed", "other_axis", "labels", "constant_label"])
def test_fit_refuses_a_batch_dim_it_cannot_shorten(fn, data, two, found):
    """fit shortens the batch dim for an epoch's last batch and gathers rows only along the
    data's leading axis: any other use of the batch dim read the wrong elements (or labels out
    of range) in the last batch. The step itself still takes such arguments."""
    step = diffc.train_step(fn, ["W"], diffc.SGD(lr=0.1))
    W = np.ones((3, 4))
    with pytest.raises(diffc.SignatureError) as info:
        step.fit(W, *data, batch_size=2)
    assert str(info.value).startswith(f"fit: {found}")
    assert np.array_equal(W, np.ones((3, 4))) and step.steps == 0
    assert np.isfinite(step(W, *two)) and step.steps == 1
