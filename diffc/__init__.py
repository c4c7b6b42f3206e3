"""diffc: differentiable functions compiled ahead of time to native code through LLVM.

The package is built in layers, each folder importing only those below it (docs/architecture.md):
core (types, IR, primitives, tracing) -> transforms (AD, optimizers, nn) -> passes -> runtime
(calling, caching, exporting and loading native code) -> compiler -> api (the user's objects).
"""
from . import distributed, nn
from .api.function import CompiledFunction, Function, function
from .api.grad import GradFunction, check_grad, grad, value_and_grad
from .api.load import load
from .api.threads import get_num_threads, set_num_threads
from .api.train import TrainStep, train_step
from .core import __version__
from .core.errors import (
    ArgumentError,
    DiffcError,
    DTypeError,
    ShapeError,
    SignatureError,
    TraceError,
)
from .core.ir import eval_program, verify
from .core.types import Array, f32, f64, i32, i64
from .transforms.optim import SGD, Adam

__all__ = ["nn", "Array", "f32", "f64", "i32", "i64", "function", "Function", "CompiledFunction",
           "GradFunction", "eval_program", "verify", "grad", "value_and_grad", "check_grad",
           "train_step", "TrainStep", "SGD", "Adam", "load", "DiffcError", "SignatureError",
           "ShapeError", "DTypeError", "TraceError", "ArgumentError", "set_num_threads",
           "get_num_threads", "__version__", "distributed"]
