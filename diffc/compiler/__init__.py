"""The compiler: IR passes, lowering to llvmlite IR, and LLVM code generation.

`diffc.compiler.passes` and `codegen` are pure Python over `llvmlite.ir`; `llvm.py` is the only
user of `llvmlite.binding`.
"""
