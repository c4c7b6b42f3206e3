"""The runtime: validate arguments, call native code, (later) cache and export it.

`call.py` needs only numpy and ctypes (it also serves code loaded from an export);
`compiled.py` builds native code through `diffc.compiler` and so imports llvmlite.
"""
from .call import Invoker, label_bounds
from .compiled import CompiledProgram

__all__ = ["CompiledProgram", "Invoker", "label_bounds"]
