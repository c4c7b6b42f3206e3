"""IR passes, `Program -> Program`, run in the order of `PIPELINE`.

Invariant: each pass returns a program that `verify` accepts and that computes the same outputs
and updates as its input (tests check both after every pass).
"""
from __future__ import annotations

from ...ir import Program
from .cse import cse
from .dce import dce
from .fuse import fuse
from .sgd import rowwise_sgd
from .transpose import fold_transposes

# then codegen's plan_memory (memory.py) places every value; fit's step program also goes
# through crossstep.py
PIPELINE = [fold_transposes, cse, dce, fuse, rowwise_sgd]


def optimize(program: Program) -> Program:
    for run_pass in PIPELINE:
        program = run_pass(program)
    return program
