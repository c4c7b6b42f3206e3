"""The machine code is generated for: a `Target` value, given to the compiler.

The compiler never asks the host what it is: `llvm.host_target()` reads the host once (the API
layer calls it) and everything below takes the `Target` it is handed, so that code for another
vector width (AVX2, SSE) can be generated and tested on any machine.
"""
from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Target:
    triple: str
    cpu: str
    features: str  # LLVM's comma-separated +feature/-feature list

    @property
    def vector_registers(self) -> tuple[int, int]:
        """(bytes per vector register, number of them): what kernels block for."""
        features = set(self.features.split(","))
        if "+avx512f" in features:
            return 64, 32
        return (32, 16) if "+avx" in features else (16, 16)

    def lanes(self, itemsize: int) -> int:
        """How many elements of `itemsize` bytes one vector register holds."""
        return self.vector_registers[0] // itemsize
