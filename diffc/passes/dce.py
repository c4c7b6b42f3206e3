"""Dead code elimination: drop equations none of whose outputs reaches an output or update.

One backward walk over the equations with the set of live vars (like JAX's `_dce_jaxpr`).
"""
from __future__ import annotations

from ..core.ir import Program, Var


def dce(program: Program) -> Program:
    live = {id(a) for a in program.outputs if isinstance(a, Var)}
    live |= {id(v) for _, v in program.updates if isinstance(v, Var)}
    kept = []
    for e in reversed(program.eqns):
        if any(id(v) in live for v in e.outputs):
            kept.append(e)
            live |= {id(a) for a in e.inputs if isinstance(a, Var)}
    return Program(program.inputs, kept[::-1], program.outputs, program.updates)
