"""Lowering of the shape primitives (core/shapes.py): slice, unslice, concatenate, gather,
scatter_add; and, for the fusible ones (slice, unslice, gather and structural.py's transpose),
their value at one element of a fused loop nest (`INDEXED`, used by fused.py).

Input: a `Kernel` (codegen.py). Output: code that writes the equation's outputs, or (INDEXED)
the value at the loop nest's indices `it` of the equation's output.
Invariants: every load is in bounds: index arrays were range-checked before the call
(runtime/call.py), constant indices into symbolic dims too, and unslice reads its input at a
clamped index where it writes zero. The innermost loop runs along the last axis, contiguous in
the output (and in the input for gather and scatter_add, which move whole rows).
"""
from __future__ import annotations

from llvmlite import ir

from .loops import I64, loop_nest


def _c(value):
    return ir.Constant(I64, value)


def _start(k, n, first):
    """A slice's first index on an axis of size n: negative counts from the end."""
    return _c(first) if first >= 0 else k.b.add(k.dim(n), _c(first))


def _slice_source(k, shape, start, step, it) -> list:
    """The input indices a slice of an array of `shape` reads at output indices `it`."""
    b, kept, idx = k.b, iter(it), []
    for n, first, st in zip(shape, start, step, strict=True):
        base = _start(k, n, first)
        idx.append(base if st == 0 else b.add(base, b.mul(next(kept), _c(st))))
    return idx


def _label(k, idx, at):
    value = idx.load(k.b, at)
    return k.b.sext(value, I64) if value.type.width < 64 else value


def _gathered(k, idx, axis, it) -> list:
    """The indices into x that gather along `axis` reads at output indices `it`."""
    rank = idx.type.ndim
    label = _label(k, idx, k.offset(idx.type.shape, it[axis:axis + rank]))
    return list(it[:axis]) + [label] + list(it[axis + rank:])


def lower_slice(k) -> None:
    b, (x,), (out,) = k.b, k.inputs, k.outputs
    shape = out.type.shape
    with loop_nest(b, [k.dim(d) for d in shape]) as it:
        src = _slice_source(k, x.type.shape, k.params["start"], k.params["step"], it)
        out.store(b, k.offset(shape, it), x.load(b, k.offset(x.type.shape, src)))


def lower_unslice(k) -> None:
    b, (g,), (out,) = k.b, k.inputs, k.outputs
    k.zero(out)
    with loop_nest(b, [k.dim(d) for d in g.type.shape]) as it:
        dst = _slice_source(k, out.type.shape, k.params["start"], k.params["step"], it)
        out.store(b, k.offset(out.type.shape, dst), g.load(b, k.offset(g.type.shape, it)))


def lower_concatenate(k) -> None:
    b, (out,), axis = k.b, k.outputs, k.params["axis"]
    offset = 0
    for x in k.inputs:
        with loop_nest(b, [k.dim(d) for d in x.type.shape]) as it:
            dst = [b.add(i, _c(offset)) if a == axis else i for a, i in enumerate(it)]
            out.store(b, k.offset(out.type.shape, dst), x.load(b, k.offset(x.type.shape, it)))
        offset += x.type.shape[axis]


def lower_gather(k) -> None:
    b, (x, idx), (out,) = k.b, k.inputs, k.outputs
    shape = out.type.shape
    with loop_nest(b, [k.dim(d) for d in shape]) as it:
        src = _gathered(k, idx, k.params["axis"], it)
        out.store(b, k.offset(shape, it), x.load(b, k.offset(x.type.shape, src)))


def lower_scatter_add(k) -> None:
    b, (g, idx), (out,) = k.b, k.inputs, k.outputs
    k.zero(out)
    with loop_nest(b, [k.dim(d) for d in g.type.shape]) as it:
        dst = k.offset(out.type.shape, _gathered(k, idx, k.params["axis"], it))
        total = b.fadd(out.load(b, dst), g.load(b, k.offset(g.type.shape, it)))
        out.store(b, dst, total)


# ----------------------------------------------------------------------------- in fused loops

def read_slice(k, e, it, operand):
    x = e.inputs[0]
    src = _slice_source(k, x.type.shape, e.params["start"], e.params["step"], it)
    return operand[id(x)].load(k.b, k.offset(x.type.shape, src))


def read_unslice(k, e, it, operand):
    """g at the index the output index `it` came from, or zero where no element of g lands."""
    b, g = k.b, e.inputs[0]
    hit, src, sizes = ir.Constant(ir.IntType(1), 1), [], iter(g.type.shape)
    for j, n, first, st in zip(it, e.params["shape"], e.params["start"], e.params["step"],
                               strict=True):
        gap = b.sub(j, _start(k, n, first))
        if st == 0:
            hit = b.and_(hit, b.icmp_signed("==", gap, _c(0)))
            continue
        at = b.sdiv(gap, _c(st))
        exact = b.icmp_signed("==", b.srem(gap, _c(st)), _c(0))
        inside = b.and_(b.icmp_signed(">=", at, _c(0)),
                        b.icmp_signed("<", at, k.dim(next(sizes))))
        hit = b.and_(hit, b.and_(exact, inside))
        src.append(at)
    safe = [b.select(hit, i, _c(0)) for i in src]
    value = operand[id(g)].load(b, k.offset(g.type.shape, safe))
    return b.select(hit, value, ir.Constant(value.type, 0.0))


def read_transpose(k, e, it, operand):
    x, src = e.inputs[0], [None] * len(it)
    for j, p in enumerate(e.params["perm"]):
        src[p] = it[j]
    return operand[id(x)].load(k.b, k.offset(x.type.shape, src))


def read_gather(k, e, it, operand):
    x, idx = e.inputs
    src = _gathered(k, operand[id(idx)], e.params["axis"], it)
    return operand[id(x)].load(k.b, k.offset(x.type.shape, src))


INDEXED = {"slice": read_slice, "unslice": read_unslice, "gather": read_gather,
           "transpose": read_transpose}
