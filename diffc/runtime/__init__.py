"""The runtime: the calling convention (abi), argument checks and native calls (call, native,
fit), the compiled-code cache, and writing and reading exports. numpy and ctypes only: it
loads and calls native code, never compiles it, and imports neither the compiler nor llvmlite."""
