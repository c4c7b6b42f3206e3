"""Transforms of traced functions: `grad`, `value_and_grad` and `check_grad`.

Input: a `Function` whose result is a floating-point scalar. Output: a compiled function with
the same signature whose program (built by `ad.vjp`, dead code removed) returns the gradients
too; its record's options say what it returns (`wrt`, `single`, `with_value`).
Invariants: `wrt` names floating-point parameters, each once; integer parameters are refused
with `SignatureError` before anything is built.
"""
from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np

from ..core.errors import ArgumentError, SignatureError
from ..core.ir import eval_program
from ..core.trace import is_finite_number
from ..passes import dce
from ..runtime.call import check_count, describe
from ..runtime.record import Record
from ..transforms.ad import vjp
from .function import CompiledFunction, Function, function


def as_function(f) -> Function:
    if isinstance(f, Function):
        return f
    if callable(f) and not isinstance(f, CompiledFunction):
        return function(f)
    raise SignatureError(f"expected a @diffc.function (or an annotated Python function), got {f!r}")


def wrt_names(f: Function, wrt) -> tuple[tuple[str, ...], bool]:
    """The parameter names to differentiate and whether one name (not a sequence) was given."""
    sig = f.signature
    result = sig.result
    if result.ndim != 0 or not result.dtype.is_float:
        raise SignatureError(f"{f.name}: gradients need a floating-point scalar result "
                             f"(-> f32 or -> f64), but it returns {result}")
    single = isinstance(wrt, str)
    if wrt is None:
        names = tuple(p.name for p in sig.params if p.type.dtype.is_float)
        if not names:
            raise SignatureError(f"{f.name}: has no floating-point parameter to differentiate")
    else:
        if not isinstance(wrt, str | Sequence) or not wrt or not all(
                isinstance(n, str) for n in ((wrt,) if single else wrt)):
            raise SignatureError(f"wrt: expected a parameter name or a sequence of names, "
                                 f"got {wrt!r}"[:200])
        names = (wrt,) if single else tuple(wrt)
    for n in names:
        p = sig.param(n)
        if not p.type.dtype.is_float:
            raise SignatureError(f"{f.name}: cannot differentiate with respect to {n!r}: it is "
                                 f"an integer parameter ({p.type})")
    if len(set(names)) != len(names):
        raise SignatureError(f"wrt: names a parameter twice: {list(names)}")
    return names, single


class GradFunction(CompiledFunction):
    """The compiled gradient (and value) of a scalar function."""

    def __init__(self, f, wrt=None, with_value: bool = False):
        f = as_function(f)
        names, single = wrt_names(f, wrt)
        indices = [f.signature.names.index(n) for n in names]
        kind = "value_and_grad" if with_value else "grad"
        program = dce(vjp(f.program, indices))
        if not with_value:  # the value stays computed (the gradients need it) but unreturned
            program.outputs = program.outputs[1:]
        options = {"wrt": list(names), "single": single, "with_value": with_value}
        record = Record("grad", f"{kind}_{f.name}", f.signature, f.signature, options)
        super().__init__(record, program)

    @property
    def wrt(self) -> tuple[str, ...]:
        """The names of the parameters differentiated, in the order gradients come back."""
        return tuple(self.record.options["wrt"])

    @property
    def with_value(self) -> bool:
        return self.record.options["with_value"]

    def __call__(self, *args, **kwargs):
        outputs = (self._native or self.compile()._native)(*args, **kwargs)
        value, grads = (outputs[0], outputs[1:]) if self.with_value else (None, outputs)
        grads = grads[0] if self.record.options["single"] else tuple(grads)
        return (value, grads) if self.with_value else grads


def grad(f, wrt=None) -> GradFunction:
    """The gradient of f: one array for a name, a tuple for a sequence (default: all floats)."""
    return GradFunction(f, wrt, with_value=False)


def value_and_grad(f, wrt=None) -> GradFunction:
    """Like `grad`, returning `(value, gradients)`."""
    return GradFunction(f, wrt, with_value=True)


class GradCheck(float):
    """The worst relative error between gradients and finite differences (a float; nan where a
    gradient or a difference is nan or infinite), with the worst error of each parameter in
    `errors` and a readable table as its `str`."""

    errors: dict[str, float]

    def __new__(cls, errors: dict[str, float]):
        values = list(errors.values())
        check = super().__new__(cls, math.nan if any(map(math.isnan, values)) else max(values))
        check.errors = errors
        return check

    @property
    def worst(self) -> float:
        return float(self)

    def __str__(self) -> str:
        rows = [f"  {name:>16}: {err:.3e}" for name, err in self.errors.items()]
        return "gradient check (relative error vs central differences):\n" + "\n".join(rows)


def check_grad(f, *args, wrt=None, directions: int = 3, eps: float = 1e-6,
               seed: int = 0) -> GradCheck:
    """Compare f's compiled gradients with central finite differences along random directions.

    The differences are taken in float64 through the numpy oracle (whatever f's dtype), so the
    reported error measures the gradients, not float32 rounding in the differences.
    """
    f = as_function(f)
    names, _ = wrt_names(f, wrt)
    check_count("directions", directions, 1)
    check_count("seed", seed, 0)
    if not is_finite_number(eps) or eps <= 0:
        raise ArgumentError(f"eps: expected a finite number > 0, got {describe(eps)}")
    grads = grad(f, list(names))(*args)
    rng = np.random.default_rng(seed)
    base = [np.array(a, dtype=np.float64) if np.asarray(a).dtype.kind == "f" else a
            for a in args]
    errors = {}
    for name, g in zip(names, grads, strict=True):
        i = f.signature.names.index(name)
        worst = 0.0
        for _ in range(directions):
            d = rng.standard_normal(np.shape(base[i]))
            d /= np.linalg.norm(d) or 1.0
            plus, minus = list(base), list(base)
            plus[i], minus[i] = base[i] + eps * d, base[i] - eps * d
            (fp,) = eval_program(f.program, *plus, float64=True)
            (fm,) = eval_program(f.program, *minus, float64=True)
            numeric = (float(fp) - float(fm)) / (2 * eps)
            analytic = float(np.sum(np.asarray(g, np.float64) * d))
            scale = max(abs(numeric), abs(analytic), 1e-8)
            error = abs(numeric - analytic) / scale
            worst = error if math.isnan(error) or error > worst else worst  # nan stays
        errors[name] = worst
    return GradCheck(errors)
