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

from ..runtime.abi import Abi
from ..train import FIXED, SAMPLE, FitSpec
from .codegen import LLVM_TYPES, PTR, product
from .kernels import vector_dot
from .loops import I64, for_range
from .passes.crossstep import CrossStep

NEXT = "next"  # the next sample's row of a data input (cross-step fusion)


def build_fit(module: ir.Module, name: str, abi: Abi, entry: ir.Function, spec: FitSpec,
              rewrites: list[CrossStep]) -> None:
    """`name`: the fit loop calling `entry` (of `abi`) once per step; with cross-step
    `rewrites` (passes/crossstep.py), it first computes each carried `W @ x` of step `first`."""
    loss_type = LLVM_TYPES[abi.outputs[0].dtype]
    fnty = ir.FunctionType(ir.VoidType(), [PTR, PTR, I64, I64, I64, I64, PTR, PTR] +
                           [I64] * len(abi.symbols) + [PTR])
    fn = ir.Function(module, fnty, name)
    table, perm, first, last, batch, n, losses, staging = fn.args[:8]
    fixed_dims = dict(zip(abi.symbols, fn.args[8:-1], strict=True))
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    kinds = list(spec.kinds)
    for r in rewrites:  # carry: a fixed buffer; next: the next sample's row of r.data's data
        kinds[r.carry:r.next + 1] = [FIXED, NEXT]

    def slot(array, i):
        return b.load(b.gep(array, [ir.Constant(I64, i)], source_etype=PTR), typ=PTR)

    def perm_at(i):
        return b.load(b.gep(perm, [i], source_etype=I64), typ=I64)

    def data_row(i, index, dims):  # row `index` of the data set behind table[i]
        t, elt = abi.inputs[i], LLVM_TYPES[abi.inputs[i].dtype]
        width = product(b, [_dim(d, dims) for d in t.shape])
        return b.gep(slot(table, i), [b.mul(index, width)], source_etype=elt)

    with b.if_then(b.icmp_signed("<", first, last)):
        for r in rewrites:  # W @ x for the first step's sample, as the step's matvec does it
            w_type = abi.inputs[r.weight]
            rows, cols = (_dim(d, fixed_dims) for d in w_type.shape)
            elt = LLVM_TYPES[w_type.dtype]
            x, w, g = data_row(r.data, perm_at(first), fixed_dims), slot(table, r.weight), \
                slot(table, r.carry)
            with for_range(b, rows, name="gi") as gi:
                w_row = b.gep(w, [b.mul(gi.index, cols)], source_etype=elt)
                b.store(vector_dot(b, elt, w_row, x, cols), b.gep(g, [gi.index],
                                                                   source_etype=elt))

    with for_range(b, b.sub(last, first), name="s") as loop:
        s = b.add(first, loop.index)
        start = b.mul(s, batch)
        rest = b.sub(n, start)
        size = b.select(b.icmp_signed("<", rest, batch), rest, batch)
        dims = dict(fixed_dims)
        if spec.batch_symbol is not None:
            dims[spec.batch_symbol] = size
        following = b.add(start, ir.Constant(I64, 1))  # the next sample (any, after the last)
        following = b.select(b.icmp_signed("<", following, n), following, start)
        args = []
        for i, (t, kind) in enumerate(zip(abi.inputs, kinds, strict=True)):
            if kind == NEXT:
                data = next(r.data for r in rewrites if r.next == i)
                args.append(data_row(data, perm_at(following), dims))
                continue
            elt, src = LLVM_TYPES[t.dtype], slot(table, i)
            if kind == FIXED:
                args.append(b.load(src, typ=elt) if t.ndim == 0 else src)
            elif kind == SAMPLE:
                sample = data_row(i, perm_at(start), dims)
                args.append(b.load(sample, typ=elt) if t.ndim == 0 else sample)
            else:  # BATCH: gather this step's rows
                stage = slot(staging, i)
                width = product(b, [_dim(d, dims) for d in t.shape[1:]])
                with for_range(b, size, name="r") as r:
                    src_row = b.mul(perm_at(b.add(start, r.index)), width)
                    dst_row = b.mul(r.index, width)
                    with for_range(b, width, name="c") as c:
                        value = b.load(b.gep(src, [b.add(src_row, c.index)], source_etype=elt),
                                       typ=elt)
                        b.store(value, b.gep(stage, [b.add(dst_row, c.index)], source_etype=elt))
                args.append(stage)
        out = b.gep(losses, [s], source_etype=loss_type)
        b.call(entry, args + [out] + [dims[d] for d in abi.symbols] + [fn.args[-1]])
    b.ret_void()


def _dim(d, dims):
    return ir.Constant(I64, d) if isinstance(d, int) else dims[d]
