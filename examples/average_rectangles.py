"""The smallest network that learns: 4 weights computing the average of a 2x2 image.

The network multiplies each pixel of a 2x2 image by its own weight and adds them up; it is
trained by SGD, one image per step, on the squared difference between its output and the
image's average brightness. The weights that compute the average are all 0.25, and SGD finds
them: the script prints the loss and the weights after every epoch, then the network's
answer for an image it has not seen. It trains the network twice, as it is and with a relu on
its output (relu passes the positive averages through unchanged, so it learns the same).

    python examples/average_rectangles.py                 # 200 images, 10 epochs
    python examples/average_rectangles.py --out results   # where the weights and plot go

Writes the learned weights (.npz) and, when matplotlib is installed, the loss curves (.png) to
the --out folder (default: examples/out next to this script) and prints their paths.
"""
import argparse
from pathlib import Path

import numpy as np
from plotting import loss_axes, save

import diffc
from diffc import f64, nn


def neuron(w, x):
    """The sum of weight * pixel, written as the seed writes it: a loop over the 4 pixels
    (traced once: the loop unrolls into one fused kernel)."""
    total = 0.0
    for i in range(4):
        total = total + x[i] * w[i]
    return total


@diffc.function
def linear_loss(w: f64[4], x: f64[4], target: f64) -> f64:
    return nn.mse(neuron(w, x), target)


@diffc.function
def relu_loss(w: f64[4], x: f64[4], target: f64) -> f64:
    return nn.mse(nn.relu(neuron(w, x)), target)


def rectangles(n: int, rng) -> tuple[np.ndarray, np.ndarray]:
    """n random 2x2 images (pixels in [0, 1), as rows of 4) and their averages."""
    images = rng.random((n, 2, 2))
    return images.reshape(n, 4), images.mean(axis=(1, 2))


def train(loss, images, averages, epochs: int, lr: float, rng) -> tuple[np.ndarray, list]:
    """The 4 weights (random in [0, 1)) trained by per-sample SGD; the losses of each epoch."""
    w = rng.random(4)
    step = diffc.train_step(loss, params=["w"], optimizer=diffc.SGD(lr=lr))
    print(f"\n{loss.name}: start with weights {np.round(w, 4)}")
    history = []
    for epoch in range(epochs):  # one native fit call per epoch, a new shuffle each time
        history.append(step.fit(w, images, averages, seed=epoch))
        print(f"epoch {epoch + 1:2d}  loss {history[-1].mean():.3e}  "
              f"weights {np.array2string(w, precision=4)}")
    return w, history


def plot_losses(histories: dict, path: Path) -> None:
    """The per-step losses of each run, if matplotlib is installed."""
    ax = loss_axes()
    if ax is None:
        return
    for name, history in histories.items():
        ax.plot(np.concatenate(history) + 1e-35, lw=0.7, label=name)
    ax.set(xlabel="step (one image each)", ylabel="squared error", yscale="log",
           title="learning the average of a 2x2 image")
    ax.legend()
    save(ax, path, "loss curves")


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=200, help="training images")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.1, help="SGD learning rate")
    parser.add_argument("--out", type=Path, default=Path(__file__).parent / "out",
                        help="folder for the weights and the plot (default: %(default)s)")
    return parser.parse_args()


def main():
    args = parse_args()
    rng = np.random.default_rng(0)
    images, averages = rectangles(args.samples, rng)
    print(f"{args.samples} random 2x2 images; the network should learn the weights 0.25")
    weights, histories = {}, {}
    for loss in (linear_loss, relu_loss):
        weights[loss.name], histories[loss.name] = train(loss, images, averages, args.epochs,
                                                         args.lr, rng)
    image, average = rectangles(1, rng)
    for name, w in weights.items():
        print(f"{name}: learned {np.array2string(w, precision=4)}; on a new image it answers "
              f"{float(w @ image[0]):.4f} (the average is {average[0]:.4f})")
    args.out.mkdir(parents=True, exist_ok=True)
    np.savez(args.out / "average_rectangles_weights.npz", **weights)
    print(f"wrote the weights to {args.out / 'average_rectangles_weights.npz'}")
    plot_losses(histories, args.out / "average_rectangles_loss.png")


if __name__ == "__main__":
    main()
