"""The sigmoid network of Nielsen's "Neural Networks and Deep Learning", chapter 1, with diffc.

A fully connected network of sigmoid neurons (n_in -> 30 -> 10), the quadratic cost
C = 1/2 |a - y|^2 against one-hot targets averaged over each mini-batch, weights and biases
drawn from a standard normal distribution, trained by mini-batch stochastic gradient descent
(learning rate 3.0, mini-batches of 10, 30 epochs), as in the book and the Clojure seeds that
follow it. One `fit` call runs all epochs in native code; its callback, called after each
epoch, counts the test images the network classifies correctly and prints
"Epoch j: correct / total" as the book's program does.

    python examples/nielsen_sigmoid.py                # the bundled 8x8 digits: 64 -> 30 -> 10
    python examples/nielsen_sigmoid.py path/to/mnist  # the MNIST IDX files: 784 -> 30 -> 10

Writes the trained weights (.npz) and, when matplotlib is installed, the loss curve (.png) to
the --out folder (default: examples/out next to this script) and prints their paths.
"""
import argparse
from pathlib import Path

import numpy as np
from plotting import plot_epochs

import diffc
from diffc import Array, f64, nn
from diffc.datasets import load_digits, load_mnist

NAMES = ["W1", "b1", "W2", "b2"]


def make_functions(n_in: int, hidden: int):
    """The quadratic cost (for training) and the output activations of n_in -> hidden -> 10."""

    @diffc.function
    def feedforward(W1: Array[f64, hidden, n_in], b1: Array[f64, hidden],
                    W2: Array[f64, 10, hidden], b2: Array[f64, 10],
                    x: Array[f64, "B", n_in]) -> Array[f64, "B", 10]:
        return nn.sigmoid(nn.dense(W2, nn.sigmoid(nn.dense(W1, x, b1)), b2))

    @diffc.function
    def quadratic_cost(W1: Array[f64, hidden, n_in], b1: Array[f64, hidden],
                       W2: Array[f64, 10, hidden], b2: Array[f64, 10],
                       x: Array[f64, "B", n_in], y: Array[f64, "B", 10]) -> f64:
        a = feedforward(W1, b1, W2, b2, x)
        return 0.5 * nn.mean(nn.sum((a - y) ** 2, axis=1))

    return quadratic_cost, feedforward


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mnist", nargs="?", help="folder with the MNIST IDX files "
                        "(default: the bundled 8x8 digits)")
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=10)
    parser.add_argument("--lr", type=float, default=3.0, help="the learning rate eta")
    parser.add_argument("--hidden", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out",
                        help="folder for the weights and the plot (default: %(default)s)")
    return parser.parse_args()


def main():
    args = parse_args()
    x_train, y_train, x_test, y_test = (load_mnist(args.mnist) if args.mnist else load_digits())
    x_train, x_test = x_train.astype(np.float64), x_test.astype(np.float64)
    n_in = x_train.shape[1]
    print(f"{len(x_train)} training and {len(x_test)} test images of {n_in} pixels; network "
          f"{n_in} -> {args.hidden} -> 10")
    cost, feedforward = make_functions(n_in, args.hidden)
    rng = np.random.default_rng(0)
    params = [rng.standard_normal((args.hidden, n_in)), rng.standard_normal(args.hidden),
              rng.standard_normal((10, args.hidden)), rng.standard_normal(10)]
    step = diffc.train_step(cost, params=NAMES, optimizer=diffc.SGD(lr=args.lr))
    targets = np.eye(10)[y_train]  # one-hot, as the book's vectorized_result

    def evaluate(s, epoch, loss):  # fit's callback: after each epoch
        correct = int(np.sum(feedforward(*params, x_test).argmax(axis=1) == y_test))
        print(f"Epoch {epoch}: {correct} / {len(x_test)}")

    losses = step.fit(*params, x_train, targets, batch_size=args.batch_size, epochs=args.epochs,
                      callback=evaluate)
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez(args.out / "nielsen_sigmoid_weights.npz", **dict(zip(NAMES, params, strict=True)))
    print(f"wrote the weights to {args.out / 'nielsen_sigmoid_weights.npz'}")
    epochs = np.split(losses, max(args.epochs, 1))  # fit's losses, one per mini-batch
    plot_epochs(epochs, "quadratic cost", args.out / "nielsen_sigmoid_loss.png")


if __name__ == "__main__":
    main()
