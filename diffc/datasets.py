"""Data sets for the examples: MNIST read from its IDX files, and the 8x8 digits bundled.

`load_digits()` needs nothing but the package: the 1797 8x8 images of handwritten digits that
scikit-learn distributes as `load_digits` (the test set of the UCI "Optical Recognition of
Handwritten Digits" data, CC BY 4.0; diffc/data/README.md), stored in diffc/data/digits.npz.

Reading IDX files (MNIST, Fashion-MNIST, EMNIST, ...). Input: a path to an IDX file, plain or
gzip-compressed (recognized by its content, whatever its name). The format: two zero bytes, a type
code byte (0x08 ubyte, 0x09 byte, 0x0B short, 0x0C int, 0x0D float, 0x0E double), a byte giving the
number of dims; one big-endian uint32 size per dim; then exactly prod(sizes) big-endian items.
Output: a writable, native-byte-order numpy array of those sizes. Invariant: a file that does not
follow the format exactly (wrong magic, unknown type code, short header, short data, bytes after
the data) raises a `ValueError` naming the file and the problem; nothing is guessed. Needs numpy
only.
"""
from __future__ import annotations

import gzip
import math
import zlib
from pathlib import Path

import numpy as np

IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}

DIGITS = Path(__file__).parent / "data" / "digits.npz"
DIGITS_TEST = 450  # as scikit-learn's train_test_split(test_size=0.25) of the 1797 images

MNIST_FILES = {"train_images": "train-images-idx3-ubyte", "train_labels": "train-labels-idx1-ubyte",
               "test_images": "t10k-images-idx3-ubyte", "test_labels": "t10k-labels-idx1-ubyte"}


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, decompressed when it starts with the gzip magic."""
    raw = path.read_bytes()
    if raw[:2] != b"\x1f\x8b":
        return raw
    try:
        return gzip.decompress(raw)
    except (OSError, EOFError, zlib.error) as e:
        raise ValueError(f"{path}: not a valid gzip file ({e})") from None


def read_idx(path) -> np.ndarray:
    """Read one IDX file (optionally gzip-compressed) into a native-byte-order numpy array."""
    path = Path(path)
    data = _read_bytes(path)
    if len(data) < 4:
        raise ValueError(f"{path}: truncated header: {len(data)} bytes, the magic number "
                         f"alone needs 4")
    if data[0] != 0 or data[1] != 0:
        raise ValueError(f"{path}: wrong magic number {data[:4].hex()}: an IDX file starts with "
                         f"two zero bytes")
    code, ndim = data[2], data[3]
    if code not in IDX_TYPES:
        known = ", ".join(f"0x{c:02X}" for c in IDX_TYPES)
        raise ValueError(f"{path}: unknown IDX type code 0x{code:02X} (expected one of {known})")
    header = 4 + 4 * ndim
    if len(data) < header:
        raise ValueError(f"{path}: truncated header: {ndim} dims need {header} header bytes, "
                         f"the file has {len(data)}")
    shape = tuple(int(s) for s in np.frombuffer(data, ">u4", ndim, 4))
    dtype = np.dtype(IDX_TYPES[code])
    expected = header + dtype.itemsize * math.prod(shape)
    if len(data) < expected:
        raise ValueError(f"{path}: truncated data: sizes {shape} of {dtype.name} need "
                         f"{expected - header} data bytes, the file has {len(data) - header}")
    if len(data) > expected:
        raise ValueError(f"{path}: {len(data) - expected} trailing bytes after the data of "
                         f"sizes {shape}")
    items = np.frombuffer(data, dtype, offset=header).reshape(shape)
    return items.astype(dtype.newbyteorder("="))


def _find(folder: Path, stem: str) -> Path:
    """The file for `stem` in `folder`: '-' or '.' before 'idxN', with or without .gz."""
    dotted = stem.replace("-idx", ".idx")
    for name in (stem, dotted):
        for suffix in ("", ".gz"):
            if (folder / (name + suffix)).is_file():
                return folder / (name + suffix)
    raise FileNotFoundError(f"{folder}: no {stem} file (looked for {stem}, {dotted} and their "
                            f".gz versions)")


def _load_split(images_path: Path, labels_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """One split: images as float32 (N, rows*cols) in [0, 1], labels as int32 (N,)."""
    images, labels = read_idx(images_path), read_idx(labels_path)
    if images.ndim != 3 or images.dtype != np.uint8:
        raise ValueError(f"{images_path}: expected 3-d ubyte images (N, rows, cols), got "
                         f"{images.ndim}-d {images.dtype} {images.shape}")
    if labels.ndim != 1 or labels.dtype.kind not in "iu":
        raise ValueError(f"{labels_path}: expected 1-d integer labels (N,), got "
                         f"{labels.ndim}-d {labels.dtype} {labels.shape}")
    if len(images) != len(labels):
        raise ValueError(f"{images_path} has {len(images)} images but {labels_path} has "
                         f"{len(labels)} labels")
    x = images.reshape(len(images), -1).astype(np.float32) / np.float32(255)
    return x, labels.astype(np.int32)


def load_mnist(folder) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """MNIST from its four IDX files in `folder`: (x_train, y_train, x_test, y_test).

    Images become float32 rows (N, 784) scaled to [0, 1], labels int32 (N,).
    """
    folder = Path(folder)
    paths = {key: _find(folder, stem) for key, stem in MNIST_FILES.items()}
    x_train, y_train = _load_split(paths["train_images"], paths["train_labels"])
    x_test, y_test = _load_split(paths["test_images"], paths["test_labels"])
    if x_train.shape[1] != x_test.shape[1]:
        raise ValueError(f"{paths['train_images']} and {paths['test_images']}: images of "
                         f"different sizes ({x_train.shape[1]} and {x_test.shape[1]} pixels)")
    return x_train, y_train, x_test, y_test


def load_digits() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The bundled 8x8 digits, split like `load_mnist`'s result: (x_train, y_train, x_test,
    y_test), images as float32 rows (N, 64) scaled from 0..16 to [0, 1], labels int32 (N,).

    A fixed permutation (seed 0) of the 1797 images puts 1347 in the training set and 450 in
    the test set."""
    with np.load(DIGITS, allow_pickle=False) as data:
        images, labels = data["images"], data["labels"]
    x = images.astype(np.float32) / np.float32(16)
    y = labels.astype(np.int32)
    order = np.random.default_rng(0).permutation(len(x))
    train, test = order[:-DIGITS_TEST], order[-DIGITS_TEST:]
    return x[train], y[train], x[test], y[test]
