"""The 784 -> 128 -> 10 per-sample MLP of the Raster notebook, compiled by diffc.

Prints the traced IR, evaluates the loss compiled and eagerly (the Python body on numpy arrays,
through diffc.nn's reference implementations) and checks that they agree. Then the notebook's
value+grad demo: the loss and the gradients with respect to every argument, and a 200-step
training history on one sample, a Python loop of compiled value_and_grad calls with numpy SGD.

    python examples/raster_mlp.py [--steps 200] [--out FOLDER]

Writes the training history's loss curve (.png, when matplotlib is installed) to the --out
folder (default: examples/out next to this script) and prints its path.
"""
import argparse
import itertools
import time
from pathlib import Path

import numpy as np
from plotting import loss_axes, save

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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200, help="training steps on one sample")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out",
                        help="folder for the loss plot (default: %(default)s)")
    args = parser.parse_args()
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
    value_and_grad_demo(params, x, y)
    losses = train_one_sample(params, x, y, args.steps)
    args.out.mkdir(parents=True, exist_ok=True)
    plot_losses(losses, args.out / "raster_mlp_loss.png")


def value_and_grad_demo(params, x, y):
    """The loss and its gradient with respect to all six arguments, in one native call."""
    names = ["W1", "b1", "W2", "b2", "x", "y"]
    vg = diffc.value_and_grad(mlp_loss, wrt=names)
    loss, grads = vg(*params, x, y)
    print(f"\nvalue_and_grad: loss {loss:.6f}")
    for name, g in zip(names, grads, strict=True):
        print(f"  d{name}: shape {g.shape}")
    print(f"  |dW1| = {np.linalg.norm(grads[0]):.6f}")


def train_one_sample(params, x, y, steps=200, lr=0.01):
    """Plain SGD on one sample: compiled loss and gradients, the update in numpy."""
    W1, b1, W2, b2 = (p.copy() for p in params)
    vg = diffc.value_and_grad(mlp_loss, wrt=["W1", "b1", "W2", "b2"])
    print(f"\ntraining on one sample, {steps} steps of SGD (lr {lr}):")
    losses = []
    for step in range(steps):
        loss, (dW1, db1, dW2, db2) = vg(W1, b1, W2, b2, x, y)
        losses.append(loss)
        if step % 20 == 0 or step == steps - 1:
            print(f"  step {step:3d}: loss {loss:.6f}")
        W1 -= lr * dW1
        b1 -= lr * db1
        W2 -= lr * dW2
        b2 -= lr * db2
    assert losses[-1] < 0.5 * losses[0], "the loss did not fall"
    assert all(b < a for a, b in itertools.pairwise(losses)), "the loss did not fall at every step"
    return losses


def plot_losses(losses, path: Path) -> None:
    """The loss at every step, if matplotlib is installed."""
    ax = loss_axes()
    if ax is None:
        return
    ax.plot(losses)
    ax.set(xlabel="step", ylabel="cross-entropy", yscale="log", title="SGD on one sample")
    save(ax, path)


if __name__ == "__main__":
    main()
