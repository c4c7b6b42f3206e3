"""The 784 -> 128 -> 10 per-sample MLP of the Raster notebook, compiled by diffc.

Prints the traced IR, evaluates the loss compiled and eagerly (the Python body on numpy arrays,
through diffc.nn's reference implementations) and checks that they agree.
"""
import time

import numpy as np

import diffc
from diffc import Array, f64, nn


@diffc.function
def mlp_loss(W1: Array[f64, 128, 784], b1: Array[f64, 128], W2: Array[f64, 10, 128],
             b2: Array[f64, 10], x: Array[f64, 784], y: Array[f64, 10]) -> f64:
    h = nn.relu(nn.dense(W1, x, b1))
    return nn.cross_entropy(nn.softmax(nn.dense(W2, h, b2)), y)


def init_params(rng):
    """He-initialized weights, zero biases."""
    return (rng.normal(0, np.sqrt(2 / 784), (128, 784)), np.zeros(128),
            rng.normal(0, np.sqrt(2 / 128), (10, 128)), np.zeros(10))


def main():
    rng = np.random.default_rng(0)
    params = init_params(rng)
    x = rng.random(784)
    y = np.eye(10)[3]
    print("The traced IR of mlp_loss:")
    print(mlp_loss.ir)

    start = time.perf_counter()
    mlp_loss.compile()
    print(f"\ncompiled in {time.perf_counter() - start:.3f} s")
    compiled = mlp_loss(*params, x, y)
    eager = float(mlp_loss.fn(*params, x, y))
    print(f"loss, compiled: {compiled:.15f}")
    print(f"loss, eager:    {eager:.15f}")
    assert abs(compiled - eager) <= 1e-12 * abs(eager), "compiled and eager losses differ"
    print("compiled and eager agree to 1e-12")


if __name__ == "__main__":
    main()
