"""Lowering of reduce_max, reduce_min, logsumexp, argmax and argmin (core/reductions.py): for
each output element, folds over the reduced positions.

Input: a `Kernel` (codegen.py). Output: code that writes the reduced values.
Invariants: trailing reduced axes are one contiguous run per output element, folded by one loop
that vectorizes (max and min by `llvm.maximum` / `llvm.minimum`, which give nan if any element
is nan, as numpy); other axes are walked with strides by nested loops that carry the
accumulators. logsumexp shifts by the max where it is finite (so all -inf gives -inf, an inf
gives inf). argmax / argmin keep the first position of the best value, or of the first nan.
"""
from __future__ import annotations

import math

from llvmlite import ir

from .loops import for_range, loop_nest
from .scalar import emit_exp, emit_log, intrinsic

REDUCE = ("reassoc", "contract")


def _c(ty, value):
    return ir.Constant(ty, value)


def _fold_nest(b, counts, init, step, indices=()):
    """Nested loops over counts carrying values: step(values, indices) -> the next values."""
    if not counts:
        return step(init, indices)
    with for_range(b, counts[0], carry=init, name="f") as loop:
        loop.update(_fold_nest(b, counts[1:], loop.carried, step, (*indices, loop.index)))
    return loop.results


def _reduce(k, x, axes, finish) -> None:
    """For each output element (flat index `at`): finish(at, fold), where fold(init, step)
    folds the reduced positions with carried values, step(values, element, position) giving
    the next values (position: the element's row-major index among the reduced positions)."""
    b, t = k.b, x.type
    kept = [a for a in range(t.ndim) if a not in axes]
    if tuple(axes) == tuple(range(len(kept), t.ndim)):  # trailing: one contiguous run
        n = k.size([t.shape[a] for a in axes])
        with for_range(b, k.size([t.shape[a] for a in kept]), name="r") as row:
            base = b.mul(row.index, n)

            def fold(init, step):
                with for_range(b, n, carry=init, name="j") as loop:
                    element = x.load(b, b.add(base, loop.index))
                    loop.update(step(loop.carried, element, loop.index))
                return loop.results
            finish(row.index, fold)
        return
    reduced = [t.shape[a] for a in axes]
    with loop_nest(b, [k.dim(t.shape[a]) for a in kept], name="o") as outer:
        def strided(init, step):
            def at(values, inner):
                index = dict(zip(kept, outer, strict=True)) | dict(zip(axes, inner, strict=True))
                element = x.load(b, k.offset(t.shape, [index[a] for a in range(t.ndim)]))
                return step(values, element, k.offset(reduced, inner))
            return _fold_nest(b, [k.dim(d) for d in reduced], init, at)
        finish(k.offset([t.shape[a] for a in kept], outer), strided)


def _lower_extremum(k, intrinsic_name: str, start: float) -> None:
    b, (x,), (out,) = k.b, k.inputs, k.outputs

    def finish(at, fold):
        (value,) = fold([_c(k.ty, start)], lambda acc, v, _: [intrinsic(b, intrinsic_name,
                                                                         acc[0], v)])
        out.store(b, at, value)
    _reduce(k, x, k.params["axes"], finish)


def lower_reduce_max(k) -> None:
    _lower_extremum(k, "llvm.maximum", -math.inf)


def lower_reduce_min(k) -> None:
    _lower_extremum(k, "llvm.minimum", math.inf)


def lower_logsumexp(k) -> None:
    """m + log(sum(exp(x - m))), m the max where it is finite, else 0."""
    b, (x,), (out,), ty = k.b, k.inputs, k.outputs, k.ty

    def finish(at, fold):
        (m,) = fold([_c(ty, -math.inf)], lambda acc, v, _: [intrinsic(b, "llvm.maximum",
                                                                       acc[0], v)])
        finite = b.fcmp_ordered("==", b.fsub(m, m), _c(ty, 0.0))
        m = b.select(finite, m, _c(ty, 0.0))
        (total,) = fold([_c(ty, 0.0)], lambda acc, v, _: [
            b.fadd(acc[0], emit_exp(b, ty, b.fsub(v, m)), flags=REDUCE)])
        out.store(b, at, b.fadd(m, emit_log(b, ty, total)))
    _reduce(k, x, k.params["axes"], finish)


def _lower_arg(k, better: str, start: float) -> None:
    """The position of the first element that is `better` than all before it, or of the first
    nan (a nan beats every number, nothing beats a nan)."""
    b, (x,), (out,) = k.b, k.inputs, k.outputs
    axis = k.params["axis"]
    axes = tuple(range(x.type.ndim)) if axis is None else (axis,)

    def step(acc, v, position):
        best, index = acc
        wins = b.and_(b.fcmp_unordered(better, v, best), b.fcmp_ordered("ord", best, best))
        return [b.select(wins, v, best), b.select(wins, position, index)]

    def finish(at, fold):
        _, index = fold([_c(x.elt, start), _c(k.ty, 0)], step)
        out.store(b, at, index)
    _reduce(k, x, axes, finish)


def lower_argmax(k) -> None:
    _lower_arg(k, ">", -math.inf)


def lower_argmin(k) -> None:
    _lower_arg(k, "<", math.inf)
