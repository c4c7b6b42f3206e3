"""Sizes of symbolic dims while tracing: what `x.shape[k]` gives for a symbolic dim.

A `Size` is a number known only when the compiled function is called (the size bound to a
symbolic dim), or arithmetic on such numbers and Python numbers. It mixes into arithmetic like
a Python number: among numbers and sizes it stays a `Size` (a small expression), and where it
meets a traced array it becomes a scalar of that array's dtype (`size_value` in
elementwise.py: `dim_size`, then the arithmetic recorded), so `nn.sum(x) / x.shape[0]` divides
by the batch size in x's dtype. A bare size also names its dim: shape arguments
(`reshape(x, (x.shape[0], -1))`) accept it where they accept the dim's name.
Invariants: a size is never a Python int or bool while tracing: `if`, `range()`, `int()` and
comparisons other than `==` of a dim with itself raise `TraceError` at the user's line.
"""
from __future__ import annotations

from .errors import TraceError
from .trace import Traced, at_user, describe, is_number

_SYMBOLS = {"add": "+", "sub": "-", "mul": "*", "div": "/"}


class Size:
    """A size bound at call time (`op` None: the size of axis `params["axis"]` of the traced
    array `args[0]`, named `name`), or the elementwise primitive `op` applied to sizes and
    numbers (`args`) with `params`."""

    __slots__ = ("op", "args", "params", "name")
    __array_ufunc__ = None  # numpy scalars defer to the reflected operators below

    def __init__(self, op: str | None, args: tuple, params: dict, name: str):
        self.op, self.args, self.params, self.name = op, args, params, name

    @classmethod
    def of(cls, x: Traced, axis: int) -> Size:
        """The size of x's symbolic axis `axis`."""
        return cls(None, (x,), {"axis": axis}, x.type.shape[axis])

    @property
    def dim(self) -> str | None:
        """The symbolic dim this size is (None for arithmetic on sizes)."""
        return self.name if self.op is None else None

    def __repr__(self) -> str:
        return self.name

    def _apply(self, op: str, *args, **params):
        if any(isinstance(a, Traced) for a in args):
            return NotImplemented  # the traced array's reflected operator records it
        if not all(isinstance(a, Size) or is_number(a) for a in args):
            return NotImplemented
        symbol = _SYMBOLS.get(op)
        text = f"({args[0]} {symbol} {args[1]})" if symbol else f"{op}({args[0]})"
        return Size(op, args, params, text)

    __add__ = lambda self, other: self._apply("add", self, other)  # noqa: E731
    __radd__ = lambda self, other: self._apply("add", other, self)  # noqa: E731
    __sub__ = lambda self, other: self._apply("sub", self, other)  # noqa: E731
    __rsub__ = lambda self, other: self._apply("sub", other, self)  # noqa: E731
    __mul__ = lambda self, other: self._apply("mul", self, other)  # noqa: E731
    __rmul__ = lambda self, other: self._apply("mul", other, self)  # noqa: E731
    __truediv__ = lambda self, other: self._apply("div", self, other)  # noqa: E731
    __rtruediv__ = lambda self, other: self._apply("div", other, self)  # noqa: E731
    __neg__ = lambda self: self._apply("neg", self)  # noqa: E731
    __pos__ = lambda self: self  # noqa: E731

    def __pow__(self, exponent):
        if not is_number(exponent):
            raise at_user(TraceError, f"'**' takes a constant Python number as exponent, got "
                                       f"{describe(exponent)}")
        y = float(exponent)
        return Size("pow", (self,), {"y": int(y) if y.is_integer() else y},
                    f"({self} ** {exponent})")

    def _refuse(self, what: str, *_):
        raise at_user(TraceError, f"{what} of the size {self}: it is bound when the compiled "
                                   f"function is called, so while tracing it is not a Python "
                                   f"number; compute with it (nn.sum(x) / x.shape[0]), or "
                                   f"declare the dim static (an int) to get an int")

    __bool__ = lambda self: self._refuse("truth testing (if/while/and/or/not)")  # noqa: E731
    __int__ = lambda self: self._refuse("int()")  # noqa: E731
    __float__ = lambda self: self._refuse("float()")  # noqa: E731
    __index__ = lambda self: self._refuse("use as a Python int (range(), an index)")  # noqa
    __lt__ = __le__ = __gt__ = __ge__ = lambda self, other: self._refuse(  # noqa: E731
        "comparison (as in `if x.shape[0] > 1:`)")
    __floordiv__ = __rfloordiv__ = __mod__ = __rmod__ = lambda self, *_: self._refuse(  # noqa
        "'//' or '%'")

    def __eq__(self, other) -> bool:
        """True for the same dim (or its name): one name binds one size in a call. Anything
        else is known only at call time."""
        if self.dim is not None and (other == self.dim if isinstance(other, str) else
                                     isinstance(other, Size) and other.dim == self.dim):
            return True
        return self._refuse(f"comparison with {describe(other)}")

    def __ne__(self, other) -> bool:
        return not self.__eq__(other)

    def __hash__(self) -> int:
        return hash(self.name)
