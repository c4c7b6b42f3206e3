"""IR passes that need nothing but the IR and the primitives, `Program -> Program`.

They sit below the front end's user objects and the compiler, so that tracing and AD can use
them: `stable_forms` runs on every traced program. The compiler's own passes (fusion, memory)
are in `diffc/compiler/passes/`.
"""
from __future__ import annotations

from .stable import stable_forms

__all__ = ["stable_forms"]
