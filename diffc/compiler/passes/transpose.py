"""Transposes folded into matrix products: `matmul(transpose(a), b)` reads a where it lies.

`matmul` carries transpose flags and the gemm kernels read either layout, so a separate
`transpose` equation would only copy the matrix first (`X @ W.T` in user code traces to one).
One forward walk: a matmul input produced by a 2-D transpose is replaced by that transpose's
input, the matching flag flipped; `dce` then drops transposes nothing else reads. A fold that
would set both flags is not made (A^T B^T has no vector kernel, gemm.py): the first operand is
folded and the second keeps its copy.
"""
from __future__ import annotations

from ...ir import Eqn, Program

FLAGS = ("transpose_a", "transpose_b")


def fold_transposes(program: Program) -> Program:
    source_of = {id(e.outputs[0]): e.inputs[0] for e in program.eqns
                 if e.prim.name == "transpose" and e.params["perm"] == (1, 0)}
    eqns = []
    for e in program.eqns:
        if e.prim.name == "matmul" and any(id(a) in source_of for a in e.inputs):
            inputs, params = list(e.inputs), dict(e.params)
            for k, flag in enumerate(FLAGS):
                other = params[FLAGS[1 - k]]
                if id(inputs[k]) in source_of and not (other and not params[flag]):
                    inputs[k], params[flag] = source_of[id(inputs[k])], not params[flag]
            e = Eqn(e.prim, tuple(inputs), params, e.outputs, e.source)
        eqns.append(e)
    return Program(program.inputs, eqns, program.outputs, program.updates)
