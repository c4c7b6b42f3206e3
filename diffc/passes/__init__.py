"""IR passes: pure `Program -> Program` functions (and the memory plan, a `Program ->
MemoryPlan` analysis), over the core's IR and primitives.

Each returns a program that `verify` accepts and that computes the same outputs and updates as
its input. `stable_forms` runs on every traced program, before AD; the rest run in the order of
`compiler/pipeline.py`'s `PASSES`. The primitives only passes make are in `primitives.py`.
"""
from __future__ import annotations

from .crossstep import CrossStep, fuse_across_steps
from .cse import cse
from .dce import dce
from .fuse import fuse
from .memory import MemoryPlan, plan_memory
from .sgd import rowwise_sgd
from .stable import stable_forms
from .transpose import fold_transposes

__all__ = ["CrossStep", "MemoryPlan", "cse", "dce", "fold_transposes", "fuse",
           "fuse_across_steps", "plan_memory", "rowwise_sgd", "stable_forms"]
