"""The runtime: validate arguments, call native code, (later) cache and export it.

`call.py` needs only numpy and ctypes (it also serves code loaded from an export);
`compiled.py` builds native code through `diffc.compiler` and so imports llvmlite: it is
imported only when something is compiled.
"""


def __getattr__(name: str):
    if name == "CompiledProgram":  # loaded on first use, with llvmlite
        from .compiled import CompiledProgram
        return CompiledProgram
    raise AttributeError(f"module 'diffc.runtime' has no attribute {name!r}")
