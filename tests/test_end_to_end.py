"""Whole networks: compiled code vs the eager body vs an independent numpy forward pass."""
import numpy as np
import pytest
from models import init, mlp_loss, mlp_loss32

import diffc
from diffc import f32, f64, i32, i64, nn

RTOL = {f32: 1e-5, f64: 1e-12}


# ----------------------------------------------------------------------------- numpy reference

def np_log_softmax(z):
    shifted = z - z.max(axis=-1, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=-1, keepdims=True))


def np_mlp_loss(W1, b1, W2, b2, x, y):
    """relu hidden layer, softmax, cross-entropy with a one-hot (or soft) target, in float64."""
    W1, b1, W2, b2, x, y = (np.asarray(a, np.float64) for a in (W1, b1, W2, b2, x, y))
    h = np.maximum(W1 @ x + b1, 0.0)
    z = W2 @ h + b2
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    return -np.sum(y * np.log(p))


def np_batch_loss(W1, b1, W2, b2, W3, b3, X, labels):
    """Two relu layers, then the batch mean of -log softmax(z)[label], in float64."""
    W1, b1, W2, b2, W3, b3, X = (np.asarray(a, np.float64) for a in (W1, b1, W2, b2, W3, b3, X))
    h1 = np.maximum(X @ W1.T + b1, 0.0)
    h2 = np.maximum(h1 @ W2.T + b2, 0.0)
    z = h2 @ W3.T + b3
    return -np_log_softmax(z)[np.arange(len(labels)), labels].mean()


# ----------------------------------------------------------------------------- the API example

@diffc.function
def layer(W: f64[128, 784], b: f64[128], x: f64[784]) -> f64[128]:
    return nn.relu(nn.dense(W, x, b))


@diffc.function
def nested_mlp_loss(W1: f64[128, 784], b1: f64[128], W2: f64[10, 128], b2: f64[10],
                    x: f64[784], y: f64[10]) -> f64:
    return nn.cross_entropy(nn.softmax(nn.dense(W2, layer(W1, b1, x), b2)), y)


def mlp_samples(dt, count=5):
    """(params, x, y) for several samples: MNIST-like x in [0, 1), one-hot and soft targets."""
    rng = np.random.default_rng(0)
    params = init(rng, [784, 128, 10], dt)
    samples = []
    for i in range(count):
        x = rng.random(784).astype(dt)
        y = np.eye(10, dtype=dt)[i] if i < count - 1 else rng.dirichlet(np.ones(10)).astype(dt)
        samples.append((x, y))
    return params, samples


@pytest.mark.parametrize("fn, dt", [(mlp_loss, f64), (mlp_loss32, f32)], ids=["f64", "f32"])
def test_mlp_loss_compiled_vs_eager_vs_numpy(fn, dt):
    params, samples = mlp_samples(dt.np_dtype)
    for x, y in samples:
        ref = np_mlp_loss(*params, x, y)
        compiled = fn(*params, x, y)
        eager = fn.fn(*params, x, y)
        assert type(compiled) is float
        assert np.asarray(eager).shape == () and np.asarray(eager).dtype == dt.np_dtype
        assert compiled == pytest.approx(ref, rel=RTOL[dt])
        assert float(eager) == pytest.approx(ref, rel=RTOL[dt])
        assert compiled == pytest.approx(float(eager), rel=RTOL[dt])


def test_mlp_loss_inputs_are_not_modified():
    params, [(x, y), *_] = mlp_samples(np.float64)
    copies = [a.copy() for a in (*params, x, y)]
    mlp_loss(*params, x, y)
    for before, after in zip(copies, (*params, x, y), strict=True):
        np.testing.assert_array_equal(before, after)


def test_nested_function_equals_flat_version():
    params, samples = mlp_samples(np.float64)
    for x, y in samples:
        assert nested_mlp_loss(*params, x, y) == mlp_loss(*params, x, y)
    assert nested_mlp_loss.fn(*params, x, y) == pytest.approx(np_mlp_loss(*params, x, y),
                                                              rel=1e-12)
    assert nested_mlp_loss.ir == mlp_loss.ir  # inlined: the same equations


# ----------------------------------------------------------------------------- a batched network

def batched_network(dt, label_dt):
    @diffc.function(name=f"batch_loss_{dt}")
    def batch_loss(W1: dt[128, 784], b1: dt[128], W2: dt[64, 128], b2: dt[64],
                   W3: dt[10, 64], b3: dt[10], X: dt["B", 784], y: label_dt["B"]) -> dt:
        h1 = nn.relu(nn.dense(W1, X, b1))
        h2 = nn.relu(nn.dense(W2, h1, b2))
        return nn.softmax_cross_entropy(nn.dense(W3, h2, b3), y)

    @diffc.function(name=f"affine_{dt}")
    def affine(W: dt["O", "I"], b: dt["O"], h: dt["N", "I"]) -> dt["N", "O"]:
        return h @ W.T + b

    @diffc.function(name=f"nested_batch_loss_{dt}")
    def nested_batch_loss(W1: dt[128, 784], b1: dt[128], W2: dt[64, 128], b2: dt[64],
                          W3: dt[10, 64], b3: dt[10], X: dt["B", 784], y: label_dt["B"]) -> dt:
        h2 = nn.relu(affine(W2, b2, nn.relu(affine(W1, b1, X))))
        return nn.softmax_cross_entropy(affine(W3, b3, h2), y)

    return batch_loss, nested_batch_loss


NETWORKS = {dt: batched_network(dt, label_dt) for dt, label_dt in [(f32, i32), (f64, i64)]}
LABEL_DTYPES = {f32: np.int32, f64: np.int64}


@pytest.mark.parametrize("dt", [f32, f64])
def test_batched_network_vs_numpy(dt):
    batch_loss, nested_batch_loss = NETWORKS[dt]
    rng = np.random.default_rng(0)
    params = init(rng, [784, 128, 64, 10], dt.np_dtype)
    for size in (1, 7, 64):
        X = rng.random((size, 784)).astype(dt.np_dtype)
        y = rng.integers(0, 10, size).astype(LABEL_DTYPES[dt])
        ref = np_batch_loss(*params, X, y)
        out = batch_loss(*params, X, y)
        assert type(out) is float
        assert out == pytest.approx(ref, rel=RTOL[dt]), size
        assert float(batch_loss.fn(*params, X, y)) == pytest.approx(ref, rel=RTOL[dt]), size
        assert nested_batch_loss(*params, X, y) == pytest.approx(out, rel=RTOL[dt]), size


def test_batch_loss_is_the_mean_of_per_sample_losses():
    batch_loss, _ = NETWORKS[f64]
    rng = np.random.default_rng(1)
    params = init(rng, [784, 128, 64, 10], np.float64)
    X, y = rng.random((7, 784)), rng.integers(0, 10, 7)
    per_sample = [batch_loss(*params, X[i:i + 1], y[i:i + 1]) for i in range(7)]
    assert batch_loss(*params, X, y) == pytest.approx(np.mean(per_sample), rel=1e-12)
