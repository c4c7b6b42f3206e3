"""The pipeline: a traced program to object code, as one visible list of stages.

Input: a Program (as traced, or as a transform made it), a name, an optional `FitSpec` and a
`Target`. Output: `Artifacts`: object code, optimized LLVM IR and the `Native` description the
runtime calls it with. The stages, in order:

    PASSES            fold_transposes, cse, dce, fuse, rowwise_sgd   (diffc/passes/)
    plan_memory       every value's buffer (passes/memory.py), inside codegen.add_entry
    codegen           the entry, its kernels, its workspace-size function (codegen.py)
    fuse_across_steps fit's step program, with its own entry (passes/crossstep.py)
    build_fit         the native fit loop (fitloop.py)
    LLVM              O3 with the vectorizers, object code (llvm.py)

Kernels that split into parts (split.py) call them through the program's parallel hook, which
the API points at the worker pool: `pool_object` compiles it (once per process, cached).

`DIFFC_CHECK=1` (the tests set it) verifies the program after every pass and names the pass
that broke it. The on-disk cache (runtime/cache.py) is keyed by the program as given plus
everything else the object code depends on (`llvm.cache_context`), so a hit skips every stage.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

from ..core.ir import Lit, Program, VerifyError, verify
from ..passes import cse, dce, fold_transposes, fuse, fuse_across_steps, rowwise_sgd
from ..runtime import cache
from ..runtime.abi import SAMPLE, FitSpec, Native
from . import codegen, llvm, pool
from .fitloop import build_fit
from .labels import label_bounds, literal_labels
from .target import Target

PASSES = [fold_transposes, cse, dce, fuse, rowwise_sgd]


@dataclass(frozen=True)
class Artifacts:
    object_code: bytes
    llvm_ir: str  # after optimization
    native: Native
    cached: bool  # whether they came from the on-disk cache


def compile_program(program: Program, name: str, fit_spec: FitSpec | None,
                    target: Target) -> Artifacts:
    """The artifacts of a program, from the cache if an entry for exactly it is there."""
    key = cache_key(program, name, fit_spec, target)
    hit = cache.load(key)
    if hit is not None:
        native = Native.from_json(hit[2])
        if _calls_match(native.abi, program):
            return Artifacts(hit[0], hit[1], native, cached=True)
    artifacts = build(program, name, fit_spec, target)
    cache.store(key, artifacts.object_code, artifacts.llvm_ir, artifacts.native.to_json())
    return artifacts


def optimize(program: Program) -> Program:
    """The program after every pass of PASSES (each checked with DIFFC_CHECK=1)."""
    check = os.environ.get("DIFFC_CHECK", "0") != "0"
    for run_pass in PASSES:
        program = run_pass(program)
        if check:
            checked(program, run_pass.__name__)
    return program


def checked(program: Program, stage: str) -> Program:
    """program if it verifies, else a VerifyError naming the stage that made it."""
    try:
        verify(program)
    except VerifyError as e:
        raise VerifyError(f"after {stage}: {e}") from None
    return program


def build(program: Program, name: str, fit_spec: FitSpec | None, target: Target) -> Artifacts:
    """Every stage, uncached."""
    optimized = checked(optimize(program), "the passes")
    module, abi = codegen.build_module(optimized, name, target)
    fit_abi, rewrites = None, ()
    if fit_spec is not None:
        fit_abi, rewrites = _add_fit(module, abi, optimized, fit_spec, target)
    written = tuple(sorted(optimized.inputs.index(p) for p, _ in optimized.updates))
    native = Native(abi, label_bounds(optimized), written, fit_abi, tuple(rewrites),
                    literal_labels(optimized))
    for entry in native.packed():
        codegen.add_packed(module, entry)
    compiled = llvm.compile_module(module, target)
    return Artifacts(compiled.object_code, compiled.llvm_ir, native, cached=False)


def pool_key(target: Target) -> str:
    """The cache key of the worker pool's object code for target."""
    return cache.key("diffc worker pool", llvm.cache_context(target))


def pool_object(target: Target) -> bytes:
    """The object code of the worker pool (pool.py) for target, from the cache if it is there."""
    key = pool_key(target)
    hit = cache.load(key)
    if hit is not None:
        return hit[0]
    compiled = llvm.compile_module(pool.build(target), target)
    cache.store(key, compiled.object_code, compiled.llvm_ir, {})
    return compiled.object_code


def constant_object(symbol: str, data: bytes, target: Target) -> bytes:
    """The object code of a module defining only the constant byte array `symbol`."""
    return llvm.compile_module(codegen.constant_module(symbol, symbol, data), target).object_code


def cache_key(program: Program, name: str, fit_spec: FitSpec | None, target: Target) -> str:
    """The cache key of a program's code: name, fit loop and the printed program (as traced:
    no nested bodies yet), the types of its literals (which the printed form leaves out), and
    everything else the object code depends on."""
    atoms = [a for e in program.eqns for a in e.inputs] + list(program.outputs) + \
        [v for _, v in program.updates]
    literals = " ".join(str(a.type) for a in atoms if isinstance(a, Lit))
    text = f"{name}\n{fit_spec!r}\n{program}\nliterals: {literals}"
    return cache.key(text, llvm.cache_context(target))


def _calls_match(abi, program: Program) -> bool:
    """Whether cached code takes and returns the program's types: entries are bound to their
    key (cache.py), so this guards against a key text that misses something deciding them."""
    return (abi.inputs == tuple(v.type for v in program.inputs) and
            abi.outputs == tuple(a.type for a in program.outputs))


def _add_fit(module, abi, program: Program, spec: FitSpec, target: Target):
    data = {i for i, kind in enumerate(spec.kinds) if kind == SAMPLE}
    step_program, rewrites = fuse_across_steps(program, data)
    if rewrites:
        checked(step_program, "fuse_across_steps")
        step_abi, step_entry = codegen.add_entry(module, step_program, abi.entry + "_fitstep",
                                                 target, module.get_global(abi.parallel_hook))
    else:
        step_abi, step_entry = abi, module.get_global(abi.entry)
    build_fit(module, abi.fit_entry, step_abi, step_entry, spec, rewrites, target,
              module.get_global(abi.parallel_hook))
    return step_abi, rewrites
