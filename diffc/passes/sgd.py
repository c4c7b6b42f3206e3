"""Row-wise SGD updates: `W - lr * outer(a, x)` becomes `sgd_outer(W, a, x, lr)`.

Input: a program after fusion. Output: the same program with each fused equation that computes
exactly a plain SGD step of a weight matrix from an outer product replaced by `sgd_outer`, whose
kernel updates W row by row and skips the rows where a[i] == 0 (a unit relu switched off: the
row's gradient is exactly zero, so plain SGD leaves it as it is) unless x or lr holds an inf or
nan (0 * inf is nan). The arithmetic of every row written is the fused equation's
(`W - lr * (a[i] * x[j])`).
"""
from __future__ import annotations

from ..core.ir import Eqn, Program, Var
from .primitives import fused_p, sgd_outer_p


def rowwise_sgd(program: Program) -> Program:
    eqns = []
    for e in program.eqns:
        match = plain_sgd_update(e)
        eqns.append(e if match is None else Eqn(sgd_outer_p, match, {}, e.outputs,
                                                e.source))
    return Program(program.inputs, eqns, program.outputs, program.updates)


def plain_sgd_update(e: Eqn) -> tuple[Var, Var, Var, Var] | None:
    """(W, a, x, lr) if e is `fused[outer(a, x); mul(lr, .); sub(W, .)]` with one output."""
    if e.prim is not fused_p or [q.prim.name for q in e.params["body"].eqns] != [
            "outer", "mul", "sub"]:
        return None
    body = e.params["body"]
    outer_, mul, sub = body.eqns
    outside = {id(inner): a for inner, a in zip(body.inputs, e.inputs, strict=True)}
    a, x = (outside.get(id(v)) for v in outer_.inputs)
    others = [v for v in mul.inputs if v is not outer_.outputs[0]]
    lr = outside.get(id(others[0])) if len(others) == 1 else None
    w = outside.get(id(sub.inputs[0]))
    ok = (a is not None and x is not None and lr is not None and lr.type.ndim == 0 and
          w is not None and sub.inputs[1] is mul.outputs[0] and len(mul.inputs) == 2 and
          body.outputs == (sub.outputs[0],))
    return (w, a, x, lr) if ok else None
