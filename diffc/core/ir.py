"""The IR: a typed, first-order list of equations, like a jaxpr.

`Var` is a value compared by identity, `Lit` a scalar constant, `Eqn` one primitive application
(with the user's `file:line` as `source`), `Program` the inputs, equations, outputs and `updates`
(a param input paired with the value that replaces it in place: how optimizer steps appear).
Invariants, checked by `verify`: every var is bound once, before use; each equation's output types
are what its primitive's shape rule gives; updates replace an input with a value of its type;
nested programs (in params) obey the same rules. `eval_program` is the numpy oracle.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .types import ArrayType, DType, f64


class Var:
    """A value produced once and used any number of times; compared by identity."""

    __slots__ = ("type",)

    def __init__(self, type: ArrayType):
        self.type = type

    def __repr__(self) -> str:
        return f"Var({self.type})"


class Lit:
    """A scalar constant operand."""

    __slots__ = ("value", "type")

    def __init__(self, value: float | int, type: ArrayType):
        assert type.ndim == 0, "literals are scalars"
        self.value = int(value) if not type.dtype.is_float else float(value)
        self.type = type

    def __repr__(self) -> str:
        return f"Lit({self.value}:{self.type})"


Atom = Var | Lit


@dataclass
class Eqn:
    prim: Any  # an ops.Primitive; ir.py does not import ops
    inputs: tuple[Atom, ...]
    params: dict
    outputs: tuple[Var, ...]
    source: str = ""


@dataclass
class Program:
    inputs: tuple[Var, ...]
    eqns: list[Eqn]
    outputs: tuple[Atom, ...]
    updates: tuple[tuple[Var, Atom], ...] = field(default_factory=tuple)

    def __str__(self) -> str:
        return pp_program(self)


# ----------------------------------------------------------------------------- printing

class _Namer:
    """Names vars a, b, ..., z, ba, bb, ... in the order they are first bound."""

    def __init__(self):
        self.names: dict[int, str] = {}

    def __call__(self, v: Var) -> str:
        if id(v) not in self.names:
            n, s = len(self.names), ""
            while True:
                s = chr(ord("a") + n % 26) + s
                n //= 26
                if n == 0:
                    break
            self.names[id(v)] = s
        return self.names[id(v)]


def _pp_atom(a: Atom, name: _Namer) -> str:
    if isinstance(a, Lit):
        return repr(a.value)
    return name(a)


def _pp_param(value, name: _Namer, indent: int) -> str:
    if isinstance(value, Program):
        return "\n" + _pp(value, name, indent + 4)
    if isinstance(value, tuple):
        return "(" + ",".join(str(x) for x in value) + ("," if len(value) == 1 else "") + ")"
    return str(value)


def _pp_lines(p: Program, name: _Namer, indent: int) -> list[str]:
    """The program's text as [lambda line, one string per equation..., in line]."""
    pad = " " * indent
    binders = " ".join(f"{name(v)}:{v.type}" for v in p.inputs)
    lines = [f"{pad}{{ lambda {binders} ."]
    for i, e in enumerate(p.eqns):
        lhs = " ".join(f"{name(v)}:{v.type}" for v in e.outputs)
        params = " ".join(f"{k}={_pp_param(e.params[k], name, indent + 4)}"
                          for k in sorted(e.params))
        head = f"{e.prim.name}[{params}]" if params else e.prim.name
        rhs = " ".join([head] + [_pp_atom(a, name) for a in e.inputs])
        lines.append(f"{pad}  {'let' if i == 0 else '   '} {lhs} = {rhs}")
    outs = ", ".join(_pp_atom(a, name) for a in p.outputs)
    tail = f"{pad}  in ( {outs} )"
    if p.updates:
        ups = ", ".join(f"{name(k)} <- {_pp_atom(v, name)}" for k, v in p.updates)
        tail += f" updates ( {ups} )"
    lines.append(tail + " }")
    return lines


def _pp(p: Program, name: _Namer, indent: int) -> str:
    return "\n".join(_pp_lines(p, name, indent))


def pp_program(p: Program) -> str:
    """The program as text: one equation per line, names in binding order, typed binders."""
    return _pp(p, _Namer(), 0)


# ----------------------------------------------------------------------------- verification

class VerifyError(Exception):
    """An IR invariant does not hold: a bug in diffc (a pass or a rule), never in user code."""


def verify(p: Program) -> None:
    """Check every invariant of the module docstring; on failure show the equations around it."""
    bound: set[int] = set()

    def fail(msg: str, at: int | None) -> None:
        text = _pp_lines(p, _Namer(), 0)
        if at is not None:  # entry 0 is the lambda line, equation i is entry i + 1
            window = [("> " if j == at + 1 else "  ") + text[j]
                      for j in range(max(1, at - 2), min(len(text), at + 5))]
            msg += "\n" + "\n".join(window)
        raise VerifyError(msg)

    for v in p.inputs:
        if not isinstance(v, Var) or id(v) in bound:
            fail("program inputs must be distinct Vars", None)
        bound.add(id(v))
    for i, e in enumerate(p.eqns):
        for a in e.inputs:
            if isinstance(a, Var) and id(a) not in bound:
                fail(f"equation {i} ({e.prim.name}) uses a var before it is bound", i)
        for v in e.outputs:
            if id(v) in bound:
                fail(f"equation {i} ({e.prim.name}) binds a var that is already bound", i)
            bound.add(id(v))
        try:
            expected = e.prim.shape_rule(*[a.type for a in e.inputs], **e.params)
        except Exception as ex:
            fail(f"equation {i} ({e.prim.name}) fails its shape rule: {ex}", i)
        expected = expected if isinstance(expected, tuple) else (expected,)
        got = tuple(v.type for v in e.outputs)
        if expected != got:
            fail(f"equation {i} ({e.prim.name}) has output types {got}, its rule gives "
                 f"{expected}", i)
        for value in e.params.values():
            if isinstance(value, Program):
                verify(value)
    for a in p.outputs:
        if isinstance(a, Var) and id(a) not in bound:
            fail("a program output is not bound", None)
    inputs = {id(v) for v in p.inputs}
    for k, v in p.updates:
        if id(k) not in inputs:
            fail("an update replaces something that is not a program input", None)
        if isinstance(v, Var) and id(v) not in bound:
            fail("an update's new value is not bound", None)
        if k.type != v.type:
            fail(f"an update replaces a {k.type} input with a {v.type} value", None)


# ----------------------------------------------------------------------------- evaluation

def eval_program(p: Program, *args, float64: bool = False) -> list:
    """Run the program on numpy values with each primitive's numpy implementation.

    Returns the outputs as a list. Like compiled code, it applies `updates` in place: each
    updated input argument (a numpy array) is overwritten with its new value. With `float64`,
    floating-point values are computed in float64 whatever their declared dtype, also the
    results of conversions (for finite differences of float32 programs).
    """
    def np_dtype(t: ArrayType):
        return np.dtype(np.float64) if float64 and t.dtype.is_float else t.dtype.np_dtype

    if len(args) != len(p.inputs):
        raise TypeError(f"program takes {len(p.inputs)} arguments, got {len(args)}")
    env: dict[int, Any] = {}

    def read(a: Atom):
        if isinstance(a, Lit):
            return np_dtype(a.type).type(a.value)
        return env[id(a)]

    symbols: dict[str, int] = {}
    for v, x in zip(p.inputs, args, strict=True):
        env[id(v)] = np.asarray(x, dtype=np_dtype(v.type))
        symbols.update((d, s) for d, s in zip(v.type.shape, env[id(v)].shape, strict=False)
                       if isinstance(d, str))

    def resolve(value):  # shape params may hold symbolic dims: use this call's sizes
        if isinstance(value, tuple):
            return tuple(symbols.get(d, d) if isinstance(d, str) else d for d in value)
        if float64 and isinstance(value, DType) and value.is_float:  # a dtype to convert to
            return f64
        return value

    for e in p.eqns:
        params = {k: resolve(v) for k, v in e.params.items()}
        out = e.prim.impl(*[read(a) for a in e.inputs], **params)
        outs = out if isinstance(out, tuple) else (out,)
        for v, x in zip(e.outputs, outs, strict=True):
            env[id(v)] = np.asarray(x, dtype=np_dtype(v.type))
    # copies: an output or new value may be an argument array that the updates overwrite
    results = [np.array(read(a)) for a in p.outputs]
    new_values = [np.array(read(v)) for _, v in p.updates]
    for (k, _), x in zip(p.updates, new_values, strict=True):
        np.copyto(args[p.inputs.index(k)], x)
    return results
