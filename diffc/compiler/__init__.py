"""The compiler: a program to object code for a `Target` (pipeline.py lists the stages).

`codegen`, `kernels`, `fused`, `gemm`, `scalar`, `loops` and `fitloop` build `llvmlite.ir`;
`llvm.py` is the only user of `llvmlite.binding`. The code targets the runtime's ABI.
"""
