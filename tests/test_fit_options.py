"""fit's options beyond the data: `drop_last` and `callback` / `callback_every`.

Each run is compared with a replay: a fresh step called once per batch (the batches computed
here from the documented shuffling rule: epoch e of a fit call visits the samples in
`default_rng([seed, e]).permutation(n)`), which must give the same losses and params bit for
bit, since the same native code runs.
"""
import numpy as np
import pytest

import diffc
from diffc import ArgumentError, f64, i32, nn

D, H, C = 5, 7, 3


@diffc.function
def batch_loss(W1: f64[H, D], b1: f64[H], W2: f64[C, H], x: f64["B", D], y: i32["B"]) -> f64:
    return nn.softmax_cross_entropy(nn.dense(W2, nn.relu(nn.dense(W1, x, b1))), y)


@diffc.function
def sample_loss(W1: f64[H, D], b1: f64[H], W2: f64[C, H], x: f64[D], y: i32) -> f64:
    return nn.softmax_cross_entropy(nn.dense(W2, nn.relu(nn.dense(W1, x, b1))), y)


PARAMS = ["W1", "b1", "W2"]


def setup(n, seed=0):
    rng = np.random.default_rng(seed)
    params = [rng.normal(0, 0.5, s) for s in ((H, D), (H,), (C, H))]
    return params, rng.standard_normal((n, D)), rng.integers(0, C, n).astype(np.int32)


def batches(n, batch, epochs, seed, drop_last):
    """The sample indices of every step of fit(batch_size=batch, seed=seed, epochs=epochs)."""
    out = []
    for e in range(epochs):
        order = np.random.default_rng([seed, e]).permutation(n)
        stop = n - n % batch if drop_last else n
        out += [order[s:s + batch] for s in range(0, stop, batch)]
    return out


def replay(fn, params, X, Y, steps, optimizer, per_sample=False, lrs=None):
    """A fresh step called once per entry of `steps` (index arrays): (losses, params, step)."""
    step = diffc.train_step(fn, PARAMS, optimizer)
    params = [p.copy() for p in params]
    losses = []
    for k, rows in enumerate(steps):
        if lrs is not None:
            step.lr = lrs[k]
        data = (X[rows[0]], int(Y[rows[0]])) if per_sample else (X[rows], Y[rows])
        losses.append(step(*params, *data))
    return np.array(losses), params, step


def assert_same(params, other):
    for a, b in zip(params, other, strict=True):
        np.testing.assert_array_equal(a, b)


# ----------------------------------------------------------------------------- drop_last

@pytest.mark.parametrize("n, batch", [(23, 5), (20, 5), (9, 4)])
def test_drop_last_skips_the_short_batch_of_every_epoch(n, batch):
    """With drop_last each epoch takes n // batch full batches of its own permutation: the
    samples left out differ from epoch to epoch, and no step sees fewer than `batch`."""
    params, X, Y = setup(n)
    step = diffc.train_step(batch_loss, PARAMS, diffc.SGD(lr=0.1, momentum=0.9))
    losses = step.fit(*params, X, Y, batch_size=batch, epochs=3, seed=4, drop_last=True)
    steps = batches(n, batch, 3, 4, drop_last=True)
    assert len(losses) == 3 * (n // batch) == len(steps) == step.steps
    assert all(len(rows) == batch for rows in steps)
    want, want_params, _ = replay(batch_loss, setup(n)[0], X, Y, steps,
                                  diffc.SGD(lr=0.1, momentum=0.9))
    np.testing.assert_array_equal(losses, want)
    assert_same(params, want_params)


def test_without_drop_last_the_short_batch_is_a_step():
    params, X, Y = setup(23)
    step = diffc.train_step(batch_loss, PARAMS, diffc.SGD(lr=0.1))
    losses = step.fit(*params, X, Y, batch_size=5, epochs=2, seed=1)
    steps = batches(23, 5, 2, 1, drop_last=False)
    assert len(losses) == 10 and [len(r) for r in steps[:5]] == [5, 5, 5, 5, 3]
    want, want_params, _ = replay(batch_loss, setup(23)[0], X, Y, steps, diffc.SGD(lr=0.1))
    np.testing.assert_array_equal(losses, want)
    assert_same(params, want_params)


def test_drop_last_per_sample_drops_nothing():
    """A per-sample step's batches are one sample: none is short, none is dropped."""
    params, X, Y = setup(6)
    step = diffc.train_step(sample_loss, PARAMS, diffc.SGD(lr=0.1))
    losses = step.fit(*params, X, Y, epochs=2, seed=2, drop_last=True)
    steps = batches(6, 1, 2, 2, drop_last=True)
    want, want_params, _ = replay(sample_loss, setup(6)[0], X, Y, steps, diffc.SGD(lr=0.1),
                                  per_sample=True)
    np.testing.assert_array_equal(losses, want)
    assert_same(params, want_params)


@pytest.mark.parametrize("batch_size, n", [(8, 5), (None, 20)])
def test_drop_last_with_fewer_samples_than_a_batch_is_refused(batch_size, n):
    """No whole batch to take (the default batch is 32): an error, nothing trained."""
    params, X, Y = setup(n)
    before = [p.copy() for p in params]
    step = diffc.train_step(batch_loss, PARAMS, diffc.SGD(lr=0.1))
    with pytest.raises(ArgumentError, match=rf"^batch_size: with drop_last, {n} samples make "
                                            rf"no whole batch of {batch_size or 32}"):
        step.fit(*params, X, Y, batch_size=batch_size, drop_last=True)
    assert_same(params, before)
    assert step.steps == 0


@pytest.mark.parametrize("bad", [1, None, "yes", np.array([True])])
def test_drop_last_must_be_a_bool(bad):
    params, X, Y = setup(10)
    step = diffc.train_step(batch_loss, PARAMS, diffc.SGD(lr=0.1))
    with pytest.raises(ArgumentError, match="^drop_last: expected True or False"):
        step.fit(*params, X, Y, drop_last=bad)
    assert step.steps == 0


# ----------------------------------------------------------------------------- callback

def record_calls():
    calls = []
    return calls, lambda s, epoch, loss: calls.append((s, epoch, loss))


@pytest.mark.parametrize("every", [None, 1, 3, 4, 100])
@pytest.mark.parametrize("drop_last", [False, True])
def test_callback_cadence(every, drop_last):
    """After every `every`-th step of the call (counted across epochs), or after each epoch's
    last step by default, with that step's index (from 0), epoch and loss."""
    params, X, Y = setup(18)
    step = diffc.train_step(batch_loss, PARAMS, diffc.Adam(lr=0.01))
    calls, callback = record_calls()
    losses = step.fit(*params, X, Y, batch_size=5, epochs=3, seed=6, drop_last=drop_last,
                      callback=callback, callback_every=every)
    per_epoch = 3 if drop_last else 4
    assert len(losses) == 3 * per_epoch
    marks = ([e * per_epoch + per_epoch - 1 for e in range(3)] if every is None else
             list(range(every - 1, len(losses), every)))
    assert calls == [(s, s // per_epoch, losses[s]) for s in marks]
    assert all(type(s) is int and type(e) is int and type(v) is float for s, e, v in calls)
    steps = batches(18, 5, 3, 6, drop_last)
    want, want_params, _ = replay(batch_loss, setup(18)[0], X, Y, steps, diffc.Adam(lr=0.01))
    np.testing.assert_array_equal(losses, want)  # the callback changes nothing
    assert_same(params, want_params)


def test_callback_sets_the_learning_rate_of_the_next_steps():
    """A schedule from the callback: lr halved after every 2nd step applies from the next."""
    params, X, Y = setup(12)
    step = diffc.train_step(batch_loss, PARAMS, diffc.SGD(lr=0.2, momentum=0.5))

    def halve(s, epoch, loss):
        step.lr = step.lr / 2

    losses = step.fit(*params, X, Y, batch_size=4, epochs=2, seed=0, callback=halve,
                      callback_every=2)
    lrs = [0.2 / 2 ** (k // 2) for k in range(6)]
    want, want_params, _ = replay(batch_loss, setup(12)[0], X, Y, batches(12, 4, 2, 0, False),
                                  diffc.SGD(lr=0.2, momentum=0.5), lrs=lrs)
    np.testing.assert_array_equal(losses, want)
    assert_same(params, want_params)
    assert step.lr == 0.2 / 8


class Stop(Exception):
    pass


def test_callback_exception_in_a_cross_step_fused_fit_keeps_whole_steps():
    """Per-sample plain SGD runs the cross-step fused loop (each step also computes the next
    sample's first layer): stopped by the callback after step 7 of 12, the params are those
    of 7 step calls and fitting again goes on from them."""
    params, X, Y = setup(6)
    step = diffc.train_step(sample_loss, PARAMS, diffc.SGD(lr=0.1))
    assert step.compile().native.native.fit_rewrites  # the fused loop is the one tested

    def stop(s, epoch, loss):
        if s == 6:
            raise Stop

    with pytest.raises(Stop):
        step.fit(*params, X, Y, epochs=2, seed=3, callback=stop, callback_every=1)
    steps = batches(6, 1, 2, 3, False)
    want, want_params, other = replay(sample_loss, setup(6)[0], X, Y, steps[:7],
                                      diffc.SGD(lr=0.1), per_sample=True)
    assert step.steps == 7 and len(step.fit_losses) == 7
    np.testing.assert_array_equal(step.fit_losses, want)
    assert_same(params, want_params)
    more = step.fit(*params, X, Y, seed=9)
    other_losses = other.fit(*want_params, X, Y, seed=9)
    np.testing.assert_array_equal(more, other_losses)
    assert_same(params, want_params)


@pytest.mark.parametrize("kwargs, message", [
    ({"callback": 3}, "^callback: expected a function of"),
    ({"callback_every": 2}, "^callback_every: given without a callback"),
    ({"callback": print, "callback_every": 0}, "^callback_every: expected an int >= 1"),
    ({"callback": print, "callback_every": 2.0}, "^callback_every: expected an int >= 1"),
])
def test_callback_arguments_are_checked_before_anything_runs(kwargs, message):
    params, X, Y = setup(10)
    before = [p.copy() for p in params]
    step = diffc.train_step(batch_loss, PARAMS, diffc.SGD(lr=0.1))
    with pytest.raises(ArgumentError, match=message):
        step.fit(*params, X, Y, batch_size=4, **kwargs)
    assert_same(params, before)
    assert step.steps == 0


# ----------------------------------------------------------------------------- data shapes

@diffc.function
def regress(W: f64[D], x: f64[D], t: f64) -> f64:
    return (nn.sum(W * x) - t) ** 2


@pytest.mark.parametrize("kind", ["sample", "batch"])
def test_labels_as_a_column_train_like_1d_labels(kind):
    """Labels shaped (N, 1) (as a column of a data frame) are one label per sample: the same
    run as with (N,). Before, a per-sample fit said 'y: expected a i64 integer, got ...'."""
    fn, extra = (sample_loss, {}) if kind == "sample" else (batch_loss, {"batch_size": 4})
    runs = []
    for shape in ((-1,), (-1, 1)):
        params, X, Y = setup(10)
        step = diffc.train_step(fn, PARAMS, diffc.SGD(lr=0.1, momentum=0.9))
        runs.append((step.fit(*params, X, Y.reshape(shape), epochs=2, **extra), params))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    assert_same(runs[0][1], runs[1][1])


def test_scalar_targets_as_a_column_train_like_1d_targets():
    rng = np.random.default_rng(3)
    X, T = rng.standard_normal((8, D)), rng.standard_normal(8)
    runs = []
    for targets in (T, T.reshape(-1, 1)):
        W = np.zeros(D)
        runs.append((diffc.train_step(regress, ["W"], diffc.SGD(lr=0.05)).fit(W, X, targets), W))
    np.testing.assert_array_equal(runs[0][0], runs[1][0])
    np.testing.assert_array_equal(runs[0][1], runs[1][1])


@pytest.mark.parametrize("kind, data, message", [
    ("sample", lambda X, Y: (X, np.eye(C, dtype=np.int32)[Y]),
     r"^y: expected 1-d data of shape \(N,\) \(one i32 per sample\), got int32 \(10, 3\)"),
    ("batch", lambda X, Y: (X, Y.reshape(5, 2)),
     r"^y: expected 1-d data of shape \(N,\) \(one i32 per sample\), got int32 \(5, 2\)"),
    ("sample", lambda X, Y: (X[:, :, None], Y),
     r"^x: expected 2-d data of shape \(N, 5\) \(one f64\[5\] per sample\), got float64 "
     r"\(10, 5, 1\)"),
    ("batch", lambda X, Y: (np.ones((10, D + 1)), Y),
     r"^x: expected 2-d data of shape \(N, 5\) \(one f64\[5\] per sample\), got float64 "
     r"\(10, 6\)"),
    ("batch", lambda X, Y: (X, Y.astype(np.int64)),
     r"^y: expected i32 data \(rows of i32\[B\]\), got int64 \(10,\) \(convert it with "
     r"\.astype\(np\.int32\)\)"),
    ("sample", lambda X, Y: (X, np.stack([Y, Y], 1)[:, :1]),
     r"^y: expected a C-contiguous array"),
], ids=["one-hot-for-labels", "2d-labels", "3d-data", "wrong-width", "int64", "strided-column"])
def test_fit_data_of_the_wrong_shape_or_dtype_says_what_fits(kind, data, message):
    fn, extra = (sample_loss, {}) if kind == "sample" else (batch_loss, {"batch_size": 4})
    params, X, Y = setup(10)
    before = [p.copy() for p in params]
    step = diffc.train_step(fn, PARAMS, diffc.SGD(lr=0.1))
    with pytest.raises(ArgumentError, match=message):
        step.fit(*params, *data(X, Y), **extra)
    assert_same(params, before)
    assert step.steps == 0


# ----------------------------------------------------------------------------- batches in place

@pytest.mark.parametrize("offset", [0, 8, 16, 24, 40, 56], ids=lambda o: f"+{o}B")
def test_unshuffled_batches_of_unaligned_data_train_as_the_step_loop(offset):
    """Without shuffling, batches are read where they lie in the data (with vector loads from
    wherever the rows start): at every offset from a cache line the trajectory is a step
    loop's, bit for bit."""
    params, X, Y = setup(23)
    raw = np.empty(X.nbytes + 128, np.uint8)
    start = (-raw.ctypes.data) % 64 + offset
    placed = raw[start:start + X.nbytes].view(np.float64).reshape(X.shape)
    placed[...] = X
    step = diffc.train_step(batch_loss, PARAMS, diffc.SGD(0.1))
    mine = [p.copy() for p in params]
    losses = step.fit(*mine, placed, Y, batch_size=5, epochs=2, shuffle=False)
    order = [np.arange(s, min(s + 5, 23)) for s in range(0, 23, 5)] * 2
    want, theirs, _ = replay(batch_loss, params, X, Y, order, diffc.SGD(0.1))
    np.testing.assert_array_equal(losses, want)
    assert_same(mine, theirs)
