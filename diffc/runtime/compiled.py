"""Build native code for a program and make it callable.

Input: a Program, its Signature and a name. Output: `CompiledProgram`, which runs the IR passes,
generates and optimizes LLVM IR, links the object code into the process and calls it through an
`Invoker`. Keeps the optimized LLVM IR and the assembly for inspection.
"""
from __future__ import annotations

from ..compiler import codegen, llvm, passes
from ..compiler.fitloop import build_fit
from ..ir import Program, verify
from ..types import Signature
from .call import Invoker, label_bounds


class CompiledProgram:
    """A program's native code, linked into the process; with a `FitSpec`, also its fit loop."""

    def __init__(self, program: Program, signature: Signature, name: str,
                 fit_spec=None):
        optimized = passes.optimize(program)
        verify(optimized)
        module, abi = codegen.build_module(optimized, name)
        symbols = [abi.entry, abi.py_entry, abi.workspace_size]
        if fit_spec is not None:
            build_fit(module, abi, module.get_global(abi.entry), fit_spec)
            symbols.append(abi.fit_entry)
        compiled = llvm.compile_module(module)
        self.program, self.abi = optimized, abi
        self.llvm_ir, self.object_code = compiled.llvm_ir, compiled.object_code
        self._handle, self.addresses = llvm.load_object(compiled.object_code, symbols, abi.entry)
        addresses = self.addresses
        written = tuple(optimized.inputs.index(p) for p, _ in optimized.updates)
        self.invoker = Invoker(abi, signature, addresses, label_bounds(optimized), written)

    @property
    def asm(self) -> str:
        return llvm.assembly(self.llvm_ir)

    def __call__(self, *args, **kwargs) -> list:
        return self.invoker(*args, **kwargs)
