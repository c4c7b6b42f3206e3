"""Common subexpression elimination: an equation equal to an earlier one reuses its outputs.

Two equations are equal when primitive, params and inputs (after renaming) are equal. One
forward walk with a table keyed by that triple; nested programs in params are compared by
identity, so fused equations are never merged.
"""
from __future__ import annotations

from ..core.ir import Eqn, Lit, Program, Var


def _key(e: Eqn, rename) -> tuple:
    inputs = tuple(("lit", repr(a.value), a.type) if isinstance(a, Lit) else id(rename(a))
                   for a in e.inputs)
    params = tuple(sorted((k, id(v) if isinstance(v, Program) else v)
                          for k, v in e.params.items()))
    return e.prim.name, params, inputs


def cse(program: Program) -> Program:
    replaced: dict[int, Var] = {}
    rename = lambda a: replaced.get(id(a), a) if isinstance(a, Var) else a  # noqa: E731
    seen: dict[tuple, Eqn] = {}
    eqns = []
    for e in program.eqns:
        key = _key(e, rename)
        if key in seen:
            for old, new in zip(e.outputs, seen[key].outputs, strict=True):
                replaced[id(old)] = new
            continue
        e = Eqn(e.prim, tuple(rename(a) for a in e.inputs), e.params, e.outputs, e.source)
        seen[key] = e
        eqns.append(e)
    return Program(program.inputs, eqns, tuple(rename(a) for a in program.outputs),
                   tuple((k, rename(v)) for k, v in program.updates))
