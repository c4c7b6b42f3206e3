"""Cross-step fusion for per-sample `fit`: one pass over a dense layer's weights per sample.

Input: a per-sample train-step program after fusion, and which of its inputs are per-sample
data. Output: the program each step of `fit` runs, and a `CrossStep` per rewritten layer.
A layer qualifies when its weight W is first read by `matvec(W, x)`, x a data input, and last
by the plain-SGD update `sgd_outer(W, a, x, lr)` (passes/sgd.py) that replaces it. In the
rewritten program the matvec's result comes in as an extra input `carry` (computed by the
previous step, or by the fit loop before the first), and the update becomes
`update_matvec(W, a, x, lr, next)`, which also computes `W' @ next` for the next sample (an
extra input) and leaves it in `carry`. Each row of W is then read once per sample, while in
cache, instead of twice; the arithmetic is the same as the step program's, so `fit` gives the
same numbers as a loop of step calls.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..core.ir import Eqn, Program, Var
from ..core.linalg import matvec_p
from .primitives import sgd_outer_p, update_matvec_p


@dataclass(frozen=True)
class CrossStep:
    weight: int  # input index of W
    data: int  # input index of x (per-sample data)
    carry: int  # input index of W @ x for this step's sample
    next: int  # input index of the next sample's x


def fuse_across_steps(program: Program, data: set[int]) -> tuple[Program, list[CrossStep]]:
    eqns, inputs = list(program.eqns), list(program.inputs)
    updates = list(program.updates)
    renamed: dict[int, Var] = {}
    rewrites = []
    for wi, w in enumerate(program.inputs):
        new = next((v for p, v in updates if p is w), None)
        readers = [i for i, e in enumerate(eqns) if e and any(a is w for a in e.inputs)]
        if new is None or w.type.ndim != 2 or len(readers) < 2:
            continue
        first, last = eqns[readers[0]], eqns[readers[-1]]
        if first.prim is not matvec_p or first.params["transpose_a"] or first.inputs[0] is not w:
            continue
        x = first.inputs[1]
        if not any(x is inputs[i] for i in data) or last.prim is not sgd_outer_p or \
                last.inputs[0] is not w or last.inputs[2] is not x:
            continue
        (_, a, _, lr), carry, x_next = last.inputs, Var(first.outputs[0].type), Var(x.type)
        g_next = Var(first.outputs[0].type)
        inputs += [carry, x_next]
        renamed[id(first.outputs[0])] = carry
        eqns[readers[-1]] = Eqn(update_matvec_p, (w, a, x, lr, x_next), {},
                                (new, g_next), last.source)
        eqns[readers[0]] = None
        updates.append((carry, g_next))
        rewrites.append(CrossStep(wi, next(i for i in data if inputs[i] is x),
                                  len(inputs) - 2, len(inputs) - 1))
    if not rewrites:
        return program, []
    rename = lambda a: renamed.get(id(a), a)  # noqa: E731
    eqns = [Eqn(e.prim, tuple(map(rename, e.inputs)), e.params, e.outputs, e.source)
            for e in eqns if e is not None]
    return Program(tuple(inputs), eqns, tuple(map(rename, program.outputs)),
                   tuple(updates)), rewrites
