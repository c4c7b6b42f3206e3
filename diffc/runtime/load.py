"""`diffc.load`: run exported code with numpy and ctypes only (no llvmlite, tracing or compiling).

Input: the path given to `export` (without extension). Output: the same kind of callable that
was exported (function, gradient, train step) with the same calling convention and argument
validation, built from `path.json` and calling into `path.so`.
"""
from __future__ import annotations

import ctypes
import json
import os

from ..errors import DiffcError
from ..types import Param, Signature
from .abi import Native, type_from_json
from .call import Invoker


class LoadedProgram:
    """Exported native code in a shared library, with the `CompiledProgram` interface."""

    def __init__(self, meta: dict, library: ctypes.CDLL):
        self.native = native = Native.from_json(meta)
        self.library = library
        self.addresses = {s: ctypes.cast(getattr(library, s), ctypes.c_void_p).value
                          for s in native.symbols()}
        self.invoker = Invoker(native, signature_from_json(meta), self.addresses)

    @property
    def llvm_ir(self) -> str:
        raise DiffcError("loaded code has no LLVM IR: it was compiled before export")

    asm = llvm_ir

    def __call__(self, *args, **kwargs) -> list:
        return self.invoker(*args, **kwargs)


def signature_from_json(meta: dict) -> Signature:
    return Signature(tuple(Param(p["name"], type_from_json(p)) for p in meta["params"]),
                     type_from_json(meta["result"]))


def load(path: str):
    """The exported function at `path` (as given to `export`), ready to call."""
    from ..function import CompiledFunction
    from ..train import TrainStep
    from ..transforms import GradFunction
    for ext in (".json", ".so"):
        if not os.path.exists(path + ext):
            raise DiffcError(f"diffc.load: {path + ext} does not exist (export writes the .so "
                             f"only where a C compiler is found)")
    with open(path + ".json") as f:
        meta = json.load(f)
    program = LoadedProgram(meta, ctypes.CDLL(os.path.abspath(path + ".so")))
    kinds = {"function": CompiledFunction, "grad": GradFunction, "train_step": TrainStep}
    return kinds[meta["kind"]]._restore(meta, program)
