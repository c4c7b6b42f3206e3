"""diffc.datasets: the IDX reader on well-formed and broken files, load_mnist (and a writer of
fake MNIST folders for the examples' tests) and the bundled digits."""
import gzip
import hashlib
import re
from pathlib import Path

import numpy as np
import pytest

from diffc.datasets import DIGITS, load_digits, load_mnist, read_idx

CODES = {np.uint8: 0x08, np.int8: 0x09, np.int16: 0x0B, np.int32: 0x0C, np.float32: 0x0D,
         np.float64: 0x0E}


def idx_bytes(array: np.ndarray) -> bytes:
    """The IDX encoding of `array`: magic, big-endian uint32 sizes, big-endian data."""
    header = bytes([0, 0, CODES[array.dtype.type], array.ndim])
    sizes = np.array(array.shape, ">u4").tobytes()
    return header + sizes + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_idx(path: Path, array: np.ndarray) -> Path:
    data = idx_bytes(array)
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def expect_error(path: Path, problem: str) -> None:
    """read_idx(path) raises a ValueError whose message names the file and matches `problem`."""
    with pytest.raises(ValueError) as info:
        read_idx(path)
    message = str(info.value)
    assert str(path) in message
    assert re.search(problem, message), message


def test_ubyte_3d(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (4, 3, 5)).astype(np.uint8)
    got = read_idx(write_idx(tmp_path / "images-idx3-ubyte", images))
    assert got.dtype == np.uint8 and got.shape == (4, 3, 5)
    np.testing.assert_array_equal(got, images)
    assert got.flags.writeable


@pytest.mark.parametrize("dtype", list(CODES))
def test_every_type_code_2d(tmp_path, dtype):
    info = np.finfo(dtype) if np.dtype(dtype).kind == "f" else np.iinfo(dtype)
    array = np.array([[0, 1, info.max], [info.min, 2, 3]], dtype)  # extremes show byte order
    got = read_idx(write_idx(tmp_path / "a.idx", array))
    assert got.dtype == np.dtype(dtype) and got.dtype.isnative and got.shape == (2, 3)
    np.testing.assert_array_equal(got, array)


def test_float_2d_exact_bytes(tmp_path):
    path = tmp_path / "f.idx"
    path.write_bytes(b"\x00\x00\x0d\x02" + b"\x00\x00\x00\x01\x00\x00\x00\x02"
                     + b"\x3f\x80\x00\x00" + b"\xc0\x20\x00\x00")  # 1.0, -2.5 big-endian
    got = read_idx(path)
    assert got.dtype == np.float32
    np.testing.assert_array_equal(got, [[1.0, -2.5]])


def test_gz(tmp_path):
    labels = np.arange(7, dtype=np.uint8)
    path = write_idx(tmp_path / "labels-idx1-ubyte.gz", labels)
    assert path.read_bytes()[:2] == b"\x1f\x8b"
    np.testing.assert_array_equal(read_idx(path), labels)


def test_wrong_magic(tmp_path):
    path = tmp_path / "bad-magic"
    path.write_bytes(b"\x01\x00\x08\x01\x00\x00\x00\x01\x07")
    expect_error(path, "wrong magic number 01000801")


def test_unknown_type_code(tmp_path):
    path = tmp_path / "bad-type"
    path.write_bytes(b"\x00\x00\x0a\x01\x00\x00\x00\x01\x07")
    expect_error(path, "unknown IDX type code 0x0A")


@pytest.mark.parametrize("data", [b"", b"\x00\x00", b"\x00\x00\x08\x03\x00\x00\x00\x02\x00\x00"])
def test_truncated_header(tmp_path, data):
    path = tmp_path / "short-header"
    path.write_bytes(data)
    expect_error(path, "truncated header")


def test_truncated_data(tmp_path):
    path = tmp_path / "short-data"
    path.write_bytes(idx_bytes(np.zeros((2, 3), np.int16))[:-1])
    expect_error(path, r"truncated data: sizes \(2, 3\) of int16 need 12 data bytes, the file "
                       r"has 11")


def test_trailing_bytes(tmp_path):
    path = tmp_path / "trailing"
    path.write_bytes(idx_bytes(np.zeros(3, np.uint8)) + b"\x00\x00")
    expect_error(path, r"2 trailing bytes after the data of sizes \(3,\)")


def test_corrupt_gz(tmp_path):
    path = tmp_path / "cut.gz"
    path.write_bytes(gzip.compress(idx_bytes(np.zeros(100, np.uint8)))[:-6])
    expect_error(path, "not a valid gzip file")


def fake_mnist(folder: Path, n_train: int, n_test: int, seed: int = 0) -> tuple:
    """Write the four MNIST files (28x28 images, labels 0..9), spelled the three usual ways."""
    rng = np.random.default_rng(seed)
    arrays = (rng.integers(0, 256, (n_train, 28, 28)).astype(np.uint8),
              rng.integers(0, 10, n_train).astype(np.uint8),
              rng.integers(0, 256, (n_test, 28, 28)).astype(np.uint8),
              rng.integers(0, 10, n_test).astype(np.uint8))
    names = ("train-images.idx3-ubyte", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte",
             "t10k-labels-idx1-ubyte")
    folder.mkdir(exist_ok=True)
    for name, array in zip(names, arrays, strict=True):
        write_idx(folder / name, array)
    return arrays


def test_load_mnist(tmp_path):
    images, labels, test_images, test_labels = fake_mnist(tmp_path, 5, 3)
    x_train, y_train, x_test, y_test = load_mnist(tmp_path)
    assert x_train.shape == (5, 784) and x_test.shape == (3, 784)
    assert x_train.dtype == x_test.dtype == np.float32
    assert y_train.dtype == y_test.dtype == np.int32
    np.testing.assert_allclose(x_train, images.reshape(5, 784) / 255, rtol=1e-7)
    np.testing.assert_allclose(x_test, test_images.reshape(3, 784) / 255, rtol=1e-7)
    assert x_train.min() >= 0 and x_train.max() <= 1
    np.testing.assert_array_equal(y_train, labels)
    np.testing.assert_array_equal(y_test, test_labels)


def test_load_mnist_count_mismatch(tmp_path):
    fake_mnist(tmp_path, 5, 3)
    write_idx(tmp_path / "t10k-labels-idx1-ubyte", np.zeros(4, np.uint8))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte has 3 images but .*"
                                         r"t10k-labels-idx1-ubyte has 4 labels"):
        load_mnist(tmp_path)


def test_load_mnist_wrong_ranks(tmp_path):
    fake_mnist(tmp_path, 5, 3)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", np.zeros((3, 784), np.uint8))
    with pytest.raises(ValueError, match=r"t10k-images-idx3-ubyte: expected 3-d ubyte images"):
        load_mnist(tmp_path)
    fake_mnist(tmp_path, 5, 3)
    (tmp_path / "train-labels-idx1-ubyte.gz").unlink()
    write_idx(tmp_path / "train-labels-idx1-ubyte", np.zeros((5, 1), np.uint8))
    with pytest.raises(ValueError, match=r"train-labels-idx1-ubyte: expected 1-d integer labels"):
        load_mnist(tmp_path)


def test_load_mnist_missing_file(tmp_path):
    fake_mnist(tmp_path, 5, 3)
    (tmp_path / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(FileNotFoundError, match="no t10k-labels-idx1-ubyte file"):
        load_mnist(tmp_path)


# the sha256 of the bundled images' and labels' bytes (uint8), as scikit-learn's load_digits
DIGITS_SHA256 = "87ff0c9e40dc7e2c0e34e7257799c2e3f3aec1a016363bb11cad869ec428a826"


def test_bundled_digits_are_the_uci_test_set():
    """1797 images of 0..16 counts, with the class sizes of optdigits.tes, unchanged."""
    with np.load(DIGITS) as data:
        images, labels = data["images"], data["labels"]
    assert images.dtype == labels.dtype == np.uint8
    assert images.shape == (1797, 64) and labels.shape == (1797,)
    assert images.max() == 16 and labels.max() == 9
    assert list(np.bincount(labels)) == [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]
    assert hashlib.sha256(images.tobytes() + labels.tobytes()).hexdigest() == DIGITS_SHA256
    assert (DIGITS.parent / "README.md").read_text().count("CC BY 4.0") == 1  # attribution


def test_load_digits_splits_like_load_mnist():
    x_train, y_train, x_test, y_test = load_digits()
    assert x_train.shape == (1347, 64) and x_test.shape == (450, 64)
    assert x_train.dtype == x_test.dtype == np.float32
    assert y_train.dtype == y_test.dtype == np.int32
    with np.load(DIGITS) as data:
        images, labels = data["images"], data["labels"]
    order = np.random.default_rng(0).permutation(1797)  # the documented split
    np.testing.assert_array_equal(x_train * 16, images[order[:1347]])
    np.testing.assert_array_equal(x_test * 16, images[order[1347:]])
    np.testing.assert_array_equal(np.concatenate([y_train, y_test]), labels[order])
    assert set(np.unique(y_test)) == set(range(10))
    again = load_digits()
    assert all(np.array_equal(a, b) for a, b in zip(again, (x_train, y_train, x_test, y_test),
                                                     strict=True))


def test_bundled_digits_equal_scikit_learns():
    datasets = pytest.importorskip("sklearn.datasets", reason="scikit-learn not installed")
    digits = datasets.load_digits()
    with np.load(DIGITS) as data:
        np.testing.assert_array_equal(data["images"], digits.data)
        np.testing.assert_array_equal(data["labels"], digits.target)
