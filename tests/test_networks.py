"""Networks written with the language's shapes, indexing and sizes, trained with train_step and
fit against numpy trajectories written here: the average of a 2x2 image learned by a loop of
scalar products, one attention head over sequences of any length (examples/attention.py) and
an embedding-bag classifier (examples/embedding_bag.py); the examples run and learn."""
import importlib.util
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import diffc
from diffc import f64, nn

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def example(name: str):
    """An example script imported as a module (its main() does not run)."""
    spec = importlib.util.spec_from_file_location(f"example_{name}", EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# ----------------------------------------------------------------------------- rectangles

@diffc.function
def rectangles(x: f64[4], w: f64[4], target: f64) -> f64:
    """The seed's network: the pixels of a 2x2 image times 4 weights, summed in a loop."""
    h = 0.0
    for i in range(4):
        h = h + x[i] * w[i]
    return nn.mse(h, target)


def _np_rectangles(X, T, w, lr):
    """Per-sample SGD on (x . w - t)^2 in numpy: the losses and the final w."""
    losses = []
    for x, t in zip(X, T, strict=True):
        d = x @ w - t
        losses.append(d * d)
        w = w - lr * 2 * d * x
    return np.array(losses), w


def test_rectangles_learn_the_average_like_numpy():
    rng = np.random.default_rng(0)
    X = rng.random((300, 4))
    T = X.mean(axis=1)
    step = diffc.train_step(rectangles, ["w"], optimizer=diffc.SGD(lr=0.5))
    w = np.zeros(4)
    losses = [step(X[i], w, T[i]) for i in range(50)]
    want, w_ref = _np_rectangles(X[:50], T[:50], np.zeros(4), 0.5)
    np.testing.assert_allclose(losses, want, rtol=1e-12, atol=1e-300)
    np.testing.assert_allclose(w, w_ref, rtol=1e-12)
    fitted = step.fit(X, w, T, epochs=3, shuffle=False)
    want, w_ref = _np_rectangles(np.tile(X, (3, 1)), np.tile(T, 3), w_ref, 0.5)
    np.testing.assert_allclose(fitted, want, rtol=1e-9, atol=1e-20)
    np.testing.assert_allclose(w, w_ref, rtol=1e-12)
    np.testing.assert_allclose(w, 0.25, atol=1e-6)


# ----------------------------------------------------------------------------- attention

def _np_attention(Wq, Wk, Wv, queries, keys, values, targets):
    """The example's loss and its gradients, derived by hand."""
    q, k, v = queries @ Wq, keys @ Wk, values @ Wv
    scale = 1 / np.sqrt(q.shape[1])
    s = q @ k.T * scale
    e = np.exp(s - s.max(axis=1, keepdims=True))
    p = e / e.sum(axis=1, keepdims=True)
    out = p @ v
    n = len(queries)
    d_out = 2 * (out - targets) / n
    dp = d_out @ v.T
    ds = p * (dp - (dp * p).sum(axis=1, keepdims=True)) * scale
    return (np.sum((out - targets) ** 2) / n, queries.T @ (ds @ k), keys.T @ (ds.T @ q),
            values.T @ (p.T @ d_out))


def test_attention_trains_like_numpy():
    """SGD on sequences of changing length (one compiled step for every length)."""
    mod = example("attention")
    params = mod.init(np.random.default_rng(1))
    ref = [p.copy() for p in params]
    step = diffc.train_step(mod.attention_loss, ["Wq", "Wk", "Wv"], optimizer=diffc.SGD(lr=0.1))
    rng = np.random.default_rng(2)
    lengths = set()
    for _ in range(40):
        queries, keys, values, targets, _ = mod.sequence(rng)
        lengths.add(len(queries))
        loss = step(*params, queries, keys, values, targets)
        want, *grads = _np_attention(*ref, queries, keys, values, targets)
        assert loss == pytest.approx(want, rel=1e-10)
        ref = [p - 0.1 * g for p, g in zip(ref, grads, strict=True)]
    assert len(lengths) > 5
    for got, want in zip(params, ref, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-12)


def test_attention_gradients_match_jax():
    jax = pytest.importorskip("jax")
    jax.config.update("jax_enable_x64", True)
    jnp = jax.numpy
    mod = example("attention")

    def loss(Wq, Wk, Wv, queries, keys, values, targets):
        q, k, v = queries @ Wq, keys @ Wk, values @ Wv
        out = jax.nn.softmax(q @ k.T / jnp.sqrt(q.shape[1]), axis=-1) @ v
        return jnp.sum((out - targets) ** 2) / queries.shape[0]

    grad = diffc.grad(mod.attention_loss, ["Wq", "Wk", "Wv"])
    rng = np.random.default_rng(3)
    params = [p * 10 for p in mod.init(rng)]  # sharper attention than at the start
    for _ in range(2):
        data = mod.sequence(rng)[:4]
        want = jax.jit(jax.grad(loss, argnums=(0, 1, 2)))(*params, *data)
        for g, w in zip(grad(*params, *data), want, strict=True):
            np.testing.assert_allclose(g, np.asarray(w), rtol=1e-11, atol=1e-13)


# ----------------------------------------------------------------------------- embedding bag

def _np_bag(E, W, b, tokens, labels, lr):
    """One SGD step of the example's classifier in numpy (float64): loss and new params."""
    h = E[tokens].mean(axis=1)
    z = h @ W.T + b
    z = z - z.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    n = len(labels)
    dz = (np.exp(logp) - np.eye(W.shape[0])[labels]) / n
    dh = dz @ W
    dE = np.zeros_like(E)
    np.add.at(dE, tokens, np.repeat(dh[:, None, :] / tokens.shape[1], tokens.shape[1], axis=1))
    return -logp[np.arange(n), labels].mean(), E - lr * dE, W - lr * dz.T @ h, b - lr * dz.sum(0)


def test_embedding_bag_fits_like_numpy():
    mod = example("embedding_bag")
    rng = np.random.default_rng(4)
    params = mod.init(rng)
    tokens, labels = mod.documents(rng, 100)
    ref = [p.astype(np.float64) for p in params]
    step = diffc.train_step(mod.bag_loss, ["E", "W", "b"], optimizer=diffc.SGD(lr=mod.LR))
    losses = step.fit(*params, tokens, labels, batch_size=16, shuffle=False)
    assert len(losses) == 7  # the last batch takes the 4 left over
    for k, start in enumerate(range(0, 100, 16)):
        want, *ref = _np_bag(*ref, tokens[start:start + 16], labels[start:start + 16], mod.LR)
        assert losses[k] == pytest.approx(want, rel=1e-5)
    for got, want in zip(params, ref, strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-6)


# ----------------------------------------------------------------------------- the examples run

def _run(name: str, *args: str) -> str:
    run = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py"), *args],
                         capture_output=True, text=True, timeout=120, check=False)
    assert run.returncode == 0, run.stderr
    return run.stdout


def test_attention_example_learns():
    out = _run("attention", "1500")
    before = re.search(r"before training: loss ([\d.]+), queries attending to their token "
                       r"(\d+)%", out)
    after = re.search(r"after training: loss ([\d.]+), queries attending to their token "
                      r"(\d+)%", out)
    assert before and after, out
    assert float(after[1]) < 0.1 * float(before[1]) and int(before[2]) < 30
    assert int(after[2]) >= 95


def test_embedding_bag_example_learns():
    out = _run("embedding_bag", "6")
    before = re.search(r"before training: test accuracy ([\d.]+)%", out)
    accuracies = [float(a) for a in re.findall(r"test accuracy ([\d.]+)%$", out, re.MULTILINE)]
    assert before and len(accuracies) == 6, out
    assert float(before[1]) < 40 and accuracies[-1] >= 95
    found = re.findall(r"\((\d) of 5 found\)", out)
    assert len(found) == 4 and all(int(n) >= 4 for n in found), out
