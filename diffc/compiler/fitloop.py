"""The native training loop behind `TrainStep.fit`: whole epochs without returning to Python.

Input: the module, the `Abi` and entry of the program each step runs, and a `FitSpec` saying
what each entry input is. Output: `diffc_<name>_fit` in the module:

    void fit(void **table, const int64_t *perm, int64_t first, int64_t last, int64_t batch,
             int64_t n, T *losses, void **staging, int64_t dims..., void *workspace)

runs steps `first <= s < last` of an epoch over `n` samples taken in the order `perm`.
`table[i]` points at entry input i: a param, the step count, optimizer state or another fixed
buffer or scalar (each step reads and updates them in place, as a call of the entry does); for
data, the whole data set. A per-sample input of step s is row `perm[s]` of its data (no copy); a
batch input takes rows `perm[s*batch ...]` (the last batch takes the rest): where they lie in
order in the data (no shuffling), the data itself, else a copy gathered into `staging[i]` (in
parts, on the worker pool: split.py), and binds the batch symbol to the rows taken. Step s
writes its loss to `losses[s]`.
"""
from __future__ import annotations

from llvmlite import ir

from ..passes.crossstep import CrossStep
from ..runtime.abi import BATCH, FIXED, SAMPLE, Abi, FitSpec
from .codegen import PTR, function_type, llvm_type, product
from .kernels import vector_dot
from .loops import I64, for_range
from .pool import PARALLEL, TASK
from .split import count_parts
from .target import Target

NEXT = "next"  # the next sample's row of a data input (cross-step fusion)


def build_fit(module: ir.Module, name: str, abi: Abi, entry: ir.Function, spec: FitSpec,
              rewrites: list[CrossStep], target: Target, hook) -> None:
    """`name`: the fit loop calling `entry` (of `abi`) once per step; with cross-step
    `rewrites` (passes/crossstep.py), it first computes each carried `W @ x` of step `first`.
    Batches are gathered in parts through the program's parallel `hook` (codegen.add_hook)."""
    fn = ir.Function(module, function_type(abi.fit_args()), name)
    batched = [i for i, kind in enumerate(spec.kinds) if kind == BATCH]
    loop = _FitLoop(fn, abi, target, hook, batched)
    kinds = list(spec.kinds)
    for r in rewrites:  # carry: a fixed buffer; next: the next sample's row of r.data's data
        kinds[r.carry:r.next + 1] = [FIXED, NEXT]
    b = loop.b
    with b.if_then(b.icmp_signed("<", loop.first, loop.last)):
        for r in rewrites:
            loop.first_carry(r)
    with for_range(b, b.sub(loop.last, loop.first), name="s") as steps:
        s = b.add(loop.first, steps.index)
        start = b.mul(s, loop.batch)
        rest = b.sub(loop.n, start)
        size = b.select(b.icmp_signed("<", rest, loop.batch), rest, loop.batch)
        dims = dict(loop.fixed_dims)
        if spec.batch_symbol is not None:
            dims[spec.batch_symbol] = size
        args = [loop.step_arg(i, kind, start, size, dims, rewrites)
                for i, kind in enumerate(kinds)]
        out = b.gep(loop.losses, [s], source_etype=llvm_type(abi.outputs[0].dtype))
        b.call(entry, args + [out] + [dims[d] for d in abi.symbols] + [fn.args[-1]])
    b.ret_void()


class _FitLoop:
    """The fit function's arguments and the code reading its table, perm and data."""

    def __init__(self, fn: ir.Function, abi: Abi, target: Target, hook, batched: list[int]):
        self.abi, self.target, self.hook = abi, target, hook
        self.table, self.perm, self.first, self.last, self.batch, self.n, self.losses, \
            self.staging = fn.args[:8]
        self.fixed_dims = dict(zip(abi.symbols, fn.args[8:-1], strict=True))
        self.b = ir.IRBuilder(fn.append_basic_block("entry"))
        self.tasks = {i: _gather_task(fn.module, f"{fn.name}.gather{i}",
                                      llvm_type(abi.inputs[i].dtype)) for i in batched}
        self.contexts = {i: self.b.alloca(ir.ArrayType(I64, len(GATHER_SLOTS)))
                         for i in batched}  # in the entry block: one per input, not per step

    def slot(self, array, i):
        return self.b.load(self.b.gep(array, [ir.Constant(I64, i)], source_etype=PTR), typ=PTR)

    def perm_at(self, i):
        return self.b.load(self.b.gep(self.perm, [i], source_etype=I64), typ=I64)

    def data_row(self, i, index, dims):
        """Row `index` of the data set behind table[i]."""
        t, b = self.abi.inputs[i], self.b
        width = product(b, [_dim(d, dims) for d in t.shape])
        return b.gep(self.slot(self.table, i), [b.mul(index, width)],
                     source_etype=llvm_type(t.dtype))

    def first_carry(self, r: CrossStep) -> None:
        """W @ x for step `first`'s sample into the carry, as the step's matvec computes it."""
        b, w_type = self.b, self.abi.inputs[r.weight]
        rows, cols = (_dim(d, self.fixed_dims) for d in w_type.shape)
        elt = llvm_type(w_type.dtype)
        x = self.data_row(r.data, self.perm_at(self.first), self.fixed_dims)
        w, g = self.slot(self.table, r.weight), self.slot(self.table, r.carry)
        with for_range(b, rows, name="gi") as gi:
            w_row = b.gep(w, [b.mul(gi.index, cols)], source_etype=elt)
            b.store(vector_dot(b, elt, w_row, x, cols, self.target),
                    b.gep(g, [gi.index], source_etype=elt))

    def step_arg(self, i: int, kind: str, start, size, dims, rewrites):
        """Entry input i of the step whose samples start at `start` (of `size`)."""
        b, t = self.b, self.abi.inputs[i]
        if kind == NEXT:  # the next sample (any, after an epoch's last)
            following = b.add(start, ir.Constant(I64, 1))
            following = b.select(b.icmp_signed("<", following, self.n), following, start)
            data = next(r.data for r in rewrites if r.next == i)
            return self.data_row(data, self.perm_at(following), dims)
        elt, src = llvm_type(t.dtype), self.slot(self.table, i)
        if kind == FIXED:
            return b.load(src, typ=elt) if t.ndim == 0 else src
        if kind == SAMPLE:
            sample = self.data_row(i, self.perm_at(start), dims)
            return b.load(sample, typ=elt) if t.ndim == 0 else sample
        return self.batch_rows(i, src, start, size, dims)

    def batch_rows(self, i: int, src, start, size, dims):
        """BATCH: this step's rows of the data behind table[i]: the data itself where they lie
        in order (fit without shuffling), else a copy in staging[i]."""
        b, t = self.b, self.abi.inputs[i]
        first, stage = self.perm_at(start), self.slot(self.staging, i)
        width = product(b, [_dim(d, dims) for d in t.shape[1:]])
        with for_range(b, size, carry=[ir.Constant(ir.IntType(1), 1)], name="o") as r:
            same = b.icmp_signed("==", self.perm_at(b.add(start, r.index)),
                                 b.add(first, r.index))
            r.update([b.and_(r.carried[0], same)])
        in_order = r.results[0]
        with b.if_then(b.not_(in_order)):
            self.gather(i, src, stage, start, size, width)
        rows = b.gep(src, [b.mul(first, width)], source_etype=llvm_type(t.dtype))
        return b.select(in_order, rows, stage)

    def gather(self, i: int, src, stage, start, size, width) -> None:
        """Rows perm[start:start + size] (of `width` values) of src into stage, in parts of
        whole rows (split.count_parts, a copy counting a quarter multiply-add) through the
        hook."""
        b = self.b
        work = b.mul(size, width)
        parts = count_parts(b, size, b.udiv(work, _c(4)))  # a copy: a quarter multiply-add
        perm = b.gep(self.perm, [start], source_etype=I64)
        values = [b.ptrtoint(p, I64) for p in (src, stage, perm)] + [size, width, parts]
        context = self.contexts[i]
        for name, value in zip(GATHER_SLOTS, values, strict=True):
            b.store(value, b.gep(context, [_c(0), _c(GATHER_SLOTS.index(name))]))
        with b.if_else(b.icmp_signed(">", parts, _c(1))) as (many, one):
            with many:
                parallel = b.load(self.hook, typ=PARALLEL.as_pointer())
                b.call(parallel, [self.tasks[i], context, parts, work])
            with one:
                b.call(self.tasks[i], [context, _c(0)])


GATHER_SLOTS = ("src", "stage", "perm", "size", "width", "parts")  # a gather task's context


def _gather_task(module: ir.Module, name: str, elt) -> ir.Function:
    """task(ctx, part): rows [part * size // parts, (part + 1) * size // parts) of a batch:
    stage[r, :] = src[perm[r], :], with ctx holding GATHER_SLOTS."""
    fn = ir.Function(module, TASK, name)
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    context, part = fn.args
    src, stage, perm, size, width, parts = (
        b.load(b.gep(context, [_c(k)], source_etype=I64), typ=I64) for k in range(6))
    src, stage, perm = (b.inttoptr(p, PTR) for p in (src, stage, perm))
    first = b.udiv(b.mul(part, size), parts)
    end = b.udiv(b.mul(b.add(part, _c(1)), size), parts)
    with for_range(b, b.sub(end, first), name="r") as r:
        row = b.add(first, r.index)
        index = b.load(b.gep(perm, [row], source_etype=I64), typ=I64)
        src_row, dst_row = b.mul(index, width), b.mul(row, width)
        with for_range(b, width, name="c") as c:
            value = b.load(b.gep(src, [b.add(src_row, c.index)], source_etype=elt), typ=elt)
            b.store(value, b.gep(stage, [b.add(dst_row, c.index)], source_etype=elt))
    b.ret_void()
    return fn


def _c(value):
    return ir.Constant(I64, value)


def _dim(d, dims):
    return ir.Constant(I64, d) if isinstance(d, int) else dims[d]
