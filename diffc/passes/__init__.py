"""IR passes that need nothing but the IR and the primitives, `Program -> Program`.

They import only the IR and the primitives, so the front end can run them without importing
the compiler: `stable_forms` runs on every traced program (`function.py`), before AD. The
compiler's passes (fusion, memory planning, ...) are in `diffc/compiler/passes/`.
"""
from __future__ import annotations

from .stable import stable_forms

__all__ = ["stable_forms"]
