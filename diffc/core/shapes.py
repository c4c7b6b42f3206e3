"""Primitives that move values between layouts: slice and unslice (numpy's basic indexing and
its transpose), concatenate, gather and scatter_add (`take` with an index array and its
transpose); and the shape operations users call, with numpy's conventions: reshape,
transpose, expand_dims, squeeze, broadcast_to, concatenate, stack, take.

A slice reads its input at `start + step * i` along each axis; an axis with step 0 is an
integer index and is dropped. On a symbolic axis a slice takes the whole axis (forwards or
backwards) or one index (a negative one counts from the end); an index other than 0 or -1
needs the axis to be long enough, which the runtime checks at call time (`constant_indices`).
Index arrays (`gather`, `scatter_add`) are labels of the gathered axis (`labels` flag with the
`axis` param): the runtime range-checks them before native code runs.
Shape arguments take ints, symbolic dims by name, or the sizes `x.shape` gives (sizes.py).
"""
from __future__ import annotations

from collections import Counter

import numpy as np

from .errors import ArgumentError, DTypeError, ShapeError
from .primitive import check_axes, float_dtype, primitive
from .sizes import Size
from .structural import broadcast_to as broadcast_explicitly
from .structural import normalize_axes, reshape_p, transpose_p
from .trace import at_user, bind, describe, is_number, type_of
from .types import ArrayType

# ----------------------------------------------------------------------------- slice, unslice


def _slice_rule(x: ArrayType, *, start, step, shape) -> ArrayType:
    if not len(start) == len(step) == x.ndim or len(shape) != sum(s != 0 for s in step):
        raise ShapeError(f"slice: start {start}, step {step} and shape {shape} do not fit {x}")
    sizes = iter(shape)
    for n, first, st in zip(x.shape, start, step, strict=True):
        size = 1 if st == 0 else next(sizes)
        if isinstance(n, str):
            whole = size == n and (first, st) in ((0, 1), (-1, -1))
            if st != 0 and not whole:
                raise ShapeError(f"slice: a slice of the symbolic axis {n} of {x} must take "
                                 f"the whole axis, got start {first}, step {st}, size {size}")
            continue
        last = first + st * (size - 1) if isinstance(size, int) else -1
        if not (isinstance(size, int) and size >= 1 and 0 <= first < n and 0 <= last < n):
            raise ShapeError(f"slice: start {first}, step {st}, size {size} reaches outside "
                             f"an axis of size {n} of {x}")
    return ArrayType(x.dtype, tuple(shape))


def _basic_index(shape, start, step, out_shape) -> tuple:
    """The numpy index (ints and slices) reading what the slice reads, for concrete sizes."""
    sizes, index = iter(out_shape), []
    for n, first, st in zip(shape, start, step, strict=True):
        if not -n <= first < n:
            raise at_user(ArgumentError, f"index {first} is out of range for an axis of size "
                                         f"{n}")
        first %= n
        if st == 0:
            index.append(first)
            continue
        last = first + st * (next(sizes) - 1)
        index.append(slice(first, last + 1 if st > 0 else (last - 1 if last else None), st))
    return tuple(index)


def _unslice_rule(g: ArrayType, *, shape, start, step) -> ArrayType:
    out = ArrayType(float_dtype("unslice", g), tuple(shape))
    if _slice_rule(out, start=start, step=step, shape=g.shape) != g:
        raise ShapeError(f"unslice: {g} is not what start {start}, step {step} slice from {out}")
    return out


def _unslice(g, *, shape, start, step):
    out = np.zeros(shape, g.dtype)
    out[_basic_index(shape, start, step, g.shape)] = g
    return out


def _constant_indices(x: ArrayType, start, step) -> tuple:
    """(index, dim) for each integer index into a symbolic dim that needs dim > index (a
    negative index -k needs dim >= k)."""
    pairs = ((first if first >= 0 else -first - 1, n)
             for n, first, st in zip(x.shape, start, step, strict=True)
             if st == 0 and isinstance(n, str))
    return tuple((v, n) for v, n in pairs if v > 0)


# x[...] with static ints (step 0: the axis dropped) and slices
slice_p = primitive(
    "slice", lambda x, *, start, step, shape: x[_basic_index(x.shape, start, step, shape)].copy(),
    _slice_rule,
    lambda g, x, *, out, start, step, shape: (
        bind(unslice_p, g, shape=type_of(x).shape, start=start, step=step),),
    indexed=True, moves=True,
    constant_indices=lambda x, *, start, step, shape: _constant_indices(x, start, step))

# zeros of `shape` holding g where slice[start, step] reads: slice's transpose
unslice_p = primitive(
    "unslice", _unslice, _unslice_rule,
    lambda g, h, *, out, shape, start, step: (
        bind(slice_p, g, start=start, step=step, shape=type_of(h).shape),),
    indexed=True,
    constant_indices=lambda g, *, shape, start, step: _constant_indices(
        ArrayType(g.dtype, shape), start, step))


# ----------------------------------------------------------------------------- concatenate

def _concatenate_rule(*xs: ArrayType, axis) -> ArrayType:
    first = xs[0]
    check_axes(first, (axis,))
    for t in xs:
        if t.dtype != first.dtype:
            raise DTypeError(f"concatenate needs arrays of one dtype, got {first} and {t}")
        if t.ndim != first.ndim or any(a != b for k, (a, b) in enumerate(
                zip(t.shape, first.shape, strict=True)) if k != axis):
            raise ShapeError(f"concatenate along axis {axis}: {t} does not fit {first}")
    sizes = [t.shape[axis] for t in xs]
    if not all(isinstance(n, int) for n in sizes):
        raise ShapeError(f"concatenate along axis {axis} of {', '.join(map(str, xs))}: the "
                         f"result's axis would be {' + '.join(map(str, sizes))}, which is not a "
                         f"dim (an int or one symbol); concatenate along a static axis")
    shape = list(first.shape)
    shape[axis] = sum(sizes)
    return ArrayType(first.dtype, tuple(shape))


def _concatenate_vjp(g, *xs, out, axis):
    parts, offset = [], 0
    for x in xs:
        shape = type_of(x).shape
        start = tuple(offset if k == axis else 0 for k in range(len(shape)))
        parts.append(bind(slice_p, g, start=start, step=(1,) * len(shape), shape=shape))
        offset += shape[axis]
    return tuple(parts)


concatenate_p = primitive("concatenate", lambda *xs, axis: np.concatenate(xs, axis),
                          _concatenate_rule, _concatenate_vjp, moves=True)


# ----------------------------------------------------------------------------- gather

def _index_dtype(what: str, idx: ArrayType) -> None:
    if idx.dtype.is_float:
        raise DTypeError(f"{what}: indices must be integers (i32/i64), got {idx}")


def _gather_rule(x: ArrayType, idx: ArrayType, *, axis) -> ArrayType:
    float_dtype("gather", x)
    _index_dtype("gather", idx)
    check_axes(x, (axis,))
    return ArrayType(x.dtype, x.shape[:axis] + idx.shape + x.shape[axis + 1:])


def _check_indices(idx, n: int) -> None:
    if idx.size and (idx.min() < 0 or idx.max() >= n):
        raise at_user(ArgumentError, f"indices must lie in [0, {n}), got values from "
                                     f"{idx.min()} to {idx.max()}")


def _gather(x, idx, *, axis):
    _check_indices(idx, x.shape[axis])
    return np.take(x, idx.astype(np.intp), axis)


def _scatter_add_rule(g: ArrayType, idx: ArrayType, *, shape, axis) -> ArrayType:
    float_dtype("scatter_add", g)
    _index_dtype("scatter_add", idx)
    out = ArrayType(g.dtype, tuple(shape))
    check_axes(out, (axis,))
    if g.shape != out.shape[:axis] + idx.shape + out.shape[axis + 1:]:
        raise ShapeError(f"scatter_add: {g} is not what indices {idx} gather along axis {axis} "
                         f"of {out}")
    return out


def _scatter_add(g, idx, *, shape, axis):
    _check_indices(idx, shape[axis])
    out = np.zeros(shape, g.dtype)
    np.add.at(out, (slice(None),) * axis + (idx.astype(np.intp),), g)
    return out


# take(x, idx, axis): x's slices along axis at each index of idx
gather_p = primitive("gather", _gather, _gather_rule,
                     lambda g, x, idx, *, out, axis: (
                         bind(scatter_add_p, g, idx, shape=type_of(x).shape, axis=axis), None),
                     indexed=True, labels="input")

# zeros of `shape` with g's slices added at their indices along axis: gather's transpose
scatter_add_p = primitive("scatter_add", _scatter_add, _scatter_add_rule,
                          lambda g, h, idx, *, out, shape, axis: (
                              bind(gather_p, g, idx, axis=axis), None),
                          labels="output")


# ----------------------------------------------------------------------------- operations

def array_type(x, what: str) -> ArrayType:
    """The type of an array operand (traced or numpy), or a ShapeError naming `what`."""
    t = type_of(x)
    if t is None:
        raise at_user(ShapeError, f"{what} expects an array, got {describe(x)}")
    return t


def as_dim(d, what: str):
    """A shape entry as a dim: an int >= 1, a symbolic dim's name or its size (sizes.py)."""
    if isinstance(d, Size) and d.dim is not None:
        return d.dim
    if isinstance(d, str) and d.isidentifier():
        return d
    if is_number(d) and isinstance(d, int | np.integer) and d >= 1:
        return int(d)
    raise at_user(ShapeError, f"{what}: a dim must be an int >= 1, a symbolic dim's name or "
                              f"x.shape[k], got {describe(d)}")


def _as_shape(shape) -> tuple:
    return tuple(shape) if isinstance(shape, tuple | list) else (shape,)


def _size_parts(shape) -> tuple:
    """A shape's number of elements as (static product, sorted symbols)."""
    static = 1
    for d in shape:
        static *= d if isinstance(d, int) else 1
    return static, sorted(d for d in shape if isinstance(d, str))


def reshape(x, shape):
    """numpy's reshape of a row-major array (at most one -1, inferred); symbolic dims are kept,
    and the sizes must be provably equal: (B, 4, 3) -> (B, 12) or (B, -1)."""
    t = array_type(x, "reshape")
    entries = _as_shape(shape)
    if sum(1 for d in entries if is_number(d) and d == -1) > 1:
        raise at_user(ShapeError, f"reshape: at most one -1, got {shape}")
    dims = [d if is_number(d) and d == -1 else as_dim(d, "reshape") for d in entries]
    if -1 in dims:
        dims[dims.index(-1)] = _inferred(t, tuple(d for d in dims if d != -1), shape)
    return x if tuple(dims) == t.shape else bind(reshape_p, x, shape=tuple(dims))


def _inferred(t: ArrayType, known: tuple, shape):
    """The dim a -1 stands for: what remains of t's size after the known dims."""
    (total, symbols), (part, named) = _size_parts(t.shape), _size_parts(known)
    left = Counter(symbols)
    left.subtract(named)
    rest = sorted(left.elements())
    quotient, remainder = divmod(total, part)
    if remainder == 0 and min(left.values(), default=0) >= 0:
        if not rest:
            return quotient
        if quotient == 1 and len(rest) == 1:
            return rest[0]
        what = f"the -1 would be {'*'.join(rest + [str(quotient)] * (quotient > 1))}"
    else:
        what = f"the other dims do not divide the size of {t}"
    target = ", ".join(map(str, _as_shape(shape)))
    raise at_user(ShapeError, f"cannot reshape {t} to ({target}): {what}, and a dim is an int "
                              f"or one symbol")


def transpose(x, axes=None):
    """numpy's transpose: the axes reversed, or permuted as `axes` says (negative allowed)."""
    t = array_type(x, "transpose")
    perm = tuple(reversed(range(t.ndim))) if axes is None else tuple(_as_shape(axes))
    if len(perm) != t.ndim or sorted(normalize_axes(t, perm)) != list(range(t.ndim)):
        raise at_user(ShapeError, f"transpose: axes {axes!r} are not a permutation of the "
                                  f"axes of {t}")
    perm = tuple(int(a) % t.ndim for a in perm)
    return x if perm == tuple(range(t.ndim)) else bind(transpose_p, x, perm=perm)


def expand_dims(x, axis):
    """numpy's expand_dims: size-1 axes inserted at `axis` (an int or a tuple) of the result."""
    t = array_type(x, "expand_dims")
    axes = _as_shape(axis)
    new = normalize_axes(ArrayType(t.dtype, (1,) * (t.ndim + len(axes))), axes)
    rest = iter(t.shape)
    return reshape(x, tuple(1 if k in new else next(rest) for k in range(t.ndim + len(axes))))


def squeeze(x, axis=None):
    """numpy's squeeze: the size-1 axes (or the given ones, which must have size 1) removed."""
    t = array_type(x, "squeeze")
    axes = [k for k, d in enumerate(t.shape) if d == 1] if axis is None else \
        normalize_axes(t, axis)
    for k in axes:
        if t.shape[k] != 1:
            raise at_user(ShapeError, f"squeeze: axis {k} of {t} has size {t.shape[k]}, not 1")
    return reshape(x, tuple(d for k, d in enumerate(t.shape) if k not in axes))


def broadcast_to(x, shape):
    """numpy's broadcast_to: x's axes, aligned at the end, equal to shape's or of size 1."""
    t = array_type(x, "broadcast_to")
    target = tuple(as_dim(d, "broadcast_to") for d in _as_shape(shape))
    pad = len(target) - t.ndim
    if pad < 0 or any(d not in (1, target[pad + k]) for k, d in enumerate(t.shape)):
        raise at_user(ShapeError, f"broadcast_to: cannot broadcast {t} to {target}")
    return broadcast_explicitly(x, target)


def concatenate(xs, axis=0):
    """numpy's concatenate of a sequence of arrays along an existing axis."""
    xs = list(xs) if isinstance(xs, list | tuple) else [xs]
    types = [array_type(x, "concatenate") for x in xs]
    if not xs or types[0].ndim == 0:
        raise at_user(ShapeError, f"concatenate needs one or more arrays of rank >= 1, got "
                                  f"{', '.join(map(str, types)) or 'none'}")
    (axis,) = normalize_axes(types[0], axis)
    return xs[0] if len(xs) == 1 else bind(concatenate_p, *xs, axis=axis)


def stack(xs, axis=0):
    """numpy's stack: arrays of one shape joined along a new axis."""
    xs = list(xs) if isinstance(xs, list | tuple) else [xs]
    if not xs:
        raise at_user(ShapeError, "stack needs one or more arrays, got none")
    t = array_type(xs[0], "stack")
    (axis,) = normalize_axes(ArrayType(t.dtype, (1,) * (t.ndim + 1)), axis)
    return concatenate([expand_dims(x, axis) for x in xs], axis)


def take(x, indices, axis=0):
    """numpy's take along one axis: an integer index array (traced, or numpy eagerly) gathers
    x's slices at each index; a Python integer is x's slice at that index."""
    t = array_type(x, "take")
    (axis,) = normalize_axes(t, axis)
    if isinstance(indices, int | np.integer) and not isinstance(indices, bool):
        return index_axis(x, axis, int(indices))
    if isinstance(indices, list | tuple):
        indices = np.asarray(indices)
    ti = type_of(indices)
    if ti is None or ti.dtype.is_float:
        raise at_user(DTypeError, f"take: indices must be an i32/i64 array or an int, got "
                                  f"{describe(indices)}")
    return bind(gather_p, x, indices, axis=axis)


def index_axis(x, axis: int, i: int):
    """x[..., i, ...] with i at `axis`: negative counts from the end; out of a static axis's
    range is a ShapeError here (on a symbolic axis the runtime checks it)."""
    t = type_of(x)
    n = t.shape[axis]
    if isinstance(n, int):
        if not -n <= i < n:
            raise at_user(ShapeError, f"index {i} is out of range for axis {axis} of {t} "
                                      f"(size {n})")
        i %= n
    start = tuple(i if k == axis else 0 for k in range(t.ndim))
    step = tuple(0 if k == axis else 1 for k in range(t.ndim))
    return bind(slice_p, x, start=start, step=step, shape=t.shape[:axis] + t.shape[axis + 1:])
