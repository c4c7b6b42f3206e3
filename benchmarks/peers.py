"""Optional peer columns: the same workloads in torch (eager) and jax (the whole pass in one
`jax.lax.scan` under `jit`). Each runner returns (losses, seconds) or raises ImportError."""
from __future__ import annotations

import functools
import time

import numpy as np
from workloads import LR


def w1_torch(params, x, y):
    import torch
    ps = [torch.tensor(p, requires_grad=True) for p in params]
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    opt = torch.optim.SGD(ps, lr=LR)
    losses = np.empty(len(x))
    start = time.perf_counter()
    for i in range(len(x)):
        W1, b1, W2, b2 = ps
        h = torch.relu(W1 @ xt[i] + b1)
        p = torch.softmax(W2 @ h + b2, dim=0)
        loss = -(yt[i] * torch.log(p)).sum()
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses[i] = loss.item()
    return losses, time.perf_counter() - start


def w2_torch(params, x, labels, batch):
    import torch
    ps = [torch.tensor(p, requires_grad=True) for p in params]
    xt, yt = torch.from_numpy(x), torch.from_numpy(labels.astype(np.int64))
    opt = torch.optim.SGD(ps, lr=LR)
    steps = -(-len(x) // batch)
    losses = np.empty(steps)
    start = time.perf_counter()
    for s in range(steps):
        W1, b1, W2, b2, W3, b3 = ps
        xb, yb = xt[s * batch:(s + 1) * batch], yt[s * batch:(s + 1) * batch]
        h = torch.relu(torch.relu(xb @ W1.T + b1) @ W2.T + b2)
        loss = torch.nn.functional.cross_entropy(h @ W3.T + b3, yb)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses[s] = loss.item()
    return losses, time.perf_counter() - start


@functools.cache
def _jax_train(loss_fn):
    """The jitted pass of SGD steps on loss_fn, one per loss: jit keeps its compiled code for
    the shapes it has seen, so only a stack's first pass compiles."""
    import jax

    def body(ps, xy):
        loss, grads = jax.value_and_grad(loss_fn)(ps, *xy)
        return [p - LR * g for p, g in zip(ps, grads, strict=True)], loss

    return jax.jit(lambda ps, xs, ys: jax.lax.scan(body, ps, (xs, ys)))


_jax_compiled = set()  # (loss, shapes and dtypes) passes that have compiled


def _jax_scan(loss_fn, params, xs, ys):
    import jax
    import jax.numpy as jnp
    if xs.dtype == np.float64:
        jax.config.update("jax_enable_x64", True)
    run = _jax_train(loss_fn)
    ps, xs, ys = [jnp.asarray(p) for p in params], jnp.asarray(xs), jnp.asarray(ys)
    key = (loss_fn, *((a.shape, str(a.dtype)) for a in (*ps, xs, ys)))
    if key not in _jax_compiled:  # compile outside the timing
        run(ps, xs, ys)[1].block_until_ready()
        _jax_compiled.add(key)
    start = time.perf_counter()
    _, losses = run(ps, xs, ys)
    losses = np.asarray(losses.block_until_ready(), np.float64)
    return losses, time.perf_counter() - start


def _w1_loss(ps, xi, yi):
    import jax
    import jax.numpy as jnp
    W1, b1, W2, b2 = ps
    return -jnp.sum(yi * jnp.log(jax.nn.softmax(W2 @ jax.nn.relu(W1 @ xi + b1) + b2)))


def _w2_loss(ps, xb, yb):
    import jax
    import jax.numpy as jnp
    W1, b1, W2, b2, W3, b3 = ps
    h = jax.nn.relu(jax.nn.relu(xb @ W1.T + b1) @ W2.T + b2)
    logp = jax.nn.log_softmax(h @ W3.T + b3)
    return -jnp.mean(jnp.take_along_axis(logp, yb[:, None], axis=1))


def w1_jax(params, x, y):
    return _jax_scan(_w1_loss, params, x, y)


def w2_jax(params, x, labels, batch):
    n = len(x) // batch * batch  # scan needs equal batches: the remainder is left out
    xs = x[:n].reshape(-1, batch, x.shape[1])
    ys = labels[:n].reshape(-1, batch)
    return _jax_scan(_w2_loss, params, xs, ys)
