"""Export the 784 -> 128 -> 10 per-sample SGD train step for the C programs in this folder.

    python examples/c/export_step.py BUILD_DIR

writes BUILD_DIR/mlp_step.{o,h,json,so}: the loss, its gradients and the SGD update of the
network in one native function, `diffc_train_step_mlp_loss` (train.c calls it per sample), and
the loop over a data set, `diffc_train_step_mlp_loss_fit` (fit.c calls it per epoch).
"""
import os
import sys

import diffc
from diffc import Array, f64, nn


@diffc.function
def mlp_loss(W1: Array[f64, 128, 784], b1: Array[f64, 128], W2: Array[f64, 10, 128],
             b2: Array[f64, 10], x: Array[f64, 784], y: Array[f64, 10]) -> f64:
    h = nn.relu(nn.dense(W1, x, b1))
    return nn.cross_entropy(nn.softmax(nn.dense(W2, h, b2)), y)


def main(build: str) -> None:
    step = diffc.train_step(mlp_loss, params=["W1", "b1", "W2", "b2"],
                            optimizer=diffc.SGD(lr=0.01))
    for path in step.export(os.path.join(build, "mlp_step")):
        print("wrote", path)


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else "build")
