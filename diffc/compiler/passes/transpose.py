"""Transposes folded into matrix products, so that no matrix is copied only to be transposed.

`matmul` carries transpose flags and the gemm kernels read either layout, so a separate
`transpose` equation would only copy a matrix. One forward walk, two rewrites:
- a 2-D transpose of a matmul's result that nothing else reads becomes the product the other
  way round, `(op(a) op(b))^T = op'(b) op'(a)` with both flags flipped (the gradient of a
  weight used as `X @ W.T` in user code comes out transposed);
- a matmul input produced by a 2-D transpose is replaced by that transpose's input, the
  matching flag flipped (`X @ W.T` itself).
`dce` then drops what nothing reads any more. No rewrite makes an A^T B^T matmul (it has no
vector kernel, gemm.py): of two transposed inputs the first is folded, the second keeps its copy.
"""
from __future__ import annotations

from collections import Counter

from ...ir import Eqn, Program

FLAGS = ("transpose_a", "transpose_b")


def fold_transposes(program: Program) -> Program:
    producer = {}  # var -> the (rewritten) equation that computes it
    uses = Counter(id(a) for e in program.eqns for a in e.inputs)
    uses.update(id(a) for a in (*program.outputs, *(v for _, v in program.updates)))
    source_of = {}  # output of a transpose that stays -> its input
    eqns = []
    for e in program.eqns:
        if _is_transpose(e):
            product = producer.get(id(e.inputs[0]))
            if product is not None and product.prim.name == "matmul" and \
                    uses[id(e.inputs[0])] == 1 and any(product.params[f] for f in FLAGS):
                a, b = product.inputs
                params = {"transpose_a": not product.params["transpose_b"],
                          "transpose_b": not product.params["transpose_a"]}
                e = Eqn(product.prim, (b, a), params, e.outputs, e.source)
            else:
                source_of[id(e.outputs[0])] = e.inputs[0]
        if e.prim.name == "matmul" and any(id(a) in source_of for a in e.inputs):
            inputs, params = list(e.inputs), dict(e.params)
            for k, flag in enumerate(FLAGS):
                other = params[FLAGS[1 - k]]
                if id(inputs[k]) in source_of and not (other and not params[flag]):
                    inputs[k], params[flag] = source_of[id(inputs[k])], not params[flag]
            e = Eqn(e.prim, tuple(inputs), params, e.outputs, e.source)
        eqns.append(e)
        producer.update((id(v), e) for v in e.outputs)
    return Program(program.inputs, eqns, program.outputs, program.updates)


def _is_transpose(e: Eqn) -> bool:
    return e.prim.name == "transpose" and e.params["perm"] == (1, 0)
