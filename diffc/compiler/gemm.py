"""Matrix multiplication: register-blocked micro-kernels with explicit vector FMAs.

Input: a `Kernel` for `matmul[transpose_a, transpose_b] A B` writing C = op(A) op(B), row-major.
Two micro-kernels, chosen by which operand is contiguous along the reduction:
- "axpy" (B not transposed: rows of B are contiguous along C's columns): a block of MR rows by
  NR vectors of C lives in registers while the reduction index p runs; each step loads NR
  vectors of B's row p, broadcasts MR entries of op(A)'s column p and issues MR*NR FMAs.
- "dot" (B transposed, A not: both contiguous along p): a block of MR x NR dot products, each a
  vector accumulator along p, summed across lanes at the end.
Rows and columns that do not fill a block, and the A^T B^T case, take a plain scalar loop.
Each finished value of C (a vector of a row's columns, or a scalar) goes through `finish`: a
plain matmul stores it; a fused one (kernels.lower_fused) applies its epilogue first.
Invariants: C is written exactly once per element; vector loads are unaligned-safe (element
alignment); accumulations use FMA (`llvm.fma`), so results equal the scalar loop's up to
rounding order.
"""
from __future__ import annotations

from contextlib import contextmanager

from llvmlite import ir

from .loops import I64, for_range
from .scalar import intrinsic

REDUCE = ("reassoc", "contract")
VECTOR_BYTES = 32  # AVX2: <8 x float>, <4 x double>
AXPY_BLOCK = (4, 2)  # rows of C, vectors of C's columns: 8 accumulators
DOT_BLOCK = (2, 4)  # rows of A, rows of B: 8 accumulators


def _c(value):
    return ir.Constant(I64, value)


def vector_type(elt) -> ir.VectorType:
    """The widest vector of elt the target's registers hold."""
    return ir.VectorType(elt, VECTOR_BYTES // (8 if isinstance(elt, ir.DoubleType) else 4))


class Gemm:
    """Shared state of one matmul kernel: sizes, element and vector types, operand access."""

    def __init__(self, k, a, b, params, out_type, finish=None):
        self.k, self.b = k, k.b
        self.A, self.B = a, b
        self.ta, self.tb = params["transpose_a"], params["transpose_b"]
        self.out_shape = out_type.shape
        self.m, self.n = (k.dim(d) for d in out_type.shape)
        self.depth = k.dim(a.type.shape[0] if self.ta else a.type.shape[1])
        self.elt = k.ty
        self.itemsize = out_type.dtype.itemsize
        self.vec = vector_type(self.elt)
        self.width = self.vec.count
        self.finish = finish or (lambda i, j, value: self.store(k.outputs[0], i, j, value))

    def a_index(self, i, p):  # flat index of op(A)[i, p]
        b = self.b
        return b.add(b.mul(p, self.m), i) if self.ta else b.add(b.mul(i, self.depth), p)

    def b_index(self, p, j):  # flat index of op(B)[p, j]
        b = self.b
        return b.add(b.mul(j, self.depth), p) if self.tb else b.add(b.mul(p, self.n), j)

    def load(self, operand, index, vector: bool):
        """operand[index], or the vector starting there."""
        if not vector:
            return operand.load(self.b, index)
        ptr = self.b.gep(operand.ptr, [index], inbounds=True, source_etype=self.elt)
        return self.b.load(ptr, typ=self.vec, align=self.itemsize)

    def store(self, operand, i, j, value) -> None:
        """C-shaped operand[i, j] = value (a scalar, or a vector of columns j, j+1, ...)."""
        index = self.b.add(self.b.mul(i, self.n), j)
        if not isinstance(value.type, ir.VectorType):
            operand.store(self.b, index, value)
            return
        ptr = self.b.gep(operand.ptr, [index], inbounds=True, source_etype=self.elt)
        self.b.store(value, ptr, align=self.itemsize)

    def splat(self, scalar):
        """A vector with every lane equal to scalar."""
        b = self.b
        one = b.insert_element(ir.Constant(self.vec, ir.Undefined), scalar, _c(0))
        return b.shuffle_vector(one, ir.Constant(self.vec, ir.Undefined),
                                ir.Constant(ir.VectorType(ir.IntType(32), self.width), None))

    def blocks(self, size, block):
        """The number of whole blocks in size, and where the tail starts."""
        count = self.b.sdiv(size, _c(block))
        return count, self.b.mul(count, _c(block))

    def rows_outer(self, rows_per_block: int, cols_per_block: int) -> bool:
        """Whether to loop over row blocks outside column blocks: the inner loop re-reads the
        other operand once per outer block, so stream whichever costs fewer bytes."""
        m, n = (_guess(d) for d in self.out_shape)
        depth = _guess(self.A.type.shape[0] if self.ta else self.A.type.shape[1])
        return m / rows_per_block * depth * n <= n / cols_per_block * depth * m

    @contextmanager
    def block_loops(self, row_blocks, col_blocks, rows_outer: bool):
        """Nested loops over (row block, column block) in the chosen order."""
        first, second = (row_blocks, col_blocks) if rows_outer else (col_blocks, row_blocks)
        with for_range(self.b, first, name="ob") as outer, \
                for_range(self.b, second, name="ib") as inner:
            yield (outer.index, inner.index) if rows_outer else (inner.index, outer.index)


def _guess(d) -> int:
    return d if isinstance(d, int) else 64  # a symbolic dim: typically a batch


def lower_matmul(k) -> None:
    run(Gemm(k, *k.inputs, k.params, k.outputs[0].type))


def run(g: Gemm) -> None:
    """Compute every element of C once, handing each finished value to g.finish."""
    if not g.tb:
        rows_done, cols_done = _axpy_blocks(g)
    elif not g.ta:
        rows_done, cols_done = _dot_blocks(g)
    else:
        rows_done, cols_done = _c(0), _c(0)
    _scalar(g, rows_done, g.m, _c(0), g.n)  # the rows no block covered, all columns
    _scalar(g, _c(0), rows_done, cols_done, g.n)  # the columns no block covered


def _axpy_blocks(g: Gemm):
    b, (mr, nr) = g.b, AXPY_BLOCK
    row_blocks, rows_done = g.blocks(g.m, mr)
    col_blocks, cols_done = g.blocks(g.n, nr * g.width)
    zero = ir.Constant(g.vec, None)
    with g.block_loops(row_blocks, col_blocks, g.rows_outer(mr, nr * g.width)) as (ib, jb):
        i0, j0 = b.mul(ib, _c(mr)), b.mul(jb, _c(nr * g.width))
        with for_range(b, g.depth, carry=[zero] * (mr * nr), name="p") as loop:
            bs = [g.load(g.B, g.b_index(loop.index, b.add(j0, _c(c * g.width))), True)
                  for c in range(nr)]
            acc = []
            for r in range(mr):
                a = g.splat(g.A.load(b, g.a_index(b.add(i0, _c(r)), loop.index)))
                acc += [intrinsic(b, "llvm.fma", a, bs[c], loop.carried[r * nr + c])
                        for c in range(nr)]
            loop.update(acc)
        for r in range(mr):
            for c in range(nr):
                g.finish(b.add(i0, _c(r)), b.add(j0, _c(c * g.width)),
                         loop.results[r * nr + c])
    return rows_done, cols_done


def _dot_blocks(g: Gemm):
    b, (mr, nr) = g.b, DOT_BLOCK
    row_blocks, rows_done = g.blocks(g.m, mr)
    col_blocks, cols_done = g.blocks(g.n, nr)
    depth_vectors, depth_done = g.blocks(g.depth, g.width)
    zero = ir.Constant(g.vec, None)
    with g.block_loops(row_blocks, col_blocks, g.rows_outer(mr, nr)) as (ib, jb):
        i0, j0 = b.mul(ib, _c(mr)), b.mul(jb, _c(nr))
        with for_range(b, depth_vectors, carry=[zero] * (mr * nr), name="p") as loop:
            p = b.mul(loop.index, _c(g.width))
            avs = [g.load(g.A, g.a_index(b.add(i0, _c(r)), p), True) for r in range(mr)]
            bvs = [g.load(g.B, g.b_index(p, b.add(j0, _c(c))), True) for c in range(nr)]
            loop.update([intrinsic(b, "llvm.fma", avs[r], bvs[c], loop.carried[r * nr + c])
                         for r in range(mr) for c in range(nr)])
        for r in range(mr):
            i = b.add(i0, _c(r))
            for c in range(nr):
                j = b.add(j0, _c(c))
                total = intrinsic(b, "llvm.vector.reduce.fadd", ir.Constant(g.elt, 0.0),
                                  loop.results[r * nr + c], overload=g.vec, result=g.elt,
                                  fastmath=REDUCE)
                g.finish(i, j, _dot(g, i, j, depth_done, g.depth, total))  # + depth tail
    return rows_done, cols_done


def _dot(g: Gemm, i, j, start, stop, init):
    """init + sum over start <= p < stop of op(A)[i, p] * op(B)[p, j]."""
    b = g.b
    with for_range(b, b.sub(stop, start), carry=[init], name="q") as loop:
        p = b.add(start, loop.index)
        prod = b.fmul(g.A.load(b, g.a_index(i, p)), g.B.load(b, g.b_index(p, j)), flags=REDUCE)
        loop.update([b.fadd(loop.carried[0], prod, flags=REDUCE)])
    return loop.results[0]


def _scalar(g: Gemm, i_lo, i_hi, j_lo, j_hi) -> None:
    """C[i, j] for i_lo <= i < i_hi and j_lo <= j < j_hi, one dot product each."""
    b = g.b
    with for_range(b, b.sub(i_hi, i_lo), name="ti") as ti:
        i = b.add(i_lo, ti.index)
        with for_range(b, b.sub(j_hi, j_lo), name="tj") as tj:
            j = b.add(j_lo, tj.index)
            g.finish(i, j, _dot(g, i, j, _c(0), g.depth, ir.Constant(g.elt, 0.0)))
