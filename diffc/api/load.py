"""`diffc.load`: the user's object around an export, run with numpy and ctypes only.

Input: the path given to `export` (or one of its files' paths). Output: a `CompiledFunction`,
`GradFunction` or `TrainStep` (as the export's record says) calling the verified, loaded native
code (runtime/load.py).
"""
from __future__ import annotations

from ..runtime import load as loading
from .function import CompiledFunction
from .grad import GradFunction
from .train import TrainStep

KINDS = {"function": CompiledFunction, "grad": GradFunction, "train_step": TrainStep}


def load(path):
    """The exported function at `path` (as given to `export`, or the path of one of the files
    it wrote: `m`, `m.so` and `m.json` all load the export `m`), ready to call."""
    export = loading.load(path)
    return KINDS[export.record.kind].from_export(export)
