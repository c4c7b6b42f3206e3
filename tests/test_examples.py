"""The examples, each run as a user runs it (a subprocess, small sizes) on the bundled digits
or a fake MNIST folder: each must learn, not only run.

- average_rectangles: both networks' 4 weights within 0.01 of 0.25 (the average's weights);
- nielsen_sigmoid: the 64 -> 30 -> 10 sigmoid network classifies >= 90% of the test digits;
- mnist_mlp: the 64 -> 128 -> 64 -> 10 network classifies >= 95% of them;
- raster_mlp: compiled and eager losses agree and SGD on one sample lowers the loss.

Each writes its outputs to the --out folder given and says where; the loss plot is written
when matplotlib is importable and its absence is reported otherwise. No example needs
scikit-learn or matplotlib (the examples extra): they run here with both blocked.
"""
import importlib.util
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from test_datasets import fake_mnist

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
HAVE_MATPLOTLIB = importlib.util.find_spec("matplotlib") is not None
NO_PLOT = 'matplotlib is not installed, so no loss plot (pip install -e ".[examples]")'


def run(example: str, *args, cwd: Path, env=None) -> str:
    done = subprocess.run([sys.executable, str(EXAMPLES / example), *map(str, args)],
                          capture_output=True, text=True, cwd=cwd, timeout=300,
                          env={**os.environ, **(env or {})})
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


def check_plot(stdout: str, path: Path) -> None:
    if HAVE_MATPLOTLIB:
        assert f"wrote the loss curve{'s' if 'average' in path.name else ''} to {path}" in stdout
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    else:
        assert NO_PLOT in stdout and not path.exists()


def test_average_rectangles_learns_the_average(tmp_path):
    out = tmp_path / "out"
    stdout = run("average_rectangles.py", "--samples", 100, "--epochs", 5, "--out", out,
                 cwd=tmp_path)
    for name in ("linear_loss", "relu_loss"):
        losses = [float(v) for v in re.findall(r"^epoch +\d+  loss (\S+)", stdout.split(
            f"\n{name}:")[1], re.M)][:5]
        assert len(losses) == 5 and losses[-1] < 1e-3 * losses[0], (name, losses)
    with np.load(out / "average_rectangles_weights.npz") as saved:
        assert sorted(saved.files) == ["linear_loss", "relu_loss"]
        for name in saved.files:
            assert saved[name].shape == (4,)
            assert np.abs(saved[name] - 0.25).max() < 0.01, (name, saved[name])
    assert f"wrote the weights to {out / 'average_rectangles_weights.npz'}" in stdout
    check_plot(stdout, out / "average_rectangles_loss.png")


def test_nielsen_sigmoid_classifies_the_digits(tmp_path):
    out = tmp_path / "out"
    stdout = run("nielsen_sigmoid.py", "--epochs", 5, "--out", out, cwd=tmp_path)
    assert "1347 training and 450 test images of 64 pixels; network 64 -> 30 -> 10" in stdout
    scores = [(int(e), int(c), int(t)) for e, c, t in
              re.findall(r"^Epoch (\d+): (\d+) / (\d+)$", stdout, re.M)]
    assert [e for e, _, _ in scores] == list(range(5)) and {t for _, _, t in scores} == {450}
    assert scores[-1][1] >= 0.9 * 450, scores
    with np.load(out / "nielsen_sigmoid_weights.npz") as saved:
        assert {n: saved[n].shape for n in saved.files} == {
            "W1": (30, 64), "b1": (30,), "W2": (10, 30), "b2": (10,)}
    check_plot(stdout, out / "nielsen_sigmoid_loss.png")


def test_mnist_mlp_classifies_the_digits(tmp_path):
    out = tmp_path / "out"
    stdout = run("mnist_mlp.py", "--epochs", 15, "--out", out, cwd=tmp_path)
    assert "the 8x8 digits: 1347 training and 450 test images of 64 pixels" in stdout
    accuracies = [float(a) for a in re.findall(r"^epoch +\d+  loss \S+  test accuracy (\S+)%$",
                                               stdout, re.M)]
    assert len(accuracies) == 15 and accuracies[-1] >= 95.0, accuracies
    weights = out / "mnist_mlp_weights.npz"
    assert f"wrote the weights to {weights}; loaded back" in stdout
    with np.load(weights) as saved:
        assert {n: saved[n].shape for n in saved.files} == {
            "W1": (128, 64), "b1": (128,), "W2": (64, 128), "b2": (64,), "W3": (10, 64),
            "b3": (10,)}
    check_plot(stdout, out / "mnist_mlp_loss.png")
    assert list(tmp_path.iterdir()) == [out]  # nothing written to the current folder


def test_raster_mlp_agrees_with_eager_and_learns(tmp_path):
    stdout = run("raster_mlp.py", "--steps", 40, "--out", tmp_path / "out", cwd=tmp_path)
    assert "compiled and eager agree to 1e-12" in stdout
    losses = [float(v) for v in re.findall(r"^  step +\d+: loss (\S+)$", stdout, re.M)]
    assert len(losses) == 3 and losses[0] > losses[1] > losses[2]  # steps 0, 20, 39
    check_plot(stdout, tmp_path / "out" / "raster_mlp_loss.png")


def test_mnist_mlp_on_fake_mnist(tmp_path):
    _, _, _, test_labels = fake_mnist(tmp_path / "mnist", 200, 20)
    out = tmp_path / "out"
    stdout = run("mnist_mlp.py", tmp_path / "mnist", "--epochs", 1, "--out", out, cwd=tmp_path)
    assert "MNIST: 200 training and 20 test images of 784 pixels" in stdout
    assert re.search(r"^epoch +1  loss \d+\.\d{4}  test accuracy \d+\.\d\d%$", stdout, re.M)
    assert f"(true label {test_labels[0]})" in stdout
    with np.load(out / "mnist_mlp_weights.npz") as saved:
        assert all(saved[name].dtype == np.float32 for name in saved.files)
        assert saved["W1"].shape == (128, 784)


def test_examples_need_neither_scikit_learn_nor_matplotlib(tmp_path):
    """With both blocked, the examples train on the bundled digits and say there is no plot."""
    for blocked in ("sklearn", "matplotlib"):
        (tmp_path / blocked).mkdir()
        (tmp_path / blocked / "__init__.py").write_text("raise ImportError('blocked')\n")
    env = {"PYTHONPATH": str(tmp_path)}
    out = tmp_path / "out"
    for example, args in (("mnist_mlp.py", ["--epochs", 1]),
                          ("average_rectangles.py", ["--epochs", 1]),
                          ("nielsen_sigmoid.py", ["--epochs", 1]),
                          ("raster_mlp.py", ["--steps", 3])):
        stdout = run(example, *args, "--out", out, cwd=tmp_path, env=env)
        assert NO_PLOT in stdout, example
    assert not list(out.glob("*.png"))


@pytest.mark.parametrize("example", ["average_rectangles.py", "nielsen_sigmoid.py",
                                     "mnist_mlp.py", "raster_mlp.py"])
def test_examples_write_to_examples_out_by_default(example):
    """The default --out is a folder next to the script (ignored by git), said in --help."""
    wide = dict(os.environ, COLUMNS="10000")  # argparse wraps long paths at their hyphens
    done = subprocess.run([sys.executable, str(EXAMPLES / example), "--help"],
                          capture_output=True, text=True, timeout=60, env=wide)
    assert done.returncode == 0
    assert str(EXAMPLES / "out") in " ".join(done.stdout.split())
    assert "examples/out/" in (EXAMPLES.parent / ".gitignore").read_text().split()
