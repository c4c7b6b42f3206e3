"""`@diffc.function`: a typed Python function traced ahead of time and compiled on demand.

Input: a function with diffc annotations. Output: a `Function` holding its `Signature` and traced
`Program`; native code is built by `.compile()` or the first call (through `diffc.runtime`).
Invariants: tracing happens once, at decoration, and the traced program is put in stable form
(`passes/stable.py`: `log(softmax(z))` as `log_softmax(z)`, ...) before anything uses it;
called with traced values (inside another traced function) a `Function` is inlined, its
argument types checked against its signature.
`CompiledFunction` is what every compiled callable shares (transforms build on it).
"""
from __future__ import annotations

import functools

import numpy as np

from .errors import ArgumentError, DTypeError, ShapeError, SignatureError, TraceError
from .ir import Program
from .passes import stable_forms
from .runtime.call import bind_arguments
from .trace import Tracer, _at_user, _is_number, as_result, trace_program
from .types import ArrayType, Signature, signature_of


class CompiledFunction:
    """A named program with a signature; native code is built on `.compile()` or first call."""

    def __init__(self, name: str, signature: Signature, program: Program | None):
        self.name, self.program = name, program
        self._entry_signature = signature  # of the native entry: the program's inputs
        self._compiled = None
        self._ir_text = None  # the IR of code loaded from an export (there is no program)

    @property
    def signature(self) -> Signature:
        """The signature callers use (a train step's entry also takes lr and state)."""
        return self._entry_signature

    @property
    def ir(self) -> str:
        """The IR as text, one equation per line."""
        return self._ir_text if self.program is None else str(self.program)

    def export(self, path: str) -> list[str]:
        """Write path.o, path.h, path.json (and path.so where a C compiler exists)."""
        from .runtime.export import export  # imports llvmlite (through compile)
        return export(self, path)

    def _export_kind(self) -> str:
        return "function"

    def _export_options(self) -> dict:
        """What `_restore` needs, besides the signature, to rebuild this object."""
        return {}

    @classmethod
    def _restore(cls, meta: dict, program):
        """An object of this class around loaded code (`diffc.load`): nothing is traced."""
        from .runtime.load import signature_from_json
        obj = cls.__new__(cls)
        CompiledFunction.__init__(obj, meta["name"], signature_from_json(meta), None)
        obj._compiled, obj._ir_text = program, meta["ir"]
        obj._restore_options(meta["options"])
        return obj

    def _restore_options(self, options: dict) -> None:
        pass

    def compile(self):
        """Build native code now (it is otherwise built on the first call); returns self."""
        if self._compiled is None:
            from .runtime.compiled import CompiledProgram  # imports llvmlite: only now
            self._compiled = CompiledProgram(self.program, self._entry_signature, self.name,
                                             **self._compile_options())
        return self

    def _compile_options(self) -> dict:
        return {}

    @property
    def llvm_ir(self) -> str:
        """The optimized LLVM IR of the native code."""
        return self.compile()._compiled.llvm_ir

    @property
    def asm(self) -> str:
        """The native assembly of the compiled code."""
        return self.compile()._compiled.asm

    def __call__(self, *args, **kwargs):
        compiled = self._compiled or self.compile()._compiled
        return self._results(compiled(*args, **kwargs))

    def _results(self, outputs: list):
        """The call's return value made from the program's outputs."""
        (out,) = outputs
        return out

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
        super().__init__(name or fn.__name__, signature, program)

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
            raise _at_user(TraceError, f"{self.name}: {e}") from None
        symbols: dict[str, object] = {}
        ctx = next(a.ctx for a in bound if isinstance(a, Tracer))
        for p, a in zip(self.signature.params, bound, strict=True):
            if _is_number(a) and p.type.ndim == 0 and (p.type.dtype.is_float or
                                                       isinstance(a, int | np.integer)):
                continue  # a constant for a scalar parameter: the body sees the number
            if not isinstance(a, Tracer):
                raise _at_user(TraceError, f"{self.name}: parameter {p.name!r} expects a "
                                           f"traced {p.type} value or a number, got "
                                           f"{type(a).__name__}")
            if a.dtype != p.type.dtype:
                raise _at_user(DTypeError, f"{self.name}: parameter {p.name!r} expects "
                                           f"{p.type}, got {a.type}")
            if not _fits(p.type.shape, a.shape, symbols):
                raise _at_user(ShapeError, f"{self.name}: parameter {p.name!r} expects "
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
