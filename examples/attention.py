"""One attention head learns key-value retrieval over sequences of any length.

Each sequence holds T tokens (T changes from sequence to sequence: the function's symbolic
dim "T"), each a random unit key and a random value. Query t carries the key of token
perm[t]; its target is that token's value. The head computes

    softmax(q @ k.T / sqrt(d)) @ v      with q = queries @ Wq, k = keys @ Wk, v = values @ Wv

and learns, by SGD on the squared error per query, projections under which each query
attends to the token holding its key (Wq Wk^T large along matching keys, Wv the identity).
The loss divides by the sequence length `queries.shape[0]`, a size known only per call.
Prints the loss and how often a query attends most to its token, before and after training.

    python examples/attention.py [steps]
"""
import sys
import time

import numpy as np

import diffc
from diffc import f64, nn

KEYS, DIM, VALUES = 8, 8, 4  # key size, attention dim, value size
LENGTHS = (4, 12)  # the shortest and the longest sequence
LR = 0.1


@diffc.function
def attention_loss(Wq: f64[KEYS, DIM], Wk: f64[KEYS, DIM], Wv: f64[VALUES, VALUES],
                   queries: f64["T", KEYS], keys: f64["T", KEYS], values: f64["T", VALUES],
                   targets: f64["T", VALUES]) -> f64:
    q, k, v = queries @ Wq, keys @ Wk, values @ Wv
    out = nn.softmax(q @ k.T / np.sqrt(q.shape[1])) @ v
    return nn.sum((out - targets) ** 2) / queries.shape[0]


@diffc.function
def attention_weights(Wq: f64[KEYS, DIM], Wk: f64[KEYS, DIM], queries: f64["T", KEYS],
                      keys: f64["T", KEYS]) -> f64["T", "T"]:
    return nn.softmax((queries @ Wq) @ (keys @ Wk).T / np.sqrt(DIM))


def sequence(rng):
    """(queries, keys, values, targets, perm) of one random sequence of random length."""
    length = int(rng.integers(LENGTHS[0], LENGTHS[1] + 1))
    keys = rng.standard_normal((length, KEYS))
    keys /= np.linalg.norm(keys, axis=1, keepdims=True)
    values = rng.standard_normal((length, VALUES))
    perm = rng.permutation(length)
    return keys[perm], keys, values, values[perm], perm


def init(rng):
    """Small random projections: attention starts out nearly uniform."""
    return [rng.standard_normal((KEYS, DIM)) * 0.1, rng.standard_normal((KEYS, DIM)) * 0.1,
            np.eye(VALUES) + rng.standard_normal((VALUES, VALUES)) * 0.1]


def evaluate(params, rng, count: int = 200) -> tuple[float, float]:
    """Mean loss and the fraction of queries attending most to their token, on fresh data."""
    losses, hits, total = [], 0, 0
    for _ in range(count):
        queries, keys, values, targets, perm = sequence(rng)
        losses.append(attention_loss(*params, queries, keys, values, targets))
        weights = attention_weights(params[0], params[1], queries, keys)
        hits += int(np.sum(np.argmax(weights, axis=1) == perm))
        total += len(perm)
    return float(np.mean(losses)), hits / total


def train(params, steps: int, seed: int = 0, lr: float = LR) -> np.ndarray:
    """SGD on one random sequence (of random length) per step; returns the losses."""
    step = diffc.train_step(attention_loss, params=["Wq", "Wk", "Wv"],
                            optimizer=diffc.SGD(lr=lr))
    rng = np.random.default_rng(seed)
    losses = np.empty(steps)
    for i in range(steps):
        losses[i] = step(*params, *sequence(rng)[:4])
    return losses


def main(steps: int = 3000):
    params = init(np.random.default_rng(1))
    loss, hit = evaluate(params, np.random.default_rng(2))
    print(f"before training: loss {loss:.3f}, queries attending to their token {hit:.0%}")
    start = time.perf_counter()
    losses = train(params, steps)
    seconds = time.perf_counter() - start
    print(f"{steps} SGD steps on sequences of {LENGTHS[0]} to {LENGTHS[1]} tokens in "
          f"{seconds:.2f} s (compiling included)")
    for i in range(0, steps, steps // 5):
        print(f"  steps {i:5d}-{i + steps // 5 - 1:5d}: mean loss "
              f"{losses[i:i + steps // 5].mean():.4f}")
    loss, hit = evaluate(params, np.random.default_rng(2))
    print(f"after training: loss {loss:.3f}, queries attending to their token {hit:.0%}")
    Wq, Wk, Wv = params
    print(f"Wv is close to the identity: max |Wv - I| = {np.abs(Wv - np.eye(VALUES)).max():.3f}")
    return loss, hit


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 3000)
