"""Transposes folded into matrix products, so that no matrix is copied only to be transposed.

`matmul` and `matvec` carry transpose flags and their kernels read either layout, so a separate
`transpose` equation would only copy a matrix. One forward walk, two rewrites:
- a 2-D transpose of a product that nothing else reads becomes the product the other way
  round: `(op(a) op(b))^T = op'(b) op'(a)` with both flags flipped, `outer(a, b)^T =
  outer(b, a)` (the gradient of a weight used as `x @ W.T` in user code comes out transposed);
- a matmul or matvec matrix input produced by a 2-D transpose is replaced by that transpose's
  input, the matching flag flipped (`x @ W.T` itself).
`dce` then drops what nothing reads any more. No rewrite makes an A^T B^T matmul (it has no
vector kernel, gemm.py): of two transposed inputs the first is folded, the second keeps its copy.
"""
from __future__ import annotations

from collections import Counter

from ..core.ir import Eqn, Program
from ..core.linalg import matmul_p, outer_p
from ..core.structural import transpose_p


def fold_transposes(program: Program) -> Program:
    producer = {}  # var -> the (rewritten) equation that computes it
    uses = Counter(id(a) for e in program.eqns for a in e.inputs)
    uses.update(id(a) for a in (*program.outputs, *(v for _, v in program.updates)))
    source_of = {}  # output of a transpose that stays -> its input
    eqns = []
    for e in program.eqns:
        if _is_transpose(e):
            product = producer.get(id(e.inputs[0]))
            swapped = _swapped(product) if uses[id(e.inputs[0])] == 1 else None
            if swapped is not None:
                e = Eqn(product.prim, swapped[0], swapped[1], e.outputs, e.source)
            else:
                source_of[id(e.outputs[0])] = e.inputs[0]
        if e.prim.transpose_flags and any(id(a) in source_of for a in e.inputs):
            e = _fold_inputs(e, source_of)
        eqns.append(e)
        producer.update((id(v), e) for v in e.outputs)
    return Program(program.inputs, eqns, program.outputs, program.updates)


def _is_transpose(e: Eqn) -> bool:
    return e.prim is transpose_p and e.params["perm"] == (1, 0)


def _swapped(product: Eqn | None):
    """(inputs, params) of the transpose of product's result as one equation, if there is one
    with a vector kernel."""
    if product is None or product.prim not in (matmul_p, outer_p):
        return None
    a, b = product.inputs
    if product.prim is outer_p:
        return (b, a), {}
    ta, tb = product.params["transpose_a"], product.params["transpose_b"]
    if not (ta or tb):  # would be A^T B^T
        return None
    return (b, a), {"transpose_a": not tb, "transpose_b": not ta}


def _fold_inputs(e: Eqn, source_of: dict) -> Eqn:
    inputs, params = list(e.inputs), dict(e.params)
    flags = e.prim.transpose_flags
    for k, flag in enumerate(flags):
        both = len(flags) == 2 and params[flags[1 - k]] and not params[flag]
        if id(inputs[k]) in source_of and not both:
            inputs[k], params[flag] = source_of[id(inputs[k])], not params[flag]
    return Eqn(e.prim, tuple(inputs), params, e.outputs, e.source)
