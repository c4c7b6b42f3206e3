"""Build native code for a program and make it callable.

Input: a Program, its Signature and a name. Output: `CompiledProgram`, which runs the IR passes,
generates and optimizes LLVM IR, links the object code into the process and calls it through an
`Invoker`. Keeps the optimized LLVM IR and the assembly for inspection.
"""
from __future__ import annotations

from ..compiler import codegen, llvm, passes
from ..ir import Program, verify
from ..types import Signature
from .call import Invoker, label_bounds


class CompiledProgram:
    def __init__(self, program: Program, signature: Signature, name: str):
        optimized = passes.optimize(program)
        verify(optimized)
        module, abi = codegen.build_module(optimized, name)
        compiled = llvm.compile_module(module)
        self.program, self.abi = optimized, abi
        self.llvm_ir, self.object_code = compiled.llvm_ir, compiled.object_code
        symbols = [abi.entry, abi.py_entry, abi.workspace_size]
        self._handle, addresses = llvm.load_object(compiled.object_code, symbols, abi.entry)
        written = tuple(optimized.inputs.index(p) for p, _ in optimized.updates)
        self.invoker = Invoker(abi, signature, addresses, label_bounds(optimized), written)

    @property
    def asm(self) -> str:
        return llvm.assembly(self.llvm_ir)

    def __call__(self, *args, **kwargs) -> list:
        return self.invoker(*args, **kwargs)
