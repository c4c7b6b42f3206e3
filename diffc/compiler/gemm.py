"""Matrix multiplication: register-blocked micro-kernels with explicit vector FMAs.

Input: a `Kernel` for `matmul[transpose_a, transpose_b] A B` writing C = op(A) op(B), row-major.
C is covered by tiles; each tile's accumulators live in registers for the whole reduction:
- "axpy" tiles (B not transposed: op(B)'s rows are contiguous along C's columns): mr rows by
  nr vectors of C; each step of the reduction index p loads nr vectors of op(B)'s row p,
  broadcasts mr entries of op(A)'s column p and issues mr*nr FMAs.
- "dot" tiles (B transposed, A not: both contiguous along p): mr x nr dot products, each a
  vector accumulator along p, summed across lanes at the end: a row's sums together by
  shuffles into one vector of its columns when a static depth is whole vectors, else one by
  one, followed by the depth's leftover scalars. Where a tile's rows of A and B would not stay
  in L1 over a long depth, the depth runs in chunks, partial sums kept in C between them.
Main tiles are as large as the host's vector registers allow (`blocks`); the edges of C take
smaller tiles of the same code (static sizes: one tile of the leftover rows or vectors, then
vectors of halving width; symbolic sizes: single rows, single vectors, then scalars), so no
edge falls back to a scalar loop unless it is narrower than a vector. A^T B^T uses scalar tiles.
Each finished value of C (a vector of a row's columns, or a scalar) goes through `finish`: a
plain matmul stores it; a fused one (kernels.lower_fused) applies its epilogue first. A kernel
split into parts (split.py) computes its part's run of main tiles along one axis of C, the
last part also that axis' edge tiles: every element is computed by the same tile code whichever
part it falls in.
Invariants: every element of C is finished exactly once (chunked dot tiles store partial sums
in an output of C's type before, so they need one that is no input's buffer); vector loads are
unaligned-safe (element alignment); accumulations use FMA (`llvm.fma`), so results equal the
scalar loop's up to rounding order.
"""
from __future__ import annotations

import functools
from contextlib import contextmanager
from dataclasses import dataclass

from llvmlite import ir

from .loops import I64, for_range
from .scalar import intrinsic
from .target import Target

REDUCE = ("reassoc", "contract")


def _c(value):
    return ir.Constant(I64, value)


def vector_type(elt, lanes: int) -> ir.Type:
    """`lanes` elts; one lane is elt itself."""
    return elt if lanes == 1 else ir.VectorType(elt, lanes)


def full_vector(elt, target: Target) -> ir.Type:
    """As many elts as one of the target's vector registers holds."""
    return vector_type(elt, target.lanes(8 if isinstance(elt, ir.DoubleType) else 4))


def tile_kind(transpose_a: bool, transpose_b: bool) -> str | None:
    """"axpy" where op(B)'s rows are contiguous, "dot" where only A's and B's rows are, None
    (scalar tiles) for A^T B^T."""
    return "axpy" if not transpose_b else "dot" if not transpose_a else None


def blocks(target: Target) -> dict[str, tuple[int, int]]:
    """Main tile sizes (rows, columns of C): axpy columns in vectors, dot columns in values.
    Accumulators plus the operands of one step must fit the register file."""
    if target.vector_registers[1] >= 32:  # AVX-512
        return {"axpy": (8, 2), "dot": (4, 6)}
    return {"axpy": (4, 2), "dot": (2, 4)}


@dataclass
class Tiles:
    """`count` tiles of `size` units along one dimension of C, from `start`; a unit is a vector
    of `lanes` elements (columns of an axpy tile) or one element (rows, dot columns)."""

    start: ir.Value
    count: ir.Value
    size: int
    lanes: int = 1


def cover(b, extent, static: int | None, block: int, lanes: int) -> list[Tiles]:
    """Tiles covering range(extent): whole blocks of `block` units, then the edge."""
    step = block * lanes
    if static is not None:  # the main tiles come first, even when there are none
        whole = static // step
        tiles, done = [Tiles(_c(0), _c(whole), block, lanes)], whole * step
        if (static - done) // lanes:
            tiles.append(Tiles(_c(done), _c(1), (static - done) // lanes, lanes))
            done += (static - done) // lanes * lanes
        width = lanes // 2
        while done < static:
            if static - done >= width:
                tiles.append(Tiles(_c(done), _c(1), 1, width))
                done += width
            width //= 2
        return tiles
    whole = b.sdiv(extent, _c(step))
    tiles, done = [Tiles(_c(0), whole, block, lanes)], b.mul(whole, _c(step))
    if block > 1:
        singles = b.sdiv(b.sub(extent, done), _c(lanes))
        tiles.append(Tiles(done, singles, 1, lanes))
        done = b.add(done, b.mul(singles, _c(lanes)))
    if lanes > 1:
        tiles.append(Tiles(done, b.sub(extent, done), 1, 1))
    return tiles


class Gemm:
    """Shared state of one matmul kernel: sizes, element and vector types, operand access."""

    def __init__(self, k, a, b, params, out_type, finish=None):
        self.k, self.b = k, k.b
        self.A, self.B = a, b
        self.ta, self.tb = params["transpose_a"], params["transpose_b"]
        depth_dim = a.type.shape[0] if self.ta else a.type.shape[1]
        self.static = [d if isinstance(d, int) else None for d in (*out_type.shape, depth_dim)]
        self.m, self.n, self.depth = (k.dim(d) for d in (*out_type.shape, depth_dim))
        self.elt = a.elt  # C's elements: A's (a fused GEMM's outputs may also be masks)
        # where chunked dot tiles keep partial sums: an output of C's type (None: no chunks)
        self.partial = next((out for out in k.outputs if out.type == out_type), None)
        self.itemsize = out_type.dtype.itemsize
        self.width = full_vector(self.elt, k.target).count
        self.finish = finish or (lambda i, j, value: self.store(k.outputs[0], i, j, value))

    def a_index(self, i, p):  # flat index of op(A)[i, p]
        b = self.b
        return b.add(b.mul(p, self.m), i) if self.ta else b.add(b.mul(i, self.depth), p)

    def b_index(self, p, j):  # flat index of op(B)[p, j]
        b = self.b
        return b.add(b.mul(j, self.depth), p) if self.tb else b.add(b.mul(p, self.n), j)

    def load(self, operand, index, typ):
        """operand[index] (typ is a scalar type), or the vector of typ starting there; a mask's
        bytes become i1s."""
        if not isinstance(typ, ir.VectorType):
            return operand.load(self.b, index)
        memory = ir.VectorType(operand.elt, typ.count)
        ptr = self.b.gep(operand.ptr, [index], inbounds=True, source_etype=operand.elt)
        value = self.b.load(ptr, typ=memory, align=operand.type.dtype.itemsize)
        return self.b.icmp_unsigned("!=", value, ir.Constant(memory, 0)) if operand.mask else \
            value

    def store(self, operand, i, j, value) -> None:
        """C-shaped operand[i, j] = value (a scalar, or a vector of columns j, j+1, ...)."""
        index = self.b.add(self.b.mul(i, self.n), j)
        if not isinstance(value.type, ir.VectorType):
            operand.store(self.b, index, value)
            return
        if operand.mask:
            value = self.b.zext(value, ir.VectorType(operand.elt, value.type.count))
        ptr = self.b.gep(operand.ptr, [index], inbounds=True, source_etype=operand.elt)
        self.b.store(value, ptr, align=operand.type.dtype.itemsize)

    def splat(self, scalar, typ):
        """A value of typ with every lane equal to scalar."""
        if not isinstance(typ, ir.VectorType):
            return scalar
        b = self.b
        one = b.insert_element(ir.Constant(typ, ir.Undefined), scalar, _c(0))
        return b.shuffle_vector(one, ir.Constant(typ, ir.Undefined),
                                ir.Constant(ir.VectorType(ir.IntType(32), typ.count), None))

    def rows_outer(self, rows_per_tile: int, cols_per_tile: int) -> bool:
        """Whether to loop over row tiles outside column tiles: the inner loop re-reads the
        other operand once per outer tile, so stream whichever costs fewer bytes."""
        m, n, depth = (_guess(d) for d in self.static)
        return m / rows_per_tile * depth * n <= n / cols_per_tile * depth * m

    @contextmanager
    def tile_loops(self, rows: Tiles, cols: Tiles, rows_outer: bool):
        """Nested loops over (row tile, column tile); yields the tile's first row and column."""
        first, second = (rows, cols) if rows_outer else (cols, rows)
        with for_range(self.b, first.count, name="ob") as outer, \
                for_range(self.b, second.count, name="ib") as inner:
            it, jt = (outer.index, inner.index) if rows_outer else (inner.index, outer.index)
            yield (self.b.add(rows.start, self.b.mul(it, _c(rows.size))),
                   self.b.add(cols.start, self.b.mul(jt, _c(cols.size * cols.lanes))))


def _guess(d) -> int:
    return 64 if d is None else d  # a symbolic dim: typically a batch


def lower_matmul(k) -> None:
    run(Gemm(k, *k.inputs, k.params, k.outputs[0].type))


def run(g: Gemm) -> None:
    """Compute every element of C once (of the kernel's part of C, if it is split), handing
    each finished value to g.finish."""
    kind = tile_kind(g.ta, g.tb)
    mr, nr = blocks(g.k.target)[kind] if kind else (1, 1)
    lanes = g.width if kind == "axpy" else 1
    rows = _part(g, cover(g.b, g.m, g.static[0], mr, 1), 0)
    cols = _part(g, cover(g.b, g.n, g.static[1], nr, lanes), 1)

    def every_tile(tile) -> None:
        for r, r_edge in rows:
            for c, c_edge in cols:
                first = r is rows[0][0] and c is cols[0][0]
                outer = g.rows_outer(mr, nr * lanes) if first else True
                with g.k.in_last_part(r_edge or c_edge), g.tile_loops(r, c, outer) as (i0, j0):
                    tile(g, i0, j0, r.size, c.size, c.lanes)

    if kind != "dot":  # A^T B^T too, in scalar tiles
        every_tile(_axpy_tile)
        return
    size = _chunk_size(g, mr + nr)
    if size is None:
        every_tile(_dot_tile)
        return
    count = -(-g.static[2] // size)
    with for_range(g.b, count - 1, name="kc") as k:  # partial sums, kept in C
        every_tile(functools.partial(_dot_tile, chunk=Chunk(k.index, size, False)))
    every_tile(functools.partial(_dot_tile, chunk=Chunk(_c(count - 1), size, True)))


def _part(g: Gemm, tiles: list[Tiles], axis: int) -> list[tuple[Tiles, bool]]:
    """The tiles along one axis of C that this kernel computes, each with whether only the
    last part computes it: if the kernel is split along this axis (split.py), its share of
    the main tiles, and the edge tiles in the last part; else all of them."""
    split = g.k.split
    if split is None or split.axis != axis:
        return [(t, False) for t in tiles]
    (first, end, _), main, b = g.k.units(), tiles[0], g.b
    start = b.add(main.start, b.mul(first, _c(main.size * main.lanes)))
    mine = Tiles(start, b.sub(end, first), main.size, main.lanes)
    return [(mine, False)] + [(t, True) for t in tiles[1:]]


L1_SHARE = 24 * 1024  # bytes of a tile's rows of A and B per depth chunk: half a 48 KB L1


@dataclass
class Chunk:
    """Depth chunk `index` of a dot GEMM: p from index * size to the next chunk's start or the
    end of the depth. Sums so far live in C; the last chunk finishes them."""

    index: ir.Value
    size: int
    last: bool


def _chunk_size(g: Gemm, rows_per_step: int) -> int | None:
    """The depth of a chunk, if a dot tile's rows of A and B would not stay in L1 over the whole
    depth (then partial sums go through C between chunks: only if C is no input's buffer)."""
    size = L1_SHARE // (rows_per_step * g.itemsize) // g.width * g.width
    depth = g.static[2]
    c_is_input = any(out.ptr is op.ptr for out in g.k.outputs for op in g.k.inputs)
    if depth is None or depth % g.width or depth <= size or c_is_input or g.partial is None:
        return None
    return size


def _axpy_tile(g: Gemm, i0, j0, mr: int, nr: int, lanes: int) -> None:
    """mr rows by nr vectors of `lanes` columns of C."""
    b, typ = g.b, vector_type(g.elt, lanes)
    zero = ir.Constant(typ, None)
    with for_range(b, g.depth, carry=[zero] * (mr * nr), name="p") as loop:
        bs = [g.load(g.B, g.b_index(loop.index, b.add(j0, _c(c * lanes))), typ)
              for c in range(nr)]
        acc = []
        for r in range(mr):
            a = g.splat(g.A.load(b, g.a_index(b.add(i0, _c(r)), loop.index)), typ)
            acc += [intrinsic(b, "llvm.fma", a, bs[c], loop.carried[r * nr + c])
                    for c in range(nr)]
        loop.update(acc)
    for r in range(mr):
        for c in range(nr):
            g.finish(b.add(i0, _c(r)), b.add(j0, _c(c * lanes)), loop.results[r * nr + c])


def _dot_tile(g: Gemm, i0, j0, mr: int, nr: int, lanes: int, chunk: Chunk | None = None) -> None:
    """mr x nr values of C (`lanes` is 1), over the whole depth or one chunk of it."""
    b, typ = g.b, vector_type(g.elt, g.width)
    rows = [b.add(i0, _c(r)) for r in range(mr)]
    cols = [b.add(j0, _c(c)) for c in range(nr)]
    if chunk is None:
        start, vectors = _c(0), b.sdiv(g.depth, _c(g.width))
    else:
        depth = g.static[2]
        length = depth - (depth - 1) // chunk.size * chunk.size if chunk.last else chunk.size
        start, vectors = b.mul(chunk.index, _c(chunk.size)), _c(length // g.width)
    with for_range(b, vectors, carry=[ir.Constant(typ, None)] * (mr * nr), name="p") as loop:
        loop.update(_dot_step(g, rows, cols, b.add(start, b.mul(loop.index, _c(g.width))), typ,
                              loop.carried))
    if g.static[2] is not None and g.static[2] % g.width == 0:  # no leftover depth
        for r in range(mr):
            c = 0
            for size in _powers_of_two(nr, g.width):
                total = _sum_lanes(g, loop.results[r * nr + c:][:size])
                if chunk is None:
                    g.finish(rows[r], cols[c], total)
                else:
                    _chunk_sums(g, chunk, rows[r], cols[c], total)
                c += size
        return
    sums = [intrinsic(b, "llvm.vector.reduce.fadd", ir.Constant(g.elt, 0.0), acc,
                      overload=typ, result=g.elt, fastmath=REDUCE) for acc in loop.results]
    done = b.mul(vectors, _c(g.width))
    with for_range(b, b.sub(g.depth, done), carry=sums, name="q") as tail:  # leftover depth
        tail.update(_dot_step(g, rows, cols, b.add(done, tail.index), g.elt, tail.carried))
    for r in range(mr):
        for c in range(nr):
            g.finish(rows[r], cols[c], tail.results[r * nr + c])


def _dot_step(g: Gemm, rows, cols, p, typ, sums) -> list:
    """sums + op(A)[row, p...] * op(B)[p..., col] for every (row, col), p... a value of typ."""
    avs = [g.load(g.A, g.a_index(i, p), typ) for i in rows]
    bvs = [g.load(g.B, g.b_index(p, j), typ) for j in cols]
    return [intrinsic(g.b, "llvm.fma", a, v, sums[r * len(cols) + c])
            for r, a in enumerate(avs) for c, v in enumerate(bvs)]


def _chunk_sums(g: Gemm, chunk: Chunk, i, j, total) -> None:
    """Add a chunk's sums to those of the chunks before (in C); store them, or finish them
    after the last chunk."""
    b, out = g.b, g.partial
    before = g.load(out, b.add(b.mul(i, g.n), j), total.type)
    first = b.icmp_signed("==", chunk.index, _c(0))
    total = b.fadd(total, b.select(first, ir.Constant(total.type, None), before))
    if chunk.last:
        g.finish(i, j, total)
    else:
        g.store(out, i, j, total)


def _powers_of_two(n: int, most: int) -> list[int]:
    """n as a sum of powers of two of at most `most` (a power of two), largest first."""
    sizes = []
    while n:
        sizes.append(min(1 << (n.bit_length() - 1), most))
        n -= sizes[-1]
    return sizes


def _sum_lanes(g: Gemm, accs: list):
    """The lane sums of k vectors (k a power of two, at most their width) as one k-lane value
    (a scalar for k = 1): log2(width) levels of two shuffles and an add, where k horizontal
    reductions would take k times as many."""
    level, per = list(accs), g.width  # per: the lanes each sum is still spread over
    while len(level) > 1:  # pairs of values: twice the sums per value, half the lanes each
        level = [_add_halves(g.b, u, v, per) for u, v in zip(level[::2], level[1::2],
                                                              strict=True)]
        per //= 2
    (total,) = level
    while per > 1:  # one value: its sums' own halves, halving its width
        total = _add_halves(g.b, total, None, per)
        per //= 2
    return total if total.type.count > 1 else g.b.extract_element(total, _c(0))


def _add_halves(b, u, v, per: int):
    """Each group of `per` lanes of u (then of v, if given) with its upper half added to its
    lower half: u's sums first, in order."""
    lanes = u.type.count
    low = [source + group + k for source in ([0] if v is None else [0, lanes])
           for group in range(0, lanes, per) for k in range(per // 2)]
    high = [x + per // 2 for x in low]
    other = ir.Constant(u.type, ir.Undefined) if v is None else v
    mask = lambda idx: ir.Constant(ir.VectorType(ir.IntType(32), len(idx)), idx)  # noqa: E731
    return b.fadd(b.shuffle_vector(u, other, mask(low)), b.shuffle_vector(u, other, mask(high)),
                  flags=REDUCE)
