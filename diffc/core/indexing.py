"""numpy's indexing of traced arrays, `x[index]`.

Basic indexing (static ints, slices with any step, None, ...) becomes one `slice` equation,
then a `reshape` where None adds axes (a view: no copy). One integer index array among ints
and slices gathers along its axis (`take`) after the basic part, its axes placed as numpy
places them. Everything else is refused
at the user's line, saying what is supported: data-dependent shapes (boolean masks, traced
slice bounds) and slices of a symbolic axis whose size the type cannot express (x[1:] of B).
"""
from __future__ import annotations

import numpy as np

from .errors import ShapeError, TraceError
from .shapes import reshape, slice_p, take, transpose
from .sizes import Size
from .trace import Traced, at_user, bind, describe, type_of
from .types import ArrayType

_WHOLE = slice(None)
_SUPPORTED = ("ints, slices, None, ... (numpy's basic indexing) or one i32/i64 index array "
              "(take)")


def getitem(x, index):
    """x[index] with numpy's semantics, for the index forms the module docstring lists."""
    given = index if isinstance(index, tuple) else (index,)
    if any(isinstance(e, list) for e in given):
        raise at_user(TraceError, f"{_show(given)}: a list of indices is a constant array; "
                                  f"pass the indices as an i32/i64 parameter (x[idx], "
                                  f"take(x, idx, axis)) or use slices")
    if not any(_is_array(e) for e in given):
        return index_static(x, given)
    t = type_of(x)
    entries = _expand(given, t)
    arrays = [k for k, e in enumerate(entries) if _is_array(e)]
    if len(arrays) > 1 or any(e is None for e in entries):
        raise at_user(TraceError, f"indexing {t} with {_show(given)}: one index array can be "
                                  f"combined with ints and slices, not with another or None; "
                                  f"index in two steps (x[idx][:, None]) or use "
                                  f"take(x, idx, axis)")
    (k,) = arrays
    ti = type_of(entries[k])
    if not ti.dtype.is_float and ti.dtype.name not in ("i32", "i64"):
        raise at_user(TraceError, f"indexing {t} with a {ti} mask: the result's shape would "
                                  f"depend on the mask's values; select with "
                                  f"nn.where(mask, x, 0) instead")
    return _gather_after_basic(x, entries, k)


def _gather_after_basic(x, entries: list, k: int):
    """x[entries] for one index array at k among ints and slices: the basic part first, then
    take. numpy puts the gathered axes where the array is when the array and the ints stand
    together, else first."""
    ints = [j for j, e in enumerate(entries) if j != k and not isinstance(e, slice)]
    y = index_static(x, tuple(_WHOLE if j == k else e for j, e in enumerate(entries)))
    axis = k - sum(1 for j in ints if j < k)
    z = take(y, entries[k], axis=axis)
    advanced = sorted(ints + [k])
    if axis == 0 or advanced == list(range(advanced[0], advanced[-1] + 1)):
        return z
    n, rank = type_of(entries[k]).ndim, type_of(z).ndim
    moved = tuple(range(axis, axis + n))
    return transpose(z, moved + tuple(j for j in range(rank) if j not in moved))


def _is_array(e) -> bool:
    """Whether an index entry is an index array (traced, or numpy)."""
    return isinstance(e, Traced) or isinstance(e, np.ndarray) and e.ndim > 0


def index_static(x, entries: tuple):
    """Basic indexing: one slice (if it selects less than all of x), new axes by reshape."""
    t = type_of(x)
    start, step, sizes, shape = [], [], [], []
    axis = 0
    for e in _expand(entries, t):
        if e is None:
            shape.append(1)
            continue
        n = t.shape[axis]
        if isinstance(e, slice):
            first, st, size = _slice(e, n, t, axis)
            sizes.append(size)
            shape.append(size)
        else:
            first, st = _integer(e, n, t, axis), 0
        start.append(first)
        step.append(st)
        axis += 1
    if start != [0] * t.ndim or step != [1] * t.ndim or tuple(sizes) != t.shape:
        x = bind(slice_p, x, start=tuple(start), step=tuple(step), shape=tuple(sizes))
    return reshape(x, tuple(shape))


def _expand(entries: tuple, t: ArrayType) -> list:
    """The entries with ... (or nothing, at the end) standing for the axes not indexed."""
    used = sum(1 for e in entries if e is not None and e is not Ellipsis)
    if used > t.ndim:
        raise at_user(ShapeError, f"too many indices for {t}: {_show(entries)} indexes "
                                  f"{used} axes")
    at = [k for k, e in enumerate(entries) if e is Ellipsis]
    if len(at) > 1:
        raise at_user(ShapeError, f"an index can only have a single ellipsis (...), got "
                                  f"{_show(entries)}")
    fill = [_WHOLE] * (t.ndim - used)
    if not at:
        return list(entries) + fill
    return list(entries[:at[0]]) + fill + list(entries[at[0] + 1:])


def _integer(e, n, t: ArrayType, axis: int) -> int:
    """A static integer index (negative from the end), range-checked on a static axis."""
    if isinstance(e, np.ndarray) and e.ndim == 0 and e.dtype.kind in "iu":
        e = e.item()
    if isinstance(e, Size):
        raise at_user(TraceError, f"x[{e}]: a size is not a Python int while tracing; index "
                                  f"from the end with a negative int (x[-1])")
    if not isinstance(e, int | np.integer) or isinstance(e, bool):
        raise at_user(TraceError, f"cannot index {t} with {describe(e)}; supported: "
                                  f"{_SUPPORTED}")
    e = int(e)
    if isinstance(n, int) and not -n <= e < n:
        raise at_user(ShapeError, f"index {e} is out of range for axis {axis} of {t} (size "
                                  f"{n})")
    return e % n if isinstance(n, int) else e


def _slice(e: slice, n, t: ArrayType, axis: int) -> tuple:
    """(start, step, size) of a slice of an axis of size n."""
    for bound in (e.start, e.stop, e.step):
        if bound is not None and (not isinstance(bound, int | np.integer) or
                                  isinstance(bound, bool)):
            raise at_user(TraceError, f"slice bounds must be Python ints or None, got "
                                      f"{describe(bound)} in {_show((e,))}: a bound computed by "
                                      f"the function would make the shape depend on values")
    if e.step == 0:
        raise at_user(ShapeError, "slice step cannot be zero")
    if isinstance(n, str):
        if e.stop is None and e.step in (None, 1) and e.start in (None, 0):
            return 0, 1, n
        if e.stop is None and e.step == -1 and e.start in (None, -1):
            return -1, -1, n
        raise at_user(ShapeError, f"{_show((e,))} of the symbolic axis {n} of {t}: the result's "
                                  f"size depends on {n} in a way a dim cannot express (a dim is "
                                  f"an int or one symbol); slice a static axis, take the whole "
                                  f"axis (: or ::-1), or gather with take(x, idx, axis)")
    first, stop, step = e.indices(n)
    size = len(range(first, stop, step))
    if size == 0:
        raise at_user(ShapeError, f"{_show((e,))} selects nothing of axis {axis} of {t}: "
                                  f"arrays have dims >= 1")
    return first, step, size


def _show(entries) -> str:
    """An index as the user wrote it, inside x[...]."""
    def one(e):
        if isinstance(e, slice):
            text = ":".join("" if b is None else str(b) for b in (e.start, e.stop, e.step))
            return text[:-1] if text.endswith(":") and e.step is None else text
        return "..." if e is Ellipsis else "None" if e is None else (
            f"<{type_of(e)} array>" if isinstance(e, Traced) else repr(e))
    return f"x[{', '.join(one(e) for e in entries)}]"
