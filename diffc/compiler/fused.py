"""Lowering of `fused` equations (passes/fuse.py): one loop nest whose body values live in
registers, or a GEMM whose epilogue finishes its results in vector registers.

Input: a `Kernel` (codegen.py) for a fused equation. Output: code that writes its outputs.
Invariant: the body's elementwise equations go through the same emitters (emitters.py) as
unfused ones, each in its own dtype (a body may convert between dtypes and hold masks), so
fusion changes where values live, not how they are computed.
"""
from __future__ import annotations

from llvmlite import ir

from ..core.ir import Lit
from ..core.linalg import matmul_p, outer_p
from ..core.structural import broadcast_in_dim_p
from .emitters import EMITTERS, value_type
from .gemm import Gemm, vector_type
from .gemm import run as run_gemm
from .loops import I64, for_range, loop_nest
from .shapes import INDEXED


def _c(ty, value):
    return ir.Constant(ty, value)


def lower_fused(k) -> None:
    """One loop nest over the group's shape (this part's elements, or outermost indices, if the
    kernel is split); body values live in registers, never in memory.

    Full-shape inputs are read at the current element, rank-0 inputs once; `broadcast_in_dim`,
    `outer` and the shape primitives (shapes.py's `INDEXED`) read their inputs at the mapped
    index.
    """
    b, body = k.b, k.params["body"]
    if body.eqns[0].prim is matmul_p:
        _gemm_with_epilogue(k)
        return
    shape = body.outputs[0].type.shape
    flat = not any(e.prim.indexed for e in body.eqns)
    operand = {id(v): op for v, op in zip(body.inputs, k.inputs, strict=True)}
    scalars = {id(v): operand[id(v)].load(b, _c(I64, 0)) for v in body.inputs if v.type.ndim == 0}
    nested = not flat and len(shape) > 0  # indexed reads need every index (a scalar: none)
    start, count = k.span(k.dim(shape[0]) if nested else k.size(shape))  # this part's (split.py)
    loop = (loop_nest(b, [count] + [k.dim(d) for d in shape[1:]]) if nested else
            for_range(b, count))
    with loop as it:
        if nested:
            it = (b.add(start, it[0]),) + it[1:]
            at = k.offset(shape, it)
        else:  # flat: one index; rank 0 (the one element): no indices
            at = b.add(start, it.index)
            it = at if shape else ()

        def indexed(e):
            if e.prim.name in INDEXED:  # shapes.py: slices, gathers, transposes
                return INDEXED[e.prim.name](k, e, it, operand)
            if e.prim is outer_p:
                x, y = e.inputs
                return b.fmul(operand[id(x)].load(b, it[0]), operand[id(y)].load(b, it[1]))
            x = e.inputs[0]  # broadcast_in_dim of an array
            src = k.offset(x.type.shape, [it[d] for d in e.params["broadcast_dimensions"]])
            return operand[id(x)].load(b, src)

        env = _emit_body(b, value_type, body.eqns, dict(scalars),
                         lambda a: operand[id(a)].load(b, at), indexed)
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
        lanes = value.type.count if isinstance(value.type, ir.VectorType) else 1

        def typed(dtype):  # a value of dtype as finished here: one lane or a vector
            return vector_type(value_type(dtype), lanes)

        def load(a):  # rank 0: the same in every lane; else C-shaped
            op, typ = operand[id(a)], typed(a.type.dtype)
            return gemm.splat(op.load(b, _c(I64, 0)), typ) if a.type.ndim == 0 else \
                gemm.load(op, flat, typ)

        def indexed(e):  # broadcast_in_dim of a row or column vector (or of C's shape)
            x, dims = e.inputs[0], e.params["broadcast_dimensions"]
            op, typ = operand[id(x)], typed(x.type.dtype)
            at = {(0,): None, (1,): j, (0, 1): flat}[dims]
            return gemm.splat(op.load(b, i), typ) if at is None else gemm.load(op, at, typ)

        env = _emit_body(b, typed, rest, {id(head.outputs[0]): value}, load, indexed)
        for v, out in outputs:
            gemm.store(out, i, j, env[id(v)])

    a, bm = (operand[id(x)] for x in head.inputs)
    gemm = Gemm(k, a, bm, head.params, head.outputs[0].type, finish)
    run_gemm(gemm)


def _emit_body(b, type_of, eqns, env: dict, load, indexed) -> dict:
    """The values of a fused body's equations at one element (or one vector of elements), in
    registers: `type_of(dtype)` is the LLVM type of a value of dtype there, `load(var)` reads an
    input, `indexed(eqn)` computes an equation that reads a smaller input at a mapped index.
    `env` holds the values known (var id -> value)."""
    def read(a):
        if isinstance(a, Lit):
            return ir.Constant(type_of(a.type.dtype), a.value)
        if id(a) not in env:
            env[id(a)] = load(a)
        return env[id(a)]

    for e in eqns:
        if e.prim is broadcast_in_dim_p and e.inputs[0].type.ndim == 0:
            result = read(e.inputs[0])  # of a scalar: the same value everywhere
        elif e.prim.indexed:
            result = indexed(e)
        else:
            result = EMITTERS[e.prim.name](b, type_of(e.outputs[0].type.dtype),
                                           *map(read, e.inputs), **e.params)
        env[id(e.outputs[0])] = result
    return env
