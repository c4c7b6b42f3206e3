"""The native training loop behind `TrainStep.fit`: whole epochs without returning to Python.

Input: the module, the `Abi` and entry of the program each step runs, and a `FitSpec` saying
what each entry input is. Output: `diffc_<name>_fit` in the module:

    void fit(void **table, const int64_t *perm, int64_t first, int64_t last, int64_t batch,
             int64_t n, T *losses, void **staging, int64_t dims..., void *workspace)

runs steps `first <= s < last` of an epoch over `n` samples taken in the order `perm`.
`table[i]` points at entry input i: a param, the step count, optimizer state or another fixed
buffer or scalar (each step reads and updates them in place, as a call of the entry does); for
data, the whole data set. A per-sample input of step s is row `perm[s]` of its data (no copy); a
batch input gathers rows `perm[s*batch ...]` (the last batch takes the rest) into `staging[i]`
and binds the batch symbol to the rows taken. Step s writes its loss to `losses[s]`.
"""
from __future__ import annotations

from llvmlite import ir

from ..passes.crossstep import CrossStep
from ..runtime.abi import FIXED, SAMPLE, Abi, FitSpec
from .codegen import PTR, function_type, llvm_type, product
from .kernels import vector_dot
from .loops import I64, for_range
from .target import Target

NEXT = "next"  # the next sample's row of a data input (cross-step fusion)


def build_fit(module: ir.Module, name: str, abi: Abi, entry: ir.Function, spec: FitSpec,
              rewrites: list[CrossStep], target: Target) -> None:
    """`name`: the fit loop calling `entry` (of `abi`) once per step; with cross-step
    `rewrites` (passes/crossstep.py), it first computes each carried `W @ x` of step `first`."""
    fn = ir.Function(module, function_type(abi.fit_args()), name)
    loop = _FitLoop(fn, abi, target)
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

    def __init__(self, fn: ir.Function, abi: Abi, target: Target):
        self.abi, self.target = abi, target
        self.table, self.perm, self.first, self.last, self.batch, self.n, self.losses, \
            self.staging = fn.args[:8]
        self.fixed_dims = dict(zip(abi.symbols, fn.args[8:-1], strict=True))
        self.b = ir.IRBuilder(fn.append_basic_block("entry"))

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
        return self.gather(i, src, start, size, dims)

    def gather(self, i: int, src, start, size, dims):
        """BATCH: this step's rows of the data behind table[i], copied into staging[i]."""
        b, t = self.b, self.abi.inputs[i]
        elt, stage = llvm_type(t.dtype), self.slot(self.staging, i)
        width = product(b, [_dim(d, dims) for d in t.shape[1:]])
        with for_range(b, size, name="r") as r:
            src_row = b.mul(self.perm_at(b.add(start, r.index)), width)
            dst_row = b.mul(r.index, width)
            with for_range(b, width, name="c") as c:
                value = b.load(b.gep(src, [b.add(src_row, c.index)], source_etype=elt), typ=elt)
                b.store(value, b.gep(stage, [b.add(dst_row, c.index)], source_etype=elt))
        return stage


def _dim(d, dims):
    return ir.Constant(I64, d) if isinstance(d, int) else dims[d]
