"""Lowering of each primitive to loops, one function per primitive, keyed by name in `KERNELS`.

Input: a `Kernel` (codegen.py): an IRBuilder inside the kernel's own function, the equation,
its operands and the symbolic dims. Output: code that writes the equation's outputs.
Invariants: arrays are dense row-major; pointer args are noalias, so an output written over an
input (an in-place update) comes as that input's one pointer (codegen.py); accumulations carry
`reassoc contract` so LLVM vectorizes them into packed FMAs. Matrix multiplication has its own
module, `gemm.py`.
"""
from __future__ import annotations

from contextlib import contextmanager
from types import SimpleNamespace

from llvmlite import ir

from . import reductions
from .emitters import EMITTERS
from .fused import lower_fused
from .gemm import full_vector, lower_matmul
from .loops import I64, for_range, loop_nest
from .scalar import emit_exp, emit_log, intrinsic
from .shapes import lower_concatenate, lower_gather, lower_scatter_add, lower_slice, lower_unslice

REDUCE = ("reassoc", "contract")


def _c(ty, value):
    return ir.Constant(ty, value)


def lower_elementwise(k) -> None:
    """out[i] = op(in0[i], in1[i], ...), rank-0 operands read once."""
    b, emit = k.b, EMITTERS[k.eqn.prim.name]
    scalars = {i: op.load(b, _c(I64, 0)) for i, op in enumerate(k.inputs) if op.type.ndim == 0}
    with for_range(b, k.size(k.outputs[0].type.shape)) as loop:
        args = [scalars[i] if i in scalars else op.load(b, loop.index)
                for i, op in enumerate(k.inputs)]
        k.outputs[0].store(b, loop.index, emit(b, k.ty, *args, **k.params))


def lower_copy(k) -> None:
    """A flat copy: reshape only changes the type, not the data order."""
    with for_range(k.b, k.size(k.outputs[0].type.shape)) as loop:
        k.outputs[0].store(k.b, loop.index, k.inputs[0].load(k.b, loop.index))


def lower_broadcast_in_dim(k) -> None:
    b, (x,), (out,) = k.b, k.inputs, k.outputs
    dims = k.params["broadcast_dimensions"]
    shape = out.type.shape
    with loop_nest(b, [k.dim(d) for d in shape]) as idx:
        src = k.offset(x.type.shape, [idx[d] for d in dims])
        out.store(b, k.offset(shape, idx), x.load(b, src))


def lower_transpose(k) -> None:
    b, (x,), (out,) = k.b, k.inputs, k.outputs
    perm = k.params["perm"]
    with loop_nest(b, [k.dim(d) for d in out.type.shape]) as idx:
        src_idx = [None] * len(perm)
        for j, p in enumerate(perm):
            src_idx[p] = idx[j]
        out.store(b, k.offset(out.type.shape, idx), x.load(b, k.offset(x.type.shape, src_idx)))


def lower_reduce_sum(k) -> None:
    b, (x,), (out,) = k.b, k.inputs, k.outputs
    axes, shape = k.params["axes"], x.type.shape
    if axes == tuple(range(len(shape) - len(axes), len(shape))):  # trailing axes: a dot per row
        n = k.size(shape[len(shape) - len(axes):])
        start, count = k.span(k.size(out.type.shape))
        with for_range(b, count, name="r") as r:
            row = b.add(start, r.index)
            base = b.mul(row, n)
            with for_range(b, n, carry=[_c(k.ty, 0.0)]) as loop:
                v = x.load(b, b.add(base, loop.index))
                loop.update([b.fadd(loop.carried[0], v, flags=REDUCE)])
            out.store(b, row, loop.results[0])
        return
    if axes == tuple(range(len(axes))):  # leading axes: out[j] += x[i, j], j in this part
        n = k.size(out.type.shape)
        start, count = k.span(n)
        with for_range(b, count) as j:
            out.store(b, b.add(start, j.index), _c(k.ty, 0.0))
        with for_range(b, k.size(shape[:len(axes)]), name="r") as r:
            base = b.add(b.mul(r.index, n), start)
            with for_range(b, count) as j:
                at = b.add(start, j.index)
                total = b.fadd(out.load(b, at), x.load(b, b.add(base, j.index)), flags=REDUCE)
                out.store(b, at, total)
        return
    k.zero(out)  # general case: accumulate into the output, innermost kept axes vectorize
    with loop_nest(b, [k.dim(d) for d in shape]) as idx:
        dst = k.offset(out.type.shape, [i for a, i in enumerate(idx) if a not in axes])
        total = b.fadd(out.load(b, dst), x.load(b, k.offset(shape, idx)), flags=REDUCE)
        out.store(b, dst, total)


def lower_fill(k) -> None:
    out = k.outputs[0]
    with for_range(k.b, k.size(out.type.shape)) as loop:
        out.store(k.b, loop.index, _c(k.ty, k.params["value"]))


def lower_dim_size(k) -> None:
    x, (out,) = k.inputs[0], k.outputs
    out.store(k.b, _c(I64, 0), k.b.sitofp(k.dim(x.type.shape[k.params["axis"]]), k.ty))


def _axpy(k, out, out_base, alpha, x_at, n):
    """out[out_base + j] += alpha * x_at(j) for j < n: vectorizes over j."""
    b = k.b
    with for_range(b, n, name="j") as loop:
        dst = b.add(out_base, loop.index)
        prod = b.fmul(alpha, x_at(loop.index), flags=REDUCE)
        out.store(b, dst, b.fadd(out.load(b, dst), prod, flags=REDUCE))


def vector_dot(b, elt, x_ptr, y_ptr, n, target):
    """sum_j x[j] * y[j] for contiguous x, y: 4 vector FMA accumulators, their sum, one vector
    at a time over the full vectors left, its lanes summed as a tree, then a scalar tail of
    fewer than one vector's elements.

    An explicit summation order (not LLVM's choice), so every kernel that uses it gets the
    same bits: `update_matvec` in `fit` must reproduce `matvec` exactly.
    """
    vec, unroll = full_vector(elt, target), 4
    width, itemsize = vec.count, 8 if isinstance(elt, ir.DoubleType) else 4
    step = width * unroll
    blocks = b.sdiv(n, _c(I64, step))

    def load(ptr, at, typ):
        return b.load(b.gep(ptr, [at], inbounds=True, source_etype=elt), typ=typ,
                      align=itemsize)

    with for_range(b, blocks, carry=[ir.Constant(vec, None)] * unroll, name="v") as loop:
        base = b.mul(loop.index, _c(I64, step))
        loop.update([intrinsic(b, "llvm.fma", load(x_ptr, at, vec), load(y_ptr, at, vec), acc)
                     for u, acc in enumerate(loop.carried)
                     for at in [b.add(base, _c(I64, u * width))]])
    a0, a1, a2, a3 = loop.results
    done = b.mul(blocks, _c(I64, step))
    vectors = b.sdiv(b.sub(n, done), _c(I64, width))
    with for_range(b, vectors, carry=[b.fadd(b.fadd(a0, a1), b.fadd(a2, a3))], name="w") as one:
        at = b.add(done, b.mul(one.index, _c(I64, width)))
        one.update([intrinsic(b, "llvm.fma", load(x_ptr, at, vec), load(y_ptr, at, vec),
                              one.carried[0])])
    done = b.add(done, b.mul(vectors, _c(I64, width)))
    with for_range(b, b.sub(n, done), carry=[_lane_sum(b, one.results[0])], name="t") as tail:
        at = b.add(done, tail.index)
        tail.update([intrinsic(b, "llvm.fma", load(x_ptr, at, elt), load(y_ptr, at, elt),
                               tail.carried[0])])
    return tail.results[0]


def _lane_sum(b, v):
    """v's lanes summed as a tree, upper half onto lower half: log2(width) adds in a fixed
    order (no reassociation flags, so LLVM keeps it)."""
    lanes = v.type.count
    while lanes > 1:
        lanes //= 2
        v = b.fadd(*[b.shuffle_vector(v, v, ir.Constant(ir.VectorType(ir.IntType(32), lanes),
                                                        list(range(first, first + lanes))))
                     for first in (0, lanes)])
    return b.extract_element(v, ir.Constant(ir.IntType(32), 0))


def lower_matvec(k) -> None:
    b, (a, x), (out,) = k.b, k.inputs, k.outputs
    rows, cols = (k.dim(d) for d in a.type.shape)
    if not k.params["transpose_a"]:  # y[i] = A[i, :] . x, for this part's rows
        start, count = k.span(rows)
        with for_range(b, count, name="i") as i:
            row = b.add(start, i.index)
            at = b.gep(a.ptr, [b.mul(row, cols)], inbounds=True, source_etype=k.ty)
            out.store(b, row, vector_dot(b, k.ty, at, x.ptr, cols, k.target))
        return
    start, count = k.span(cols)  # y = A^T x = sum over rows i of x[i] * A[i, :]: this part's
    with for_range(b, count, name="j") as j:  # columns of y, each summed over rows in order
        out.store(b, b.add(start, j.index), _c(k.ty, 0.0))
    with for_range(b, rows, name="i") as i:
        base = b.add(b.mul(i.index, cols), start)
        _axpy(k, out, start, x.load(b, i.index), lambda j: a.load(b, b.add(base, j)), count)


def _not_finite(k, x, n, rate):
    """Whether x[:n] or rate may hold an inf or nan: x . x + 0 * rate is not finite (also when
    x . x overflows: that only costs skipping rows). vector_dot: a plain reduction loop whose
    result decides a branch is not vectorized (LLVM freezes its accumulator)."""
    b = k.b
    total = b.fadd(vector_dot(b, k.ty, x.ptr, x.ptr, n, k.target), b.fmul(rate, _c(k.ty, 0.0)))
    return b.fcmp_unordered("!=", b.fsub(total, total), _c(k.ty, 0.0))


def _sgd_rows(k, w, a, x, lr, w_new, then=None) -> None:
    """Per row i (of this part): W[i, :] -= lr * (a[i] * x), skipped where that step is exactly
    zero: a[i] == 0 with x and lr finite (0 * inf is nan); then `then(i, row)` while the row is
    in L1 cache."""
    b = k.b
    rows, cols = (k.dim(d) for d in w.type.shape)
    rate = lr.load(b, _c(I64, 0))
    not_finite = _not_finite(k, x, cols, rate)
    in_place = w_new.ptr is w.ptr  # one pointer argument: W is updated in its own buffer
    start, count = k.span(rows)
    with for_range(b, count, name="i") as loop:
        index = b.add(start, loop.index)
        base = b.mul(index, cols)
        ai = a.load(b, index)
        nonzero = b.or_(b.fcmp_unordered("!=", ai, _c(k.ty, 0.0)), not_finite)
        with b.if_else(nonzero) as (update, keep):
            with update:
                with for_range(b, cols, name="j") as j:
                    at = b.add(base, j.index)
                    step = b.fmul(rate, b.fmul(ai, x.load(b, j.index)))
                    w_new.store(b, at, b.fsub(w.load(b, at), step))
            with keep:
                if not in_place:  # the row is unchanged, but it must reach the new buffer
                    with for_range(b, cols, name="j") as j:
                        at = b.add(base, j.index)
                        w_new.store(b, at, w.load(b, at))
        if then is not None:
            then(index, b.gep(w_new.ptr, [base], inbounds=True, source_etype=k.ty))


def lower_sgd_outer(k) -> None:
    _sgd_rows(k, *k.inputs, k.outputs[0])


def lower_update_matvec(k) -> None:
    """sgd_outer, then g[i] = W[i, :] . x_next for the next sample (one pass over W)."""
    (w, a, x, lr, x_next), (w_new, g) = k.inputs, k.outputs
    cols = k.dim(w.type.shape[1])
    _sgd_rows(k, w, a, x, lr, w_new, lambda i, row: g.store(
        k.b, i, vector_dot(k.b, k.ty, row, x_next.ptr, cols, k.target)))


def lower_outer(k) -> None:
    b, (x, y), (out,) = k.b, k.inputs, k.outputs
    m, n = (k.dim(d) for d in out.type.shape)
    with for_range(b, m, name="i") as i:
        xi, base = x.load(b, i.index), b.mul(i.index, n)
        with for_range(b, n, name="j") as j:
            out.store(b, b.add(base, j.index), b.fmul(xi, y.load(b, j.index)))


def _row_max(k, x, base, n):
    b = k.b
    first = x.load(b, base)
    with for_range(b, n, carry=[first], name="j") as loop:
        v = x.load(b, b.add(base, loop.index))
        loop.update([b.select(b.fcmp_ordered(">", v, loop.carried[0]), v, loop.carried[0])])
    return loop.results[0]


def _row_sum_exp(k, x, base, n, shift, store=None):
    """sum_j exp(x[base + j] - shift), optionally storing each exp into store[base + j]."""
    b = k.b
    with for_range(b, n, carry=[_c(k.ty, 0.0)], name="j") as loop:
        e = emit_exp(b, k.ty, b.fsub(x.load(b, b.add(base, loop.index)), shift))
        if store is not None:
            store.store(b, b.add(base, loop.index), e)
        loop.update([b.fadd(loop.carried[0], e, flags=REDUCE)])
    return loop.results[0]


def _rows(k, t):
    """A loop over the rows (all axes but the last) of an array of type t, this part's if the
    kernel is split (split.py): (the loop, whose `index` is the row, and the row length)."""
    start, count = k.span(k.size(t.shape[:-1]))
    return _from(k.b, start, count), k.dim(t.shape[-1])


@contextmanager
def _from(b, start, count):
    """for index in range(start, start + count)."""
    with for_range(b, count, name="r") as loop:
        yield SimpleNamespace(index=b.add(start, loop.index))


def lower_softmax(k) -> None:
    b, (x,), (out,) = k.b, k.inputs, k.outputs
    rows, n = _rows(k, x.type)
    with rows as r:
        base = b.mul(r.index, n)
        total = _row_sum_exp(k, x, base, n, _row_max(k, x, base, n), store=out)
        scale = b.fdiv(_c(k.ty, 1.0), total)
        with for_range(b, n, name="j") as j:
            at = b.add(base, j.index)
            out.store(b, at, b.fmul(out.load(b, at), scale))


def lower_log_softmax(k) -> None:
    b, (x,), (out,) = k.b, k.inputs, k.outputs
    rows, n = _rows(k, x.type)
    with rows as r:
        base = b.mul(r.index, n)
        m = _row_max(k, x, base, n)
        log_total = emit_log(b, k.ty, _row_sum_exp(k, x, base, n, m))
        with for_range(b, n, name="j") as j:  # (x - m) - log_total: m + log_total may round
            at = b.add(base, j.index)  # log_total away (m = 1e30)
            out.store(b, at, b.fsub(b.fsub(x.load(b, at), m), log_total))


def _label(k, y, row):
    value = y.load(k.b, row)
    return k.b.sext(value, I64) if value.type.width < 64 else value


def lower_pick(k) -> None:
    b, (p, y), (out,) = k.b, k.inputs, k.outputs
    rows, n = _rows(k, p.type)
    with rows as r:
        out.store(b, r.index, p.load(b, b.add(b.mul(r.index, n), _label(k, y, r.index))))


def lower_unpick(k) -> None:
    b, (g, y), (out,) = k.b, k.inputs, k.outputs
    k.zero(out)
    rows, n = _rows(k, out.type)
    with rows as r:
        out.store(b, b.add(b.mul(r.index, n), _label(k, y, r.index)), g.load(b, r.index))


def lower_softmax_cross_entropy(k) -> None:
    """loss = sum(y * (m - z)) + sum(y) * log_total, or (m - z[label]) + log_total, per row,
    with m = max(z) and log_total = log(sum(exp(z - m))): -sum(y * log_softmax(z)) without
    forming m + log_total, which may round log_total away (m = 1e30)."""
    b, (z, y), (out,) = k.b, k.inputs, k.outputs
    rows, n = _rows(k, z.type)
    with rows as r:
        base = b.mul(r.index, n)
        m = _row_max(k, z, base, n)
        log_total = emit_log(b, k.ty, _row_sum_exp(k, z, base, n, m))
        if y.type.dtype.is_float:
            zero = _c(k.ty, 0.0)
            with for_range(b, n, carry=[zero, zero], name="j") as loop:
                at = b.add(base, loop.index)
                yj = y.load(b, at)
                sy, sym = loop.carried
                gap = b.fsub(m, z.load(b, at))
                loop.update([b.fadd(sy, yj, flags=REDUCE),
                             b.fadd(sym, b.fmul(yj, gap, flags=REDUCE), flags=REDUCE)])
            sy, sym = loop.results
            loss = b.fadd(sym, b.fmul(sy, log_total))
        else:
            loss = b.fadd(b.fsub(m, z.load(b, b.add(base, _label(k, y, r.index)))), log_total)
        out.store(b, r.index, loss)


def lower_softmax_cross_entropy_grad(k) -> None:
    """dz = g * (softmax(z) * sum(y) - y), or g * (softmax(z) - [j == label]); per row."""
    b, (z, y, g), (out,) = k.b, k.inputs, k.outputs
    rows, n = _rows(k, z.type)
    with rows as r:
        base = b.mul(r.index, n)
        total = _row_sum_exp(k, z, base, n, _row_max(k, z, base, n), store=out)
        gr = g.load(b, r.index)
        if y.type.dtype.is_float:
            with for_range(b, n, carry=[_c(k.ty, 0.0)], name="j") as loop:
                loop.update([b.fadd(loop.carried[0], y.load(b, b.add(base, loop.index)),
                                    flags=REDUCE)])
            scale = b.fdiv(b.fmul(gr, loop.results[0]), total)
            with for_range(b, n, name="j") as j:
                at = b.add(base, j.index)
                out.store(b, at, b.fsub(b.fmul(out.load(b, at), scale),
                                        b.fmul(gr, y.load(b, at))))
        else:
            scale = b.fdiv(gr, total)
            with for_range(b, n, name="j") as j:
                at = b.add(base, j.index)
                out.store(b, at, b.fmul(out.load(b, at), scale))
            at = b.add(base, _label(k, y, r.index))
            out.store(b, at, b.fsub(out.load(b, at), gr))


KERNELS = {
    "broadcast_in_dim": lower_broadcast_in_dim,
    "reshape": lower_copy,
    "transpose": lower_transpose,
    "reduce_sum": lower_reduce_sum,
    "dim_size": lower_dim_size,
    "fill": lower_fill,
    "outer": lower_outer,
    "update_matvec": lower_update_matvec,
    "sgd_outer": lower_sgd_outer,
    "unpick": lower_unpick,
    "softmax_cross_entropy_grad": lower_softmax_cross_entropy_grad,
    "fused": lower_fused,
    "matvec": lower_matvec,
    "matmul": lower_matmul,  # gemm.py
    "softmax": lower_softmax,
    "log_softmax": lower_log_softmax,
    "pick": lower_pick,
    "softmax_cross_entropy": lower_softmax_cross_entropy,
    # shapes.py
    "slice": lower_slice,
    "unslice": lower_unslice,
    "concatenate": lower_concatenate,
    "gather": lower_gather,
    "scatter_add": lower_scatter_add,
    # reductions.py
    "reduce_max": reductions.lower_reduce_max,
    "reduce_min": reductions.lower_reduce_min,
    "logsumexp": reductions.lower_logsumexp,
    "argmax": reductions.lower_argmax,
    "argmin": reductions.lower_argmin,
}
