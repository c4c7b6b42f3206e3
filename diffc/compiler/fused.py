"""Lowering of `fused` equations (passes/fuse.py): one loop nest whose body values live in
registers, or a GEMM whose epilogue finishes its results in vector registers.

Input: a `Kernel` (codegen.py) for a fused equation. Output: code that writes its outputs.
Invariant: the body's elementwise equations go through the same emitters (scalar.py) as
unfused ones, so fusion changes where values live, not how they are computed.
"""
from __future__ import annotations

from llvmlite import ir

from ..core.ir import Lit
from ..core.linalg import matmul_p, outer_p
from ..core.structural import broadcast_in_dim_p
from .gemm import Gemm
from .gemm import run as run_gemm
from .loops import I64, for_range, loop_nest
from .scalar import EMITTERS


def _c(ty, value):
    return ir.Constant(ty, value)


def lower_fused(k) -> None:
    """One loop nest over the group's shape (this part's elements, or outermost indices, if the
    kernel is split); body values live in registers, never in memory.

    Full-shape inputs are read at the current element, rank-0 inputs once; `broadcast_in_dim`
    and `outer` read their (smaller) inputs at the mapped index.
    """
    b, body = k.b, k.params["body"]
    if body.eqns[0].prim is matmul_p:
        _gemm_with_epilogue(k)
        return
    shape = body.outputs[0].type.shape
    flat = not any(e.prim.indexed for e in body.eqns)
    operand = {id(v): op for v, op in zip(body.inputs, k.inputs, strict=True)}
    scalars = {id(v): operand[id(v)].load(b, _c(I64, 0)) for v in body.inputs if v.type.ndim == 0}
    start, count = k.span(k.size(shape) if flat else k.dim(shape[0]))  # this part's (split.py)
    loop = for_range(b, count) if flat else loop_nest(b, [count] + [k.dim(d) for d in shape[1:]])
    with loop as it:
        it = b.add(start, it.index) if flat else (b.add(start, it[0]),) + it[1:]
        at = it if flat else k.offset(shape, it)

        def indexed(e):
            if e.prim is outer_p:
                x, y = e.inputs
                return b.fmul(operand[id(x)].load(b, it[0]), operand[id(y)].load(b, it[1]))
            x = e.inputs[0]  # broadcast_in_dim of an array
            src = k.offset(x.type.shape, [it[d] for d in e.params["broadcast_dimensions"]])
            return operand[id(x)].load(b, src)

        env = _emit_body(b, k.ty, body.eqns, dict(scalars), lambda a: operand[id(a)].load(b, at),
                         indexed)
        for v, out in zip(body.outputs, k.outputs, strict=True):
            out.store(b, at, env[id(v)])


def _gemm_with_epilogue(k) -> None:
    """A matmul whose results the rest of the fused body (`epilogue` primitives) finishes in
    registers, one value of C at a time: a vector of a row's columns, or a scalar (gemm.py's
    `finish`)."""
    b, body = k.b, k.params["body"]
    head, rest = body.eqns[0], body.eqns[1:]
    operand = {id(v): op for v, op in zip(body.inputs, k.inputs, strict=True)}
    outputs = list(zip(body.outputs, k.outputs, strict=True))

    def finish(i, j, value):
        flat = b.add(b.mul(i, gemm.n), j)

        def load(a):  # rank 0: the same in every lane; else C-shaped
            op = operand[id(a)]
            return gemm.splat(op.load(b, _c(I64, 0)), value.type) if a.type.ndim == 0 else \
                gemm.load(op, flat, value.type)

        def indexed(e):  # broadcast_in_dim of a row or column vector (or of C's shape)
            x, dims = e.inputs[0], e.params["broadcast_dimensions"]
            at = {(0,): None, (1,): j, (0, 1): flat}[dims]
            return gemm.splat(operand[id(x)].load(b, i), value.type) if at is None else \
                gemm.load(operand[id(x)], at, value.type)

        env = _emit_body(b, value.type, rest, {id(head.outputs[0]): value}, load, indexed)
        for v, out in outputs:
            gemm.store(out, i, j, env[id(v)])

    a, bm = (operand[id(x)] for x in head.inputs)
    gemm = Gemm(k, a, bm, head.params, head.outputs[0].type, finish)
    run_gemm(gemm)


def _emit_body(b, ty, eqns, env: dict, load, indexed) -> dict:
    """The values of a fused body's equations at one element (or one vector of elements), in
    registers: `load(var)` reads an input there, `indexed(eqn)` computes an equation that reads
    a smaller input at a mapped index. `env` holds the values known (var id -> value)."""
    def read(a):
        if isinstance(a, Lit):
            return ir.Constant(ty, a.value)
        if id(a) not in env:
            env[id(a)] = load(a)
        return env[id(a)]

    for e in eqns:
        if e.prim.indexed and e.inputs[0].type.ndim > 0:
            result = indexed(e)
        elif e.prim is broadcast_in_dim_p:  # of a scalar: the same value everywhere
            result = read(e.inputs[0])
        else:
            result = EMITTERS[e.prim.name](b, ty, *map(read, e.inputs), **e.params)
        env[id(e.outputs[0])] = result
    return env
