"""Program -> llvmlite.ir.Module: one internal function per equation, one exported entry.

Input: a verified Program, a name and the `Target`. Output: the module and its `Abi`.
The entry `diffc_<name>` takes the arguments `Abi.entry_args` lists (runtime/abi.py: inputs,
outputs, dims, workspace), and `diffc_<name>_py` the same taking numpy array objects instead of
data pointers (it reads the data pointer from numpy's stable PyArrayObject layout), so Python
calls skip `.ctypes`. LLVM types are made from the abi's argument lists and the dtypes.
The workspace-size function returns -1 when any value of the program (or the workspace) would
hold more than 2**63 - 1 bytes for the given dims: the caller refuses those dims. A kernel with
a Split (split.py) runs its parts through the module's parallel hook `diffc_<name>_parallel`
(`add_hook`), one pointer variable for all of the module's entries.
Invariants: buffers of distinct values never overlap (kernel pointer args are noalias); the
entry writes outputs and then applies `updates` (param <- value) after every read of a param;
the parts of a split kernel write disjoint elements, each computed by the same code whatever
part (and thread) it falls in.
"""
from __future__ import annotations

import contextlib

from llvmlite import ir

from ..core.ir import Lit, Program, Var
from ..core.types import ArrayType, DType, bool_
from ..passes.memory import MemoryPlan, plan_memory
from ..runtime.abi import NUMPY_DATA_OFFSET, Abi, Arg, c_name, hook_name, packed_name
from .emitters import value_type
from .kernels import KERNELS, lower_elementwise
from .loops import I64, for_range
from .pool import PARALLEL, TASK
from .split import split_of
from .target import Target

PTR = ir.PointerType()
ALIGN = 64


def llvm_type(dtype: DType) -> ir.Type:
    """The LLVM type of a dtype's elements in memory (a mask: one byte, 0 or 1, as numpy)."""
    return ir.IntType(8) if dtype == bool_ else value_type(dtype)


def function_type(args: list[Arg], result=None) -> ir.FunctionType:
    """The LLVM type of an entry point taking `args` (abi.py's lists)."""
    return ir.FunctionType(result or ir.VoidType(),
                           [PTR if a.pointer else llvm_type(a.dtype) for a in args])


class Operand:
    """An equation's input or output inside a kernel: a typed pointer, or a literal. Loads give
    and stores take values of the computing type (`value_type`): masks are bytes in memory."""

    def __init__(self, type: ArrayType, ptr=None, const=None):
        self.type, self.ptr, self.const = type, ptr, const
        self.elt = llvm_type(type.dtype)
        self.mask = type.dtype == bool_

    def load(self, b: ir.IRBuilder, index):
        if self.const is not None:
            return self.const
        value = b.load(b.gep(self.ptr, [index], inbounds=True, source_etype=self.elt),
                       typ=self.elt)
        return b.icmp_unsigned("!=", value, ir.Constant(self.elt, 0)) if self.mask else value

    def store(self, b: ir.IRBuilder, index, value) -> None:
        if self.mask:
            value = b.zext(value, self.elt)
        b.store(value, b.gep(self.ptr, [index], inbounds=True, source_etype=self.elt))


class Kernel:
    """What a lowering function works with: builder, equation, operands, dims, target, and for
    a kernel split into parts (split.py), its Split and the part it computes. A split lowering
    must ask for its part (`span` or `units`): codegen checks that it did."""

    def __init__(self, b, eqn, inputs, outputs, dims, target: Target, split=None, part=None):
        self.b, self.eqn, self.params = b, eqn, eqn.params
        self.inputs, self.outputs, self.dims = inputs, outputs, dims
        self.ty = value_type(outputs[0].type.dtype)
        self.target = target
        self.split, self.asked = split, False
        if split is not None:
            self._units = split.span(b, self.dim, *part)

    def units(self):
        """(first, end, last) of a split kernel's part: its units [first, end) of the split
        loop, and whether it is the last part (which also takes the remainder)."""
        self.asked = True
        return self._units

    def span(self, extent):
        """(start, count) of the range(extent) this kernel computes: its part's units of the
        split loop (the last part up to extent), or all of it when it runs whole."""
        if self.split is None:
            return ir.Constant(I64, 0), extent
        (first, end, last), b = self.units(), self.b
        unit = ir.Constant(I64, self.split.unit)
        start = b.mul(first, unit)
        return start, b.sub(b.select(last, extent, b.mul(end, unit)), start)

    def in_last_part(self, only_last: bool):
        """A context in which code runs only in the last part (if `only_last` and split)."""
        if only_last and self.split is not None:
            return self.b.if_then(self._units[2])
        return contextlib.nullcontext()

    def dim(self, d):
        return ir.Constant(I64, d) if isinstance(d, int) else self.dims[d]

    def size(self, shape):
        return product(self.b, [self.dim(d) for d in shape])

    def offset(self, shape, indices):
        """Row-major flat index of `indices` in an array of `shape`."""
        at = ir.Constant(I64, 0)
        for d, i in zip(shape, indices, strict=True):
            at = self.b.add(self.b.mul(at, self.dim(d)), i)
        return at

    def zero(self, out: Operand) -> None:
        with for_range(self.b, self.size(out.type.shape)) as loop:
            out.store(self.b, loop.index, ir.Constant(out.elt, 0.0))


def product(b, values):
    total = ir.Constant(I64, 1)
    for v in values:
        total = b.mul(total, v)
    return total


def symbols_of(program: Program) -> tuple[str, ...]:
    """The symbolic dims of the inputs, in order of first appearance."""
    seen: dict[str, None] = {}
    for v in program.inputs:
        seen.update(dict.fromkeys(v.type.symbols))
    return tuple(seen)


def build_module(program: Program, name: str, target: Target) -> tuple[ir.Module, Abi]:
    module = ir.Module(name=name)
    entry = "diffc_" + c_name(name)
    hook = add_hook(module, hook_name(entry))
    abi, entry_fn = add_entry(module, program, entry, target, hook)
    _py_entry_function(module, abi, entry_fn)
    return module, abi


def constant_module(name: str, symbol: str, data: bytes) -> ir.Module:
    """A module defining only the exported constant byte array `symbol` (an export links the
    digest of its JSON into its shared library this way: runtime/load.py checks it)."""
    module = ir.Module(name=name)
    array = ir.ArrayType(ir.IntType(8), len(data))
    constant = ir.GlobalVariable(module, array, symbol)
    constant.initializer = ir.Constant(array, bytearray(data))
    constant.global_constant = True
    return module


def add_hook(module: ir.Module, name: str) -> ir.GlobalVariable:
    """The program's parallel hook `name`: a pointer to the parallel-for its split kernels
    call, `void (*)(void (*task)(void *, int64_t), void *ctx, int64_t parts, int64_t work)`.
    It starts as `<name>_serial`, which runs task(ctx, p) for p < parts in order on the calling
    thread; the runtime points it at the worker pool (compiler/pool.py), and a C program may
    point it at a parallel-for of its own."""
    serial = ir.Function(module, PARALLEL, name + "_serial")
    serial.linkage = "internal"
    task, ctx, parts, _ = serial.args
    b = ir.IRBuilder(serial.append_basic_block("entry"))
    with for_range(b, parts, name="p") as p:
        b.call(task, [ctx, p.index])
    b.ret_void()
    hook = ir.GlobalVariable(module, PTR, name)
    hook.initializer = serial
    return hook


def add_entry(module: ir.Module, program: Program, entry: str, target: Target,
              hook: ir.GlobalVariable) -> tuple[Abi, ir.Function]:
    """The entry `entry` computing program, its kernels and its workspace-size function; split
    kernels call their parts through `hook`."""
    abi = Abi(entry, tuple(v.type for v in program.inputs),
              tuple(a.type for a in program.outputs), symbols_of(program))
    plan = plan_memory(program)
    _size_function(module, abi, plan, _value_types(program))
    return abi, _entry_function(module, abi, program, plan, target, hook)


def add_packed(module: ir.Module, name: str) -> None:
    """`<name>_packed(slots)`: calls `name` with argument i read from the 8-byte slot i (as the
    argument's type), for callers that cannot pass as many arguments one by one (ctypes)."""
    fn = module.get_global(name)
    restype = fn.function_type.return_type
    packed = ir.Function(module, ir.FunctionType(restype, [PTR]), packed_name(name))
    b = ir.IRBuilder(packed.append_basic_block("entry"))
    slots = packed.args[0]
    args = [b.load(b.gep(slots, [ir.Constant(I64, i)], source_etype=I64), typ=a.type)
            for i, a in enumerate(fn.args)]
    result = b.call(fn, args)
    b.ret_void() if isinstance(restype, ir.VoidType) else b.ret(result)


def _kernel_function(module, name: str, eqn, symbols, arg_of: list[int], target: Target,
                     hook) -> ir.Function:
    """An internal function computing one equation from noalias buffer pointers.

    `arg_of` gives, for each var operand (outputs, then var inputs), the index of its pointer
    argument: operands that share a buffer (an in-place update) share one argument. Kernels are
    never inlined, so the same equation compiles to the same code in every entry (`fit`'s step
    entry must reproduce the step entry's arithmetic exactly). A kernel with a Split (split.py)
    is a function of its part, called through `_split_kernel`.
    """
    n_args = max(arg_of, default=-1) + 1
    split = split_of(eqn, target)
    part_args = [] if split is None else [I64, I64]  # the part, and how many there are
    fn = _internal(module, name if split is None else name + ".part",
                   [PTR] * n_args + [I64] * len(symbols) + part_args, n_args)
    pointers = iter(fn.args[i] for i in arg_of)
    outputs = [Operand(v.type, next(pointers)) for v in eqn.outputs]
    inputs = [Operand(a.type, const=ir.Constant(value_type(a.type.dtype), a.value))
              if isinstance(a, Lit) else Operand(a.type, next(pointers)) for a in eqn.inputs]
    dims = dict(zip(symbols, fn.args[n_args:n_args + len(symbols)], strict=True))
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    kernel = Kernel(b, eqn, inputs, outputs, dims, target, split,
                    fn.args[n_args + len(symbols):] or None)
    lower = lower_elementwise if eqn.prim.elementwise else KERNELS[eqn.prim.name]
    lower(kernel)
    b.ret_void()
    if split is None:
        return fn
    if not kernel.asked:  # every part would compute the whole equation
        raise AssertionError(f"{eqn.prim.name}: split (split.py), but its lowering never asks "
                             f"for its part (Kernel.span / Kernel.units)")
    return _split_kernel(module, name, fn, split, n_args, symbols, hook)


def _internal(module, name: str, args: list, pointers: int) -> ir.Function:
    """An internal, never inlined function of `args` whose first `pointers` are noalias."""
    fn = ir.Function(module, ir.FunctionType(ir.VoidType(), args), name)
    fn.linkage = "internal"
    fn.attributes.add("nounwind")
    fn.attributes.add("noinline")
    for arg in fn.args[:pointers]:
        arg.add_attribute("noalias")
    return fn


def _split_kernel(module, name: str, part_fn, split, n_args: int, symbols, hook) -> ir.Function:
    """The kernel of a split equation: computes its number of parts from the dims; one part is
    called directly, more go through the hook with a task reading the arguments from a context
    of 8-byte slots (the pointers, the dims, the number of parts)."""
    n = n_args + len(symbols)
    task = ir.Function(module, TASK, name + ".task")
    task.linkage = "internal"
    task.attributes.add("nounwind")
    b = ir.IRBuilder(task.append_basic_block("entry"))
    ctx, part = task.args
    slots = [b.load(b.gep(ctx, [ir.Constant(I64, i)], source_etype=I64), typ=I64)
             for i in range(n + 1)]
    args = [b.inttoptr(v, PTR) for v in slots[:n_args]] + slots[n_args:n]
    b.call(part_fn, args + [part, slots[n]])
    b.ret_void()

    fn = _internal(module, name, [PTR] * n_args + [I64] * len(symbols), n_args)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    args = list(fn.args)
    dims = dict(zip(symbols, args[n_args:], strict=True))
    dim = lambda d: ir.Constant(I64, d) if isinstance(d, int) else dims[d]  # noqa: E731
    parts = split.parts(b, dim)
    context = b.alloca(ir.ArrayType(I64, n + 1))
    with b.if_else(b.icmp_signed(">", parts, ir.Constant(I64, 1))) as (many, one):
        with one:
            b.call(part_fn, args + [ir.Constant(I64, 0), ir.Constant(I64, 1)])
        with many:
            values = [b.ptrtoint(a, I64) for a in args[:n_args]] + args[n_args:] + [parts]
            for i, v in enumerate(values):
                b.store(v, b.gep(context, [ir.Constant(I64, 0), ir.Constant(I64, i)]))
            parallel = b.load(hook, typ=PARALLEL.as_pointer())
            b.call(parallel, [task, context, parts, split.work_value(b, dim)])
    b.ret_void()
    return fn


class _Checked:
    """i64 `mul` and `add` that remember whether any of them overflowed (in `overflow`)."""

    def __init__(self, b: ir.IRBuilder):
        self.b, self.overflow = b, ir.Constant(ir.IntType(1), 0)

    def _result(self, pair):
        self.overflow = self.b.or_(self.overflow, self.b.extract_value(pair, 1))
        return self.b.extract_value(pair, 0)

    def mul(self, x, y):
        return self._result(self.b.smul_with_overflow(x, y))

    def add(self, x, y):
        return self._result(self.b.sadd_with_overflow(x, y))


def _nbytes(arith, t: ArrayType, dims):
    """t's size in bytes, computed with `arith` (a builder, or `_Checked`)."""
    return arith.mul(product(arith, [ir.Constant(I64, d) if isinstance(d, int) else dims[d]
                                     for d in t.shape]), ir.Constant(I64, t.dtype.itemsize))


def _layout(b, types, dims, arith=None):
    """Byte offsets of 64-byte aligned buffers of the given types, and the total size."""
    arith = arith or b
    offsets, at = [], ir.Constant(I64, 0)
    for t in types:
        offsets.append(at)
        end = arith.add(arith.add(at, _nbytes(arith, t, dims)), ir.Constant(I64, ALIGN - 1))
        at = b.and_(end, ir.Constant(I64, -ALIGN))
    return offsets, at


def _value_types(program: Program) -> set[ArrayType]:
    """The types of every value of a program, nested bodies' included."""
    types = {v.type for v in program.inputs} | {a.type for a in program.outputs}
    for e in program.eqns:
        types |= {v.type for v in e.outputs}
        if "body" in e.params:
            types |= _value_types(e.params["body"])
    return types


def _size_function(module, abi: Abi, plan: MemoryPlan, types: set[ArrayType]) -> None:
    """The workspace size for the dims, or -1 if a value or the workspace would not fit."""
    fn = ir.Function(module, function_type(abi.size_args(), I64), abi.workspace_size)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    dims = dict(zip(abi.symbols, fn.args, strict=True))
    checked = _Checked(b)
    for t in sorted(types, key=str):  # a loop's trip count is some value's size: none wraps
        _nbytes(checked, t, dims)
    _, total = _layout(b, plan.slots, dims, checked)
    b.ret(b.select(checked.overflow, ir.Constant(I64, -1), total))


def _copy(b, t: ArrayType, dst, src_atom, src_ptr, dims) -> None:
    """dst[...] = the whole value of src (a buffer or a literal)."""
    elt = llvm_type(t.dtype)
    n = product(b, [ir.Constant(I64, d) if isinstance(d, int) else dims[d] for d in t.shape])
    with for_range(b, n) as loop:
        if isinstance(src_atom, Lit):
            value = ir.Constant(elt, src_atom.value)
        else:
            value = b.load(b.gep(src_ptr, [loop.index], source_etype=elt), typ=elt)
        b.store(value, b.gep(dst, [loop.index], source_etype=elt))


def _entry_function(module, abi: Abi, program: Program, plan: MemoryPlan,
                    target: Target, hook) -> ir.Function:
    fn = ir.Function(module, function_type(abi.entry_args()), abi.entry)
    n_in, n_out = len(abi.inputs), len(abi.outputs)
    in_args, out_args = list(fn.args[:n_in]), fn.args[n_in:n_in + n_out]
    sym_args, workspace = fn.args[n_in + n_out:-1], fn.args[-1]
    dims = dict(zip(abi.symbols, sym_args, strict=True))
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    for i, t in enumerate(abi.inputs):
        if t.ndim == 0:  # scalars live in a stack slot, so kernels see every value as memory
            slot = b.alloca(llvm_type(t.dtype))
            b.store(in_args[i], slot)
            in_args[i] = slot
    offsets, _ = _layout(b, plan.slots, dims)
    homes = {"input": in_args, "output": out_args,
             "slot": [b.gep(workspace, [o], source_etype=ir.IntType(8)) for o in offsets]}

    def buffer(v: Var):
        kind, k = plan.home[id(v)]
        return homes[kind][k]

    for index, e in enumerate(program.eqns):
        if e.prim.view and isinstance(e.inputs[0], Var) and \
                buffer(e.outputs[0]) is buffer(e.inputs[0]):
            continue  # the same elements in the same buffer (memory.py): nothing to do
        operands = [buffer(v) for v in e.outputs] + [buffer(a) for a in e.inputs
                                                      if isinstance(a, Var)]
        distinct = list({id(p): p for p in operands}.values())
        arg_of = [next(i for i, p in enumerate(distinct) if p is q) for q in operands]
        kernel = _kernel_function(module, f"{abi.entry}.k{index}.{e.prim.name}", e,
                                  abi.symbols, arg_of, target, hook)
        b.call(kernel, distinct + list(sym_args))
    for a, arg in zip(program.outputs, out_args, strict=True):
        if not (isinstance(a, Var) and buffer(a) is arg):
            _copy(b, a.type, arg, a, buffer(a) if isinstance(a, Var) else None, dims)
    staged = {v_id: homes["slot"][slot] for v_id, slot in plan.staging.items()}
    for v in program.inputs:  # read input-valued updates before any param is written
        if id(v) in staged:
            _copy(b, v.type, staged[id(v)], v, buffer(v), dims)
    for param, v in program.updates:
        if id(v) not in plan.in_place:
            src = staged.get(id(v)) or (buffer(v) if isinstance(v, Var) else None)
            _copy(b, v.type, buffer(param), v, src, dims)
    b.ret_void()
    return fn


def _py_entry_function(module, abi: Abi, entry: ir.Function) -> None:
    """The entry taking numpy array objects: loads each `data` pointer, then calls the entry."""
    fn = ir.Function(module, entry.function_type, abi.py_entry)
    b = ir.IRBuilder(fn.append_basic_block("entry"))
    args = list(fn.args)
    for i, arg in enumerate(abi.entry_args()):
        if arg.pointer and arg.role in ("input", "output"):  # they come as numpy objects
            field = b.gep(args[i], [ir.Constant(I64, NUMPY_DATA_OFFSET)],
                          source_etype=ir.IntType(8))
            args[i] = b.load(field, typ=PTR)
    b.call(entry, args)
    b.ret_void()
