"""Types of values and of functions.

Input: the annotations of a user function (`f32`, `f64[128, 784]`, `Array[f32, "B", 784]`).
Output: `DType`, `ArrayType` (a dtype and a shape of static `int` or symbolic `str` dims; rank 0
for scalars) and `Signature` (named parameter types plus the result type). `bool_` is the dtype
of masks (comparisons) inside traced code only: no annotation may use it.
Invariants: types are immutable and hashable; they print in the annotation syntax (`f32[B,784]`).
Dims are exactly `int` or `str` (subclasses such as IntEnum members or numpy scalars are
converted), and a type's static dims fit in `MAX_BYTES` (anything larger is a ShapeError).
"""
from __future__ import annotations

import ast
import inspect
import operator
import textwrap
from dataclasses import dataclass

import numpy as np

from .errors import ShapeError, SignatureError

Dim = int | str
MAX_BYTES = 2 ** 63 - 1  # the largest buffer int64 byte counts (and numpy's intp) can describe


@dataclass(frozen=True)
class DType:
    """A scalar element type; subscripting it makes an array type: `f32[128, 784]`."""

    name: str
    np_dtype: np.dtype
    is_float: bool
    c_type: str  # its name in C

    def __getitem__(self, dims) -> ArrayType:
        dims = dims if isinstance(dims, tuple) else (dims,)
        return check_size(ArrayType(self, tuple(_check_dim(d) for d in dims)))

    def __repr__(self) -> str:
        return self.name

    @property
    def itemsize(self) -> int:
        return self.np_dtype.itemsize


f32 = DType("f32", np.dtype(np.float32), True, "float")
f64 = DType("f64", np.dtype(np.float64), True, "double")
i32 = DType("i32", np.dtype(np.int32), False, "int32_t")
i64 = DType("i64", np.dtype(np.int64), False, "int64_t")
bool_ = DType("bool", np.dtype(np.bool_), False, "uint8_t")  # one byte holding 0 or 1, as numpy
DTYPES = (f32, f64, i32, i64, bool_)


def dtype_of_numpy(np_dtype) -> DType | None:
    """The diffc dtype of a numpy dtype, or None where diffc has no such dtype."""
    for dt in DTYPES:
        if dt.np_dtype == np_dtype:
            return dt
    return None


def _check_dim(d) -> Dim:
    """d as a plain `int` or `str`: subclasses (IntEnum members, numpy integers and strings) are
    normalised, because later stages tell static from symbolic dims by exact class."""
    if isinstance(d, str):
        if not d.isidentifier():
            raise SignatureError(f"a symbolic dimension must be an identifier, got {d!r}")
        return str.__str__(d)
    if isinstance(d, bool | np.bool_) or not isinstance(d, int | np.integer):
        raise SignatureError(f"a dimension must be an int >= 1 or a str name, got {d!r}")
    if d < 1:
        raise SignatureError(f"a dimension must be an int >= 1 or a str name, got {d}")
    return operator.index(d)


def static_bytes(t: ArrayType) -> int:
    """The bytes of t's static dims (each symbolic dim counts as 1)."""
    n = t.dtype.itemsize
    for d in t.shape:
        if d.__class__ is int:
            n *= d
    return n


def check_size(t: ArrayType) -> ArrayType:
    """t, if its static dims alone fit in MAX_BYTES; symbolic dims are checked at call time."""
    if static_bytes(t) > MAX_BYTES:
        raise ShapeError(f"{t} holds more than 2**63 - 1 bytes: no buffer can hold it")
    return t


@dataclass(frozen=True)
class ArrayType:
    """The type of a value: dtype and shape (rank 0 is a scalar)."""

    dtype: DType
    shape: tuple[Dim, ...]

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def symbols(self) -> tuple[str, ...]:
        return tuple(d for d in self.shape if isinstance(d, str))

    def __str__(self) -> str:
        if not self.shape:
            return self.dtype.name
        return f"{self.dtype.name}[{','.join(str(d) for d in self.shape)}]"

    __repr__ = __str__


class _ArrayAnnotation:
    """`Array[f32, 128, 784]`, the long spelling of `f32[128, 784]`."""

    def __getitem__(self, key) -> ArrayType:
        key = key if isinstance(key, tuple) else (key,)
        if not key or not isinstance(key[0], DType):
            raise SignatureError(f"Array[...] takes a dtype first, got {key!r}")
        return key[0][key[1:]]


Array = _ArrayAnnotation()


def as_type(annotation) -> ArrayType | None:
    """The ArrayType an annotation stands for, or None if it is not a diffc type (masks are
    values of traced code only: a bool parameter or result is not one)."""
    if isinstance(annotation, ArrayType) and annotation.dtype != bool_:
        return annotation.dtype[annotation.shape]  # made directly: checked as `f64[...]`'s
    if isinstance(annotation, DType) and annotation != bool_:
        return ArrayType(annotation, ())
    return None


@dataclass(frozen=True)
class Param:
    name: str
    type: ArrayType


@dataclass(frozen=True)
class Signature:
    """Named, typed parameters and the result type of a diffc function."""

    params: tuple[Param, ...]
    result: ArrayType

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(p.name for p in self.params)

    def param(self, name: str) -> Param:
        for p in self.params:
            if p.name == name:
                return p
        raise SignatureError(f"no parameter named {name!r}; the parameters are {list(self.names)}")

    def __str__(self) -> str:
        args = ", ".join(f"{p.name}: {p.type}" for p in self.params)
        return f"({args}) -> {self.result}"


def def_location(fn, param: str | None = None) -> str:
    """`file:line` of fn's `def` (not its decorator), or of one of its parameters."""
    code = getattr(fn, "__code__", None)
    if code is None:
        return "<unknown>"
    line = code.co_firstlineno
    try:
        lines, start = inspect.getsourcelines(fn)
        tree = ast.parse(textwrap.dedent("".join(lines)))
        node = next(n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef | ast.Lambda |
                                                            ast.AsyncFunctionDef))
        args = node.args
        found = [a for a in (*args.posonlyargs, *args.args, args.vararg, *args.kwonlyargs,
                             args.kwarg) if a is not None and a.arg == param]
        line = start - 1 + (found[0].lineno if found else node.lineno)
    except (OSError, TypeError, SyntaxError, StopIteration):
        pass
    return f"{code.co_filename}:{line}"


def signature_of(fn) -> Signature:
    """Read a function's annotations into a Signature; raise SignatureError naming the culprit
    (and where it is: the file and line of the parameter, or of the def)."""
    name = getattr(fn, "__qualname__", repr(fn))
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError) as e:
        raise SignatureError(f"{name}: cannot read its signature ({e})") from None
    hints = _annotations(fn)
    params = []
    for p in sig.parameters.values():
        where = def_location(fn, p.name)
        if p.kind not in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY):
            raise SignatureError(f"{where}: {name}: parameter {p.name!r} is *args/**kwargs; "
                                 f"each parameter needs its own annotation")
        if p.default is not p.empty:
            raise SignatureError(f"{where}: {name}: parameter {p.name!r} has a default value; "
                                 f"diffc parameters take no defaults")
        ann = hints.get(p.name, p.empty)
        if ann is p.empty:
            raise SignatureError(f"{where}: {name}: parameter {p.name!r} has no annotation; "
                                 f"expected a dtype (f64) or an array type (f64[128, 784])")
        t = as_type(ann)
        if t is None:
            raise SignatureError(f"{where}: {name}: parameter {p.name!r} has unsupported "
                                 f"annotation {ann!r}; expected a dtype (f64) or an array type "
                                 f"(f64[3, 4])")
        params.append(Param(p.name, t))
    ret = hints.get("return", sig.return_annotation)
    where = def_location(fn)
    if ret is inspect.Signature.empty:
        raise SignatureError(f"{where}: {name}: the return value has no annotation; expected "
                             f"e.g. '-> f64'")
    result = as_type(ret)
    if result is None:
        raise SignatureError(f"{where}: {name}: unsupported return annotation {ret!r}; "
                             f"expected a dtype (f64) or an array type (f64[10])")
    return Signature(tuple(params), result)


def _annotations(fn) -> dict:
    """Annotations with string annotations (PEP 563) evaluated in the function's globals."""
    raw = dict(getattr(fn, "__annotations__", {}))
    env = dict(getattr(fn, "__globals__", {}))
    if any(isinstance(a, str) for a in raw.values()) and getattr(fn, "__closure__", None):
        env.update(inspect.getclosurevars(fn).nonlocals)  # a function defined in a function
    out = {}
    for key, ann in raw.items():
        if isinstance(ann, str):
            try:
                ann = eval(ann, env)  # noqa: S307 - the user's own annotation text
            except Exception as e:
                what = "the return value" if key == "return" else f"parameter {key!r}"
                raise SignatureError(f"{getattr(fn, '__qualname__', fn)}: cannot evaluate the "
                                     f"annotation {ann!r} of {what} ({e})") from None
        out[key] = ann
    return out
