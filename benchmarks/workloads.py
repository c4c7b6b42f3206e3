"""The benchmark workloads, each in diffc and as a hand-written numpy baseline.

W1: per-sample SGD on 784 -> 128 -> 10 (relu, softmax, cross-entropy with one-hot targets).
W2: mini-batch SGD on 784 -> 128 -> 64 -> 10 (relu, softmax-cross-entropy, integer labels).
Every runner takes fresh copies of the same initial params and data, and returns
(losses per step, seconds for the whole pass).
"""

import os
import tempfile
import time
from unittest import mock

import numpy as np

import diffc
from diffc import Array, i32, nn

LR = 0.01


def he_params(rng, sizes, dtype):
    """He-initialized (out, in) weights and zero biases for consecutive layer sizes."""
    params = []
    for n_in, n_out in zip(sizes[:-1], sizes[1:], strict=True):
        params += [(rng.standard_normal((n_out, n_in)) * np.sqrt(2 / n_in)).astype(dtype),
                   np.zeros(n_out, dtype)]
    return params


def data(rng, n, dtype, one_hot: bool):
    x = rng.random((n, 784)).astype(dtype)
    labels = rng.integers(0, 10, n).astype(np.int32)
    return x, (np.eye(10, dtype=dtype)[labels] if one_hot else labels)


# ----------------------------------------------------------------------------- W1

def w1_function(dt):
    @diffc.function(name=f"w1_{dt.name}")
    def mlp_loss(W1: Array[dt, 128, 784], b1: Array[dt, 128], W2: Array[dt, 10, 128],
                 b2: Array[dt, 10], x: Array[dt, 784], y: Array[dt, 10]) -> dt:
        h = nn.relu(nn.dense(W1, x, b1))
        return nn.cross_entropy(nn.softmax(nn.dense(W2, h, b2)), y)
    return mlp_loss


def w1_numpy(params, x, y):
    W1, b1, W2, b2 = params
    lr = W1.dtype.type(LR)
    losses = np.empty(len(x))
    start = time.perf_counter()
    for i in range(len(x)):
        xi, yi = x[i], y[i]
        z1 = W1 @ xi + b1
        h = np.maximum(z1, 0)
        z2 = W2 @ h + b2
        e = np.exp(z2 - z2.max())
        p = e / e.sum()
        losses[i] = -np.sum(yi * np.log(p))
        dz2 = p * yi.sum() - yi
        dz1 = (W2.T @ dz2) * (z1 > 0)
        W2 -= lr * np.outer(dz2, h)
        b2 -= lr * dz2
        W1 -= lr * np.outer(dz1, xi)
        b1 -= lr * dz1
    return losses, time.perf_counter() - start


# ----------------------------------------------------------------------------- W2

def w2_function(dt):
    @diffc.function(name=f"w2_{dt.name}")
    def mlp_loss(W1: Array[dt, 128, 784], b1: Array[dt, 128], W2: Array[dt, 64, 128],
                 b2: Array[dt, 64], W3: Array[dt, 10, 64], b3: Array[dt, 10],
                 x: Array[dt, "B", 784], y: Array[i32, "B"]) -> dt:
        h1 = nn.relu(nn.dense(W1, x, b1))
        h2 = nn.relu(nn.dense(W2, h1, b2))
        return nn.softmax_cross_entropy(nn.dense(W3, h2, b3), y)
    return mlp_loss


def w2_numpy(params, x, labels, batch):
    W1, b1, W2, b2, W3, b3 = params
    lr = W1.dtype.type(LR)
    steps = -(-len(x) // batch)
    losses = np.empty(steps)
    start = time.perf_counter()
    for s in range(steps):
        xb, yb = x[s * batch:(s + 1) * batch], labels[s * batch:(s + 1) * batch]
        n = len(xb)
        z1 = xb @ W1.T + b1
        h1 = np.maximum(z1, 0)
        z2 = h1 @ W2.T + b2
        h2 = np.maximum(z2, 0)
        z3 = h2 @ W3.T + b3
        m = z3.max(axis=1, keepdims=True)
        e = np.exp(z3 - m)
        total = e.sum(axis=1, keepdims=True)
        losses[s] = np.mean(np.log(total[:, 0]) + m[:, 0] - z3[np.arange(n), yb])
        dz3 = e / total
        dz3[np.arange(n), yb] -= 1
        dz3 /= n
        dz2 = (dz3 @ W3) * (z2 > 0)
        dz1 = (dz2 @ W2) * (z1 > 0)
        W3 -= lr * (dz3.T @ h2)
        b3 -= lr * dz3.sum(axis=0)
        W2 -= lr * (dz2.T @ h1)
        b2 -= lr * dz2.sum(axis=0)
        W1 -= lr * (dz1.T @ xb)
        b1 -= lr * dz1.sum(axis=0)
    return losses, time.perf_counter() - start


# ----------------------------------------------------------------------------- diffc

def sgd_step(function, params):
    """The SGD train step of function's leading len(params) parameters."""
    names = [p.name for p in function.signature.params[:len(params)]]
    return diffc.train_step(function, params=names, optimizer=diffc.SGD(lr=LR))


def diffc_compile(function, params):
    """The compiled SGD step, compiled cold (an empty cache folder) and again from the on-disk
    cache. Returns (step, (cold seconds, cached seconds))."""
    seconds = []
    with tempfile.TemporaryDirectory() as cache, mock.patch.dict(os.environ,
                                                                 {"DIFFC_CACHE_DIR": cache}):
        for _ in range(2):
            step = sgd_step(function, params)
            start = time.perf_counter()
            step.compile()
            seconds.append(time.perf_counter() - start)
    return step, tuple(seconds)


def diffc_fit(step, params, data_args, batch=None):
    """One epoch of fit in order. Returns (losses, seconds)."""
    start = time.perf_counter()
    losses = step.fit(*params, *data_args, batch_size=batch, shuffle=False)
    return losses, time.perf_counter() - start


def diffc_step_calls(step, params, data_args):
    """One pass calling the compiled step from Python once per sample (the `W1 step()`
    row). Returns (losses, seconds)."""
    x, y = data_args
    losses = np.empty(len(x))
    start = time.perf_counter()
    for i in range(len(x)):
        losses[i] = step(*params, x[i], y[i])
    return losses, time.perf_counter() - start
