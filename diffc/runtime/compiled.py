"""Build native code for a program and make it callable.

Input: a Program, its Signature and a name. Output: `CompiledProgram`, which runs the IR passes,
generates and optimizes LLVM IR, links the object code into the process and calls it through an
`Invoker`. Keeps the optimized LLVM IR and the assembly for inspection. The on-disk cache
(cache.py) is keyed by the program as traced, so a hit skips every compiler stage.
"""
from __future__ import annotations

from ..compiler import codegen, llvm, passes
from ..compiler.fitloop import build_fit
from ..compiler.passes.crossstep import fuse_across_steps
from ..ir import Lit, Program, verify
from ..train import SAMPLE
from ..types import Signature
from . import cache
from .abi import Native
from .call import Invoker
from .labels import label_bounds, literal_labels


class CompiledProgram:
    """A program's native code, linked into the process; with a `FitSpec`, also its fit loop
    (whose steps run the cross-step fused program where a layer qualifies: `native.fit_abi`
    and `native.fit_rewrites` describe the inputs that loop's table needs)."""

    def __init__(self, program: Program, signature: Signature, name: str, fit_spec=None):
        key = cache.key(_key_text(program, name, fit_spec), llvm.cache_context())
        hit = cache.load(key)
        native = hit and Native.from_json(hit[2])
        if hit is None or not _calls_match(native.abi, program):
            hit = _build(program, name, fit_spec)
            cache.store(key, *hit)
            native = Native.from_json(hit[2])
        self.object_code, self.llvm_ir, _ = hit
        self.native = native
        self._handle, self.addresses = llvm.load_object(self.object_code, native.symbols(),
                                                        native.abi.entry)
        self.invoker = Invoker(native, signature, self.addresses)

    @property
    def asm(self) -> str:
        return llvm.assembly(self.llvm_ir)

    def __call__(self, *args, **kwargs) -> list:
        return self.invoker(*args, **kwargs)


def _key_text(program: Program, name: str, fit_spec) -> str:
    """What the code depends on: name, fit loop and the printed program (as traced: no nested
    bodies yet), plus the types of its literals, which the printed form leaves out."""
    atoms = [a for e in program.eqns for a in e.inputs] + list(program.outputs) + \
        [v for _, v in program.updates]
    literals = " ".join(str(a.type) for a in atoms if isinstance(a, Lit))
    return f"{name}\n{fit_spec!r}\n{program}\nliterals: {literals}"


def _calls_match(abi, program: Program) -> bool:
    """Whether cached code takes and returns the program's types: entries are bound to their
    key (cache.py), so this guards against a key text that misses something deciding them."""
    return (abi.inputs == tuple(v.type for v in program.inputs) and
            abi.outputs == tuple(a.type for a in program.outputs))


def _build(program: Program, name: str, fit_spec) -> tuple[bytes, str, dict]:
    """Passes, code generation and LLVM: (object code, optimized LLVM IR, `Native` as JSON)."""
    optimized = passes.optimize(program)
    verify(optimized)
    module, abi = codegen.build_module(optimized, name)
    fit_abi, rewrites = None, ()
    if fit_spec is not None:
        fit_abi, rewrites = _add_fit(module, abi, optimized, fit_spec)
    written = tuple(sorted(optimized.inputs.index(p) for p, _ in optimized.updates))
    native = Native(abi, label_bounds(optimized), written, fit_abi, tuple(rewrites),
                    literal_labels(optimized))
    for name in native.packed():
        codegen.add_packed(module, name)
    compiled = llvm.compile_module(module)
    return compiled.object_code, compiled.llvm_ir, native.to_json()


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
