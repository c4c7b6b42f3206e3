"""`@diffc.function`: a typed Python function traced ahead of time and compiled on demand.

Input: a function with diffc annotations. Output: a `Function` holding its `Signature` and traced
`Program`; native code is built by `.compile()` or the first call (through `diffc.compiler`,
imported then: `import diffc` and `diffc.load` need no llvmlite).
Invariants: tracing happens once, at decoration, and the traced program is put in stable form
(`passes/stable.py`: `log(softmax(z))` as `log_softmax(z)`, ...) before anything uses it;
called with traced values (inside another traced function) a `Function` is inlined, its
argument types checked against its signature.
`CompiledFunction` is what every compiled callable shares: a `Record` saying what it is (what
export writes and load reads back), its program, and its native code.
"""
from __future__ import annotations

import functools

import numpy as np

from ..core import __version__
from ..core.errors import ArgumentError, DTypeError, ShapeError, SignatureError, TraceError
from ..core.ir import Program
from ..core.trace import at_user, is_number
from ..core.tracer import Tracer, as_result, trace_program
from ..core.types import ArrayType, signature_of
from ..passes import stable_forms
from ..runtime import export as exporting
from ..runtime.call import NativeProgram, bind_arguments
from ..runtime.load import Export
from ..runtime.record import Record, fit_spec
from .threads import start_pool


class CompiledFunction:
    """A compiled callable: its record, its program (None when loaded from an export) and its
    native code, built on `.compile()` or the first call."""

    def __init__(self, record: Record, program: Program | None):
        self.record, self.name, self.program = record, record.name, program
        self._native: NativeProgram | None = None
        self._artifacts = None  # the compiler's products (None when loaded from an export)
        self._ir_text = None  # the IR of code loaded from an export (there is no program)
        self._target = None  # what to compile for: None is the host

    @classmethod
    def from_program(cls, program: Program, signature, name: str,
                     target=None) -> CompiledFunction:
        """A program built by hand or by a transform, compiled like a traced function's (for
        compiler engineers: `signature` names and types the program's inputs and output;
        `target`, a `compiler.target.Target` this host can run, default the host)."""
        obj = cls(Record("function", name, signature, signature), program)
        obj._target = target
        return obj

    @classmethod
    def from_export(cls, export: Export) -> CompiledFunction:
        """An object of this class around loaded code (`diffc.load`): nothing is traced."""
        obj = cls.__new__(cls)
        CompiledFunction.__init__(obj, export.record, None)
        obj._native, obj._ir_text = export.program, export.ir
        return obj

    @property
    def signature(self):
        """The signature callers use (a train step's entry also takes lr and state)."""
        return self.record.signature

    @property
    def ir(self) -> str:
        """The IR as text, one equation per line."""
        return self._ir_text if self.program is None else str(self.program)

    def compile(self):
        """Build native code now (it is otherwise built on the first call); returns self."""
        if self._native is None:
            from ..compiler import llvm, pipeline  # imports llvmlite: only now
            target = self._target or llvm.host_target()
            artifacts = pipeline.compile_program(self.program, self.name, fit_spec(self.record),
                                                 target)
            start_pool()  # before NativeProgram, which points the program's hook at it
            handle, addresses = llvm.link(artifacts.object_code, artifacts.native.symbols(),
                                          artifacts.native.abi.entry)
            self._native = NativeProgram(artifacts.native, self.record.entry, addresses, handle)
            self._artifacts = artifacts
        return self

    @property
    def native(self) -> NativeProgram:
        """The native code in this process and how it is called (compiled on first use)."""
        return self._native or self.compile()._native

    @property
    def artifacts(self):
        """The compiler's products: object code, optimized LLVM IR, the `Native` description
        and whether they came from the on-disk cache (for code compiled in this process)."""
        if self.compile()._artifacts is None:
            raise ArgumentError(f"{self.name}: loaded code has no compiler artifacts: it was "
                                f"compiled before export")
        return self._artifacts

    @property
    def llvm_ir(self) -> str:
        """The optimized LLVM IR of the native code."""
        return self.artifacts.llvm_ir

    @property
    def asm(self) -> str:
        """The native assembly of the compiled code."""
        from ..compiler import llvm
        return llvm.assembly(self.artifacts.llvm_ir, self._target or llvm.host_target())

    def export(self, path: str) -> list[str]:
        """Write path.o, path.h, path.json (and path.so where a C compiler exists)."""
        return self._export(path, self.record)

    def _export(self, path: str, record: Record) -> list[str]:
        from ..compiler import llvm, pipeline
        artifacts = self.artifacts
        meta = exporting.metadata(record, artifacts.native, self.ir, __version__)
        return exporting.export(path, meta, artifacts.object_code, lambda symbol, data: (
            pipeline.constant_object(symbol, data, llvm.host_target())))

    def __call__(self, *args, **kwargs):
        """The program's output: a Python float for a scalar, a new array otherwise (a tuple
        of them for a program with several)."""
        outputs = (self._native or self.compile()._native)(*args, **kwargs)
        return outputs[0] if len(outputs) == 1 else tuple(outputs)

    def __repr__(self) -> str:
        return f"<diffc.{type(self).__name__} {self.name}{self.signature}>"


class Function(CompiledFunction):
    """A traced function; calling it runs native code (compiled on first use)."""

    def __init__(self, fn, name: str | None = None):
        if name is not None and not isinstance(name, str):
            raise SignatureError(f"name: expected a str, got {type(name).__name__} {name!r}")
        functools.update_wrapper(self, fn)
        self.fn = fn
        signature = signature_of(fn)
        program = stable_forms(trace_program(fn, signature))  # before AD sees it
        name = name or fn.__name__
        super().__init__(Record("function", name, signature, signature), program)

    def __call__(self, *args, **kwargs):
        for a in args + tuple(kwargs.values()):
            if isinstance(a, Tracer):
                return self._inline(args, kwargs)
        return super().__call__(*args, **kwargs)

    def _inline(self, args, kwargs):
        """Trace the body into the caller's trace, checking argument types like a call does."""
        try:
            bound = bind_arguments(self.signature.names, args, kwargs)
        except ArgumentError as e:
            raise at_user(TraceError, f"{self.name}: {e}") from None
        symbols: dict[str, object] = {}
        ctx = next(a.ctx for a in bound if isinstance(a, Tracer))
        for p, a in zip(self.signature.params, bound, strict=True):
            if is_number(a) and p.type.ndim == 0 and (p.type.dtype.is_float or
                                                       isinstance(a, int | np.integer)):
                continue  # a constant for a scalar parameter: the body sees the number
            if not isinstance(a, Tracer):
                raise at_user(TraceError, f"{self.name}: parameter {p.name!r} expects a "
                                           f"traced {p.type} value or a number, got "
                                           f"{type(a).__name__}")
            if a.dtype != p.type.dtype:
                raise at_user(DTypeError, f"{self.name}: parameter {p.name!r} expects "
                                           f"{p.type}, got {a.type}")
            if not _fits(p.type.shape, a.type.shape, symbols):
                raise at_user(ShapeError, f"{self.name}: parameter {p.name!r} expects "
                                           f"{p.type}, got {a.type}")
        result = self.fn(*bound)
        expected = self.signature.result
        expected = ArrayType(expected.dtype, tuple(symbols.get(d, d) if isinstance(d, str) else d
                                                   for d in expected.shape))
        return Tracer(ctx, as_result(result, expected, ctx, self.fn)) if isinstance(
            result, Tracer) else result


def _fits(declared: tuple, actual: tuple, symbols: dict) -> bool:
    """Whether a traced shape matches a declared one, binding its symbolic dims in `symbols`
    (a symbol's first use binds it, later uses must agree)."""
    if len(declared) != len(actual):
        return False
    for d, s in zip(declared, actual, strict=True):
        if isinstance(d, str):
            d = symbols.setdefault(d, s)
        if d != s:
            return False
    return True


def function(fn=None, *, name: str | None = None):
    """Decorator: trace `fn` now into diffc IR; compile it on `.compile()` or the first call."""
    if fn is None:
        return lambda f: Function(f, name=name)
    return Function(fn, name=name)
