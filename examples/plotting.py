"""The examples' loss plots. matplotlib is optional (the `examples` extra): without it an
example says so and writes no plot."""
from pathlib import Path

import numpy as np


def loss_axes():
    """Axes for a loss plot, or None (said on stdout) where matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        print('matplotlib is not installed, so no loss plot (pip install -e ".[examples]")')
        return None
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(figsize=(7, 4))[1]


def save(ax, path: Path, what: str = "loss curve") -> None:
    """Write ax's figure to path as a PNG and close it."""
    import matplotlib.pyplot as plt

    ax.figure.tight_layout()
    ax.figure.savefig(path, dpi=120)
    plt.close(ax.figure)
    print(f"wrote the {what} to {path}")


def plot_epochs(epochs: list, ylabel: str, path: Path) -> None:
    """A PNG of every step's loss and each epoch's mean (`epochs`: one array of step losses per
    epoch), if matplotlib is installed."""
    ax = loss_axes()
    if ax is None:
        return
    ax.plot(np.concatenate(epochs), lw=0.6, alpha=0.6, label="step")
    ends = np.cumsum([len(epoch) for epoch in epochs]) - 1
    ax.plot(ends, [epoch.mean() for epoch in epochs], "o-", label="epoch mean")
    ax.set(xlabel="step", ylabel=ylabel, yscale="log", title="training loss")
    ax.legend()
    save(ax, path)
