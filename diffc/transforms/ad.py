"""Reverse-mode automatic differentiation: `vjp(program, wrt) -> Program`.

Input: a program with one floating-point scalar output, and the indices of the inputs to
differentiate. Output: an ordinary program (it prints, verifies, evaluates and compiles) with
the same inputs, computing (output, gradient for each wrt input).
How: replay the forward equations into a new trace, seed the output's cotangent with 1, walk the
equations backwards applying each primitive's reverse rule (its `vjp`, beside its definition in
diffc/core/), sum cotangents of values used more than once with `add`, and sum the cotangent of
a rank-0 input over the axes it was implicitly broadcast along (the one place that happens).
The forward equations the gradients do not need stay: `passes.dce` removes them.
Every backward equation carries the `file:line` of the forward equation it differentiates.
"""
from __future__ import annotations

import numpy as np

from ..core.elementwise import elementwise
from ..core.errors import TraceError
from ..core.ir import Lit, Program, Var
from ..core.structural import fill_p, reduce_sum
from ..core.trace import TraceContext, type_of
from ..core.tracer import Tracer, replay


def _fill(ctx: TraceContext, t, value: float) -> Tracer:
    (v,) = ctx.emit(fill_p, [], dict(shape=t.shape, dtype=t.dtype, value=value))
    return Tracer(ctx, v)


def vjp(program: Program, wrt: list[int]) -> Program:
    (out,) = program.outputs
    assert out.type.ndim == 0 and out.type.dtype.is_float, "differentiate a float scalar"
    ctx = TraceContext()
    inputs = tuple(Var(v.type) for v in program.inputs)
    env, _ = replay(ctx, program, [Tracer(ctx, v) for v in inputs])  # the forward pass

    def atom(a):
        return a if isinstance(a, Lit) else env[id(a)].var

    def value(a):  # what a reverse rule sees: a traced value, or a literal as a 0-d array
        return np.asarray(a.value, a.type.dtype.np_dtype) if isinstance(a, Lit) else env[id(a)]

    cts: dict[int, Tracer] = {}
    if isinstance(out, Var):
        ctx.source = next((e.source for e in program.eqns if out in e.outputs), None)
        cts[id(out)] = _fill(ctx, out.type, 1.0)
    for e in reversed(program.eqns):
        (g,) = [cts.pop(id(v), None) for v in e.outputs]
        if g is None:
            continue
        ctx.source = e.source
        if e.prim.vjp is None:
            raise TraceError(f"{e.source}: cannot differentiate '{e.prim.name}': it has no "
                             f"reverse rule")
        in_cts = e.prim.vjp(g, *[value(a) for a in e.inputs], out=value(e.outputs[0]),
                            **e.params)
        for a, ct in zip(e.inputs, in_cts, strict=True):
            if ct is None or isinstance(a, Lit) or not a.type.dtype.is_float:
                continue
            if a.type.ndim == 0 and type_of(ct).ndim > 0:  # un-broadcast a rank-0 operand
                ct = reduce_sum(ct)
            cts[id(a)] = elementwise("add", cts[id(a)], ct) if id(a) in cts else ct

    ctx.source = None
    grads = [cts[id(program.inputs[i])] if id(program.inputs[i]) in cts else
             _fill(ctx, program.inputs[i].type, 0.0) for i in wrt]  # unused: a zero gradient
    return Program(inputs, ctx.eqns, (atom(out), *[g.var for g in grads]))
