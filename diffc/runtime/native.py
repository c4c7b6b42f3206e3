"""Native functions from addresses, and the memory they work in.

Input: entry-point addresses and their `Arg` lists (abi.py). Output: ctypes callables (a
packed twin's, where there are more arguments than ctypes passes), data addresses of numpy
arrays, and 64-byte aligned workspaces sized by a program's native `workspace_size` function.
Invariants: every allocation that input sizes decide fails with an `ArgumentError` saying what
was too large, never a MemoryError; a workspace-size function returns -1 on overflow, and that
is refused before anything is allocated. Uses numpy and ctypes only.
"""
from __future__ import annotations

import ctypes

import numpy as np

from ..core.errors import ArgumentError
from .abi import MAX_ARGS, NUMPY_DATA_OFFSET, Arg, packed_name


def _numpy_data_offset_ok() -> bool:
    """Whether numpy's array struct holds its data pointer where the `_py` entries read it."""
    a = np.empty(3)
    return ctypes.c_void_p.from_address(id(a) + NUMPY_DATA_OFFSET).value == a.ctypes.data


NUMPY_LAYOUT_OK = _numpy_data_offset_ok()
_from_address = ctypes.c_void_p.from_address


def data_address(a: np.ndarray) -> int:
    """The address of an array's data (~0.3 us, where `a.ctypes.data` takes ~1.7 us)."""
    if NUMPY_LAYOUT_OK:
        return _from_address(id(a) + NUMPY_DATA_OFFSET).value or 0
    return a.__array_interface__["data"][0]


def empty(shape, dtype, what: str) -> np.ndarray:
    """np.empty, or an ArgumentError saying `what` needs more memory than the machine has."""
    try:
        return np.empty(shape, dtype)
    except (MemoryError, ValueError):  # ValueError: more bytes than numpy can index
        raise ArgumentError(f"{what} would take {_bytes(shape, dtype)}, more memory than this "
                            f"machine can allocate") from None


def _bytes(shape, dtype) -> str:
    n = np.dtype(dtype).itemsize
    for d in (shape if isinstance(shape, tuple) else (shape,)):
        n *= d
    return f"{n} bytes" if n < 2 ** 30 else f"{n / 2 ** 30:.3g} GiB"


def aligned_workspace(size: int, what: str = "the workspace") -> tuple[np.ndarray, int]:
    """A buffer holding `size` bytes from a 64-byte aligned address, and that address (size
    -1, a workspace-size function's overflow, is an ArgumentError)."""
    if size < 0:
        raise ArgumentError(f"{what} would take more than 2**63 - 1 bytes")
    buffer = empty(size + 64, np.uint8, what)
    return buffer, (buffer.ctypes.data + 63) & -64


def ctypes_type(arg: Arg, objects: bool = False):
    """The ctypes type of an argument (with `objects`, arrays and outputs pass as numpy array
    objects, as the `_py` entries take them)."""
    if arg.pointer:
        return ctypes.py_object if objects and arg.role in ("input", "output") else \
            ctypes.c_void_p
    return np.ctypeslib.as_ctypes_type(arg.dtype.np_dtype)


def native_function(addresses: dict, name: str, restype, args: list[Arg],
                    objects: bool = False):
    """A ctypes callable for entry point `name` taking `args`: its packed twin where it takes
    more than MAX_ARGS arguments (called the same way)."""
    argtypes = [ctypes_type(a, objects) for a in args]
    if len(argtypes) <= MAX_ARGS:
        return ctypes.CFUNCTYPE(restype, *argtypes)(addresses[name])
    return _Packed(addresses[packed_name(name)], restype, argtypes)


# how each ctypes argument type is written into its 8-byte slot: numpy type, index step
_SLOTS = {ctypes.c_double: (np.float64, 1), ctypes.c_float: (np.float32, 2),
          ctypes.c_int32: (np.int32, 2), ctypes.c_int64: (np.int64, 1),
          ctypes.c_void_p: (np.uint64, 1)}


class _Packed:
    """Calls a packed twin (`name_packed(slots)`): slot i holds argument i as its C type."""

    def __init__(self, address: int, restype, argtypes: list):
        self.fn = ctypes.CFUNCTYPE(restype, ctypes.c_void_p)(address)
        self.count = len(argtypes)
        self.groups = [(dtype, np.array(indices, np.intp), np.array(indices) * step)
                       for c, (dtype, step) in _SLOTS.items()
                       if (indices := [i for i, a in enumerate(argtypes) if a is c])]

    def __call__(self, *args):
        slots = np.zeros(self.count, np.uint64)
        for dtype, indices, at in self.groups:
            slots.view(dtype)[at] = [args[i] for i in indices]
        return self.fn(slots.ctypes.data)


class Workspace:
    """The workspace of one entry: sizes per dims from its native size function (checked and
    cached), and a 64-byte aligned buffer that grows, never shrinks."""

    def __init__(self, size_function, describe_dims):
        self.size_function, self._describe = size_function, describe_dims  # -1: overflow
        self._sizes: dict[tuple, int] = {}
        self._buffer, self._address, self._capacity = None, 0, -1

    def size(self, dims: tuple) -> int:
        """The bytes these dims need, or an ArgumentError where a value would hold more than
        2**63 - 1 bytes (checked natively, with overflow checks, before any allocation)."""
        size = self._sizes.get(dims)
        if size is None:
            size = self.size_function(*dims)
            if size < 0:
                raise ArgumentError(f"{self._describe(dims)}: these sizes make a value of the "
                                    f"program larger than 2**63 - 1 bytes")
            self._sizes[dims] = size
        return size

    def address(self, dims: tuple) -> int:
        """The aligned address of a buffer large enough for these dims."""
        size = self._sizes.get(dims)
        if size is None:
            size = self.size(dims)
        if size > self._capacity:
            self._buffer, self._address = aligned_workspace(
                size, f"{self._describe(dims)}: the workspace for these sizes")
            self._capacity = size
        return self._address
