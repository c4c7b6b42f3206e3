"""Train the 784 -> 128 -> 64 -> 10 MLP of the C++ from-scratch article with diffc.

The article's recipe: He-initialized weights, relu, softmax cross-entropy with integer labels,
plain SGD with learning rate 0.1 on mini-batches of 64. `diffc.train_step(...).fit(...)` runs
each epoch's shuffling, batching, forward, backward and update in native code; a second compiled
function predicts a batch of logits to measure the test accuracy after every epoch. Then a
confusion matrix and per-class accuracy, the weights saved to .npz and loaded back to predict one
image, and a loss-curve PNG (when matplotlib is installed). Each epoch drops its short last
batch (`drop_last=True`): on the digits, 1347 = 21 * 64 + 3 samples, and a step on 3 samples at
this learning rate throws the network back (try --keep-last to see it).

    python examples/mnist_mlp.py                # the bundled 8x8 digits (64 -> 128 -> 64 -> 10)
    python examples/mnist_mlp.py path/to/mnist  # the MNIST IDX files (gzipped or not)

Writes the weights (.npz) and the plot (.png) to the --out folder (default: examples/out next
to this script) and prints their paths.
"""
import argparse
import itertools
import time
from pathlib import Path

import numpy as np
from plotting import plot_epochs

import diffc
from diffc import Array, f32, i32, nn
from diffc.datasets import load_digits, load_mnist

NAMES = ["W1", "b1", "W2", "b2", "W3", "b3"]


def make_functions(n_in: int):
    """The loss (for training) and the logits (for predicting) of an n_in -> 128 -> 64 -> 10 MLP."""

    @diffc.function
    def mlp_logits(W1: Array[f32, 128, n_in], b1: Array[f32, 128], W2: Array[f32, 64, 128],
                   b2: Array[f32, 64], W3: Array[f32, 10, 64], b3: Array[f32, 10],
                   x: Array[f32, "B", n_in]) -> Array[f32, "B", 10]:  # noqa: F821
        h1 = nn.relu(nn.dense(W1, x, b1))
        h2 = nn.relu(nn.dense(W2, h1, b2))
        return nn.dense(W3, h2, b3)

    @diffc.function
    def mlp_loss(W1: Array[f32, 128, n_in], b1: Array[f32, 128], W2: Array[f32, 64, 128],
                 b2: Array[f32, 64], W3: Array[f32, 10, 64], b3: Array[f32, 10],
                 x: Array[f32, "B", n_in], y: Array[i32, "B"]) -> f32:  # noqa: F821
        return nn.softmax_cross_entropy(mlp_logits(W1, b1, W2, b2, W3, b3, x), y)

    return mlp_loss, mlp_logits


def he_params(rng, sizes):
    """He-initialized (out, in) float32 weights and zero biases for consecutive layer sizes."""
    params = []
    for n_in, n_out in itertools.pairwise(sizes):
        params += [(rng.standard_normal((n_out, n_in)) * np.sqrt(2 / n_in)).astype(np.float32),
                   np.zeros(n_out, np.float32)]
    return params


def load_data(folder):
    """(x_train, y_train, x_test, y_test, name): MNIST from `folder`, else the bundled digits."""
    if folder is not None:
        return (*load_mnist(folder), "MNIST")
    return (*load_digits(), "the 8x8 digits")


def print_report(y_true, y_pred):
    """The confusion matrix (rows: true label, columns: predicted) and per-class accuracy."""
    confusion = np.zeros((10, 10), np.int64)
    np.add.at(confusion, (y_true, y_pred), 1)
    print("\nconfusion matrix (rows: true, columns: predicted) and per-class accuracy:")
    print("true " + "".join(f"{c:6d}" for c in range(10)) + "  accuracy")
    for c, row in enumerate(confusion):
        accuracy = row[c] / max(row.sum(), 1)
        print(f"{c:4d} " + "".join(f"{v:6d}" for v in row) + f"  {accuracy:8.1%}")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mnist", nargs="?", help="folder with the MNIST IDX files "
                        "(default: the bundled 8x8 digits)")
    parser.add_argument("--epochs", type=int, default=20)
    parser.add_argument("--lr", type=float, default=0.1, help="SGD learning rate")
    parser.add_argument("--momentum", type=float, default=0.0, help="SGD momentum")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--keep-last", action="store_true",
                        help="train on each epoch's short last batch too")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out",
                        help="folder for the weights and the plot (default: %(default)s)")
    return parser.parse_args()


def main():
    args = parse_args()
    x_train, y_train, x_test, y_test, name = load_data(args.mnist)
    n_in = x_train.shape[1]
    print(f"{name}: {len(x_train)} training and {len(x_test)} test images of {n_in} pixels")

    mlp_loss, mlp_logits = make_functions(n_in)
    params = he_params(np.random.default_rng(0), [n_in, 128, 64, 10])
    step = diffc.train_step(mlp_loss, params=NAMES, optimizer=diffc.SGD(args.lr, args.momentum))
    start = time.perf_counter()
    step.compile()
    mlp_logits.compile()
    print(f"compiled the train step and the forward pass in {time.perf_counter() - start:.2f} s")

    losses = []
    start = time.perf_counter()
    for epoch in range(args.epochs):  # one native fit call per epoch, a new shuffle each time
        losses.append(step.fit(*params, x_train, y_train, batch_size=args.batch_size, seed=epoch,
                               drop_last=not args.keep_last))
        y_pred = mlp_logits(*params, x_test).argmax(axis=1)
        print(f"epoch {epoch + 1:3d}  loss {losses[-1].mean():.4f}  "
              f"test accuracy {np.mean(y_pred == y_test):.2%}")
    print(f"trained {args.epochs} epochs in {time.perf_counter() - start:.2f} s")
    print_report(y_test, mlp_logits(*params, x_test).argmax(axis=1))

    args.out.mkdir(parents=True, exist_ok=True)
    weights = args.out / "mnist_mlp_weights.npz"
    np.savez(weights, **dict(zip(NAMES, params, strict=True)))
    with np.load(weights) as saved:
        loaded = [saved[n] for n in NAMES]
    predicted = int(mlp_logits(*loaded, x_test[:1]).argmax())
    print(f"\nwrote the weights to {weights}; loaded back, they predict test image 0 as "
          f"{predicted} (true label {y_test[0]})")
    plot_epochs(losses, "softmax cross-entropy", args.out / "mnist_mlp_loss.png")


if __name__ == "__main__":
    main()
