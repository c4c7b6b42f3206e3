"""LLVM: the target, the O3 pipeline with loop and SLP vectorization, object code, assembly,
and linking object code into the process.

Input: an `llvmlite.ir.Module` and a `Target`. Output: optimized LLVM IR text, position-
independent object code for the target's CPU, its assembly, and (for the host) the addresses of
object code linked into the process with LLJIT. The only module that uses `llvmlite.binding`.
Invariant: never calls `llvm.initialize()` (it raises in current llvmlite).
"""
from __future__ import annotations

import functools
import hashlib
import os
from dataclasses import dataclass

import llvmlite
import llvmlite.binding as llvm
from llvmlite import ir

from ..core import __version__
from .target import Target


@functools.cache
def host_target() -> Target:
    """The machine this process runs on."""
    llvm.initialize_native_target()
    llvm.initialize_native_asmprinter()
    return Target(llvm.get_process_triple(), llvm.get_host_cpu_name(),
                  llvm.get_host_cpu_features().flatten())


@functools.cache
def target_machine(target: Target) -> llvm.TargetMachine:
    host_target()  # initializes the native target and asm printer
    machine = llvm.Target.from_triple(target.triple)
    return machine.create_target_machine(cpu=target.cpu, features=target.features, opt=3,
                                         reloc="pic", codemodel="default")


@dataclass(frozen=True)
class Compiled:
    """The products of compiling one module."""

    llvm_ir: str  # after optimization
    object_code: bytes


def compile_module(module: ir.Module, target: Target) -> Compiled:
    """Verify, optimize at O3 (vectorizers on) for the target's CPU, and emit object code."""
    tm = target_machine(target)
    module.triple = tm.triple
    module.data_layout = str(tm.target_data)
    mod = llvm.parse_assembly(str(module))
    mod.verify()
    pto = llvm.create_pipeline_tuning_options(speed_level=3)
    pto.loop_vectorization = True
    pto.slp_vectorization = True
    pto.loop_unrolling = False  # full unrolling of static loops bloats code 6x for no speed-up
    pb = llvm.create_pass_builder(tm, pto)
    pb.getModulePassManager().run(mod, pb)
    return Compiled(str(mod), tm.emit_object(mod))


def assembly(optimized_llvm_ir: str, target: Target) -> str:
    """The assembly of optimized LLVM IR (made on demand: it costs as much as the object)."""
    return target_machine(target).emit_assembly(llvm.parse_assembly(optimized_llvm_ir))


def link(object_code: bytes, symbols: list[str], name: str, libc: bool = False):
    """Link object code (for the host) into the process with LLJIT; returns (keep-alive handle,
    addresses of `symbols`). With `libc`, its undefined symbols resolve to the process's (the
    worker pool calls pthread_create and syscall; compiled programs call nothing)."""
    builder = llvm.JITLibraryBuilder().add_object_img(object_code)
    if libc:
        builder.add_current_process()
    for s in symbols:
        builder.export_symbol(s)
    tracker = builder.link(llvm.create_lljit_compiler(target_machine(host_target())), name)
    return tracker, {s: tracker[s] for s in symbols}


@functools.cache
def source_digest() -> str:
    """The sha256 of diffc's own source: any change to the compiler invalidates the cache."""
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    h = hashlib.sha256()
    for folder, dirs, files in os.walk(root):  # top-down, in sorted order
        dirs.sort()
        for name in sorted(f for f in files if f.endswith(".py")):
            path = os.path.join(folder, name)
            h.update(os.path.relpath(path, root).encode() + b"\0")
            with open(path, "rb") as f:
                h.update(f.read())
    return h.hexdigest()


def cache_context(target: Target) -> dict:
    """Everything besides the program that decides the object code: a cache key's other half."""
    return {"llvmlite": llvmlite.__version__, "llvm": ".".join(map(str, llvm.llvm_version_info)),
            "diffc": __version__, "source": source_digest(), "triple": target.triple,
            "cpu": target.cpu, "features": target.features,
            "options": {"opt": 3, "reloc": "pic", "loop_unrolling": False}}
