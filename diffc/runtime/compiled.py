"""Build native code for a program and make it callable.

Input: a Program, its Signature and a name. Output: `CompiledProgram`, which runs the IR passes,
generates and optimizes LLVM IR, links the object code into the process and calls it through an
`Invoker`. Keeps the optimized LLVM IR and the assembly for inspection.
"""
from __future__ import annotations

from ..compiler import codegen, llvm, passes
from ..compiler.fitloop import build_fit
from ..compiler.passes.crossstep import fuse_across_steps
from ..ir import Program, verify
from ..train import SAMPLE
from ..types import Signature
from .call import Invoker, label_bounds


class CompiledProgram:
    """A program's native code, linked into the process; with a `FitSpec`, also its fit loop
    (whose steps run the cross-step fused program where a layer qualifies: `fit_abi` and
    `fit_rewrites` describe the inputs that loop's table needs)."""

    def __init__(self, program: Program, signature: Signature, name: str, fit_spec=None):
        optimized = passes.optimize(program)
        verify(optimized)
        module, abi = codegen.build_module(optimized, name)
        symbols = [abi.entry, abi.py_entry, abi.workspace_size]
        self.fit_abi, self.fit_rewrites = None, []
        if fit_spec is not None:
            self.fit_abi, self.fit_rewrites = self._add_fit(module, abi, optimized, fit_spec)
            symbols += [abi.fit_entry, self.fit_abi.workspace_size]
        compiled = llvm.compile_module(module)
        self.program, self.abi = optimized, abi
        self.llvm_ir, self.object_code = compiled.llvm_ir, compiled.object_code
        self._handle, self.addresses = llvm.load_object(compiled.object_code,
                                                        list(dict.fromkeys(symbols)), abi.entry)
        written = tuple(optimized.inputs.index(p) for p, _ in optimized.updates)
        self.invoker = Invoker(abi, signature, self.addresses, label_bounds(optimized), written)

    @staticmethod
    def _add_fit(module, abi, program: Program, spec):
        data = {i for i, kind in enumerate(spec.kinds) if kind == SAMPLE}
        step_program, rewrites = fuse_across_steps(program, data)
        if rewrites:
            verify(step_program)
            step_abi, step_entry = codegen.add_entry(module, step_program, abi.entry + "_fitstep")
        else:
            step_abi, step_entry = abi, module.get_global(abi.entry)
        build_fit(module, abi.fit_entry, step_abi, step_entry, spec, rewrites)
        return step_abi, rewrites

    @property
    def asm(self) -> str:
        return llvm.assembly(self.llvm_ir)

    def __call__(self, *args, **kwargs) -> list:
        return self.invoker(*args, **kwargs)
