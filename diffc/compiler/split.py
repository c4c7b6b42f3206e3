"""Kernels that run in parts on the worker pool: which loop each one divides, and how.

Input: an equation (as compiled) and the `Target`. Output: its `Split`, or None for a kernel
that always runs whole (codegen.py calls a split kernel's parts through the program's parallel
hook, compiler/pool.py runs them). A split kernel's loop over range(extent) is cut into `parts`
runs of whole `unit`s, the remainder (extent % unit) going to the last part: part p covers units
[p * units // parts, (p + 1) * units // parts). What gets split: matrix products (C's rows, or
its columns when the rows are a symbolic batch dim: each thread then owns the same weight rows
in the forward product and in the update), elementwise loops (whole vectors of elements, or
rows of a loop nest), the row kernels (rows), reductions over leading axes (output columns: a
reduction's order never changes), matvec (rows; A^T x: output columns) and the row-wise SGD
updates (rows of W).
Invariants: the number of parts is a function of the sizes only, never of the thread count, and
a part runs the same code on whichever thread runs it, so results are bit-identical for every
number of threads; parts write disjoint outputs and read no other part's outputs.
`work` estimates the kernel's multiply-adds: the pool runs smaller regions inline
(DIFFC_PARALLEL_MIN_WORK), parts hold about PART_WORK each (so small kernels have one part and
never reach the pool), and the number of parts is a power of two (`count_parts`), so that 2,
4, ... threads get equal blocks of them.
"""
from __future__ import annotations

from dataclasses import dataclass

from llvmlite import ir

from ..core.types import Dim
from .gemm import blocks, tile_kind
from .loops import I64
from .target import Target

# the work of a part: each part costs a claim, a cache line that moves between cores, and its
# own setup. Measured on 2 threads, parts alternating in one process for 60 s, W1 f64 `fit` (the
# 128x784 fused update + matvec, ~200k multiply-adds) took a median 8.23 us per sample in 2
# parts, 8.30 in 4, 8.58 in 8; the per-sample step's 128x784 matvec and update (~100k each)
# gain in 2 parts: a step() call took 24.1 us on 1 thread, 17.9 on 2 (in 1 part: 25.3, 25.1).
PART_WORK = 65536
MAX_PARTS = 16  # enough for load balance on a few cores; each part costs a claim
VECTOR_UNIT = 64  # elements per unit of an elementwise loop: whole vectors, unrolled


def _c(value):
    return ir.Constant(I64, value)


@dataclass(frozen=True)
class Split:
    """A kernel's loop over range(prod(extent)) in parts of whole units; `axis` says which loop
    where a kernel has several (a matrix product: 0 for C's rows, 1 for its columns)."""

    extent: tuple[Dim, ...]
    unit: int
    work: tuple[Dim, ...]  # whose product, times `cost`, is the work
    cost: int = 1
    axis: int = 0

    def units(self, b, dim):
        """The number of whole units (`dim` maps a dim to its i64 value)."""
        return b.udiv(_product(b, dim, self.extent), _c(self.unit))

    def work_value(self, b, dim):
        return b.mul(_product(b, dim, self.work), _c(self.cost))

    def parts(self, b, dim):
        return count_parts(b, self.units(b, dim), self.work_value(b, dim))

    def span(self, b, dim, part, parts):
        """(first unit, end unit, whether it is the last part) of part `part` of `parts`."""
        units = self.units(b, dim)
        first = b.udiv(b.mul(part, units), parts)
        end = b.udiv(b.mul(b.add(part, _c(1)), units), parts)
        return first, end, b.icmp_unsigned("==", b.add(part, _c(1)), parts)


def count_parts(b, units, work):
    """The power of two at most min(units, work / PART_WORK rounded, MAX_PARTS), at least 1:
    equal blocks of parts for 2, 4, ... threads (an odd count would leave one thread a part
    more); rounded, so that 1.5 PART_WORK already makes two parts (~100k: 2, ~200k: 2)."""
    rounded = b.udiv(b.add(work, _c(PART_WORK // 2)), _c(PART_WORK))
    parts = _min(b, _min(b, units, rounded), _c(MAX_PARTS))
    parts = b.select(b.icmp_signed("<", parts, _c(1)), _c(1), parts)
    return b.shl(_c(1), b.sub(_c(63), b.ctlz(parts, ir.Constant(ir.IntType(1), 1))))


def split_of(eqn, target: Target) -> Split | None:
    """The Split of an equation's kernel, or None."""
    rule = SPLITS.get(eqn.prim.name)
    return None if rule is None else rule(eqn, target)


def _product(b, dim, dims):
    total = _c(1)
    for d in dims:
        total = b.mul(total, dim(d))
    return total


def _min(b, x, y):
    return b.select(b.icmp_signed("<", x, y), x, y)


def _gemm(a, bt, params, out, target) -> Split:
    """C's rows in main tiles, or its columns when the rows are a symbolic (batch) dim and the
    columns hold a few main tiles: then every part reads a slice of the weights, the same slice
    in the forward product as in the weight update (whose rows are the weights')."""
    kind = tile_kind(params["transpose_a"], params["transpose_b"])
    mr, nr = blocks(target)[kind] if kind else (1, 1)
    lanes = target.lanes(out.dtype.itemsize) if kind == "axpy" else 1
    (m, n), depth = out.shape, a.shape[0] if params["transpose_a"] else a.shape[1]
    if isinstance(m, str) and isinstance(n, int) and n // (nr * lanes) >= 4:
        return Split((n,), nr * lanes, (m, n, depth), axis=1)
    return Split((m,), mr, (m, n, depth))


def _rows(eqn, target, cost=1) -> Split:
    """Rows of the first output: all axes but the last."""
    shape = eqn.inputs[0].type.shape
    return Split(shape[:-1], 1, shape, cost)


def _matvec(eqn, target) -> Split:
    rows, cols = eqn.inputs[0].type.shape
    if eqn.params["transpose_a"]:  # y = A^T x: y's elements, each summed over rows in order
        return Split((cols,), VECTOR_UNIT, (rows, cols))
    return Split((rows,), 1, (rows, cols))


def _sgd(eqn, target) -> Split:
    w = eqn.inputs[0].type
    return Split(w.shape[:1], 1, w.shape, 2 if eqn.prim.name == "update_matvec" else 1)


def _fused(eqn, target) -> Split:
    body = eqn.params["body"]
    if body.eqns[0].prim.name == "matmul":
        head = body.eqns[0]
        return _gemm(*(a.type for a in head.inputs), head.params, head.outputs[0].type, target)
    shape = body.outputs[0].type.shape
    if any(e.prim.indexed for e in body.eqns):  # a loop nest: its outermost loop
        return Split(shape[:1], 1, shape, len(body.eqns))
    return Split(shape, VECTOR_UNIT, shape, len(body.eqns))


def _matmul(eqn, target) -> Split:
    return _gemm(*(a.type for a in eqn.inputs), eqn.params, eqn.outputs[0].type, target)


def _reduce_sum(eqn, target) -> Split | None:
    shape, axes = eqn.inputs[0].type.shape, eqn.params["axes"]
    kept = shape[len(axes):]
    if axes == tuple(range(len(axes))) and kept:  # leading axes: the output's elements
        return Split(kept, VECTOR_UNIT, shape)
    if axes == tuple(range(len(shape) - len(axes), len(shape))) and len(axes) < len(shape):
        return Split(shape[:len(shape) - len(axes)], 1, shape)  # trailing axes: rows
    return None


SPLITS = {
    "matmul": _matmul,
    "fused": _fused,
    "matvec": _matvec,
    "sgd_outer": _sgd,
    "update_matvec": _sgd,
    "reduce_sum": _reduce_sum,
    "softmax": lambda e, t: _rows(e, t, 16),
    "log_softmax": lambda e, t: _rows(e, t, 16),
    "softmax_cross_entropy": lambda e, t: _rows(e, t, 16),
    "softmax_cross_entropy_grad": lambda e, t: _rows(e, t, 16),
}
