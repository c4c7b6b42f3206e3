"""diffc: differentiable functions compiled ahead of time to native code through LLVM."""
from . import nn
from .errors import ArgumentError, DiffcError, DTypeError, ShapeError, SignatureError, TraceError
from .function import Function, function
from .ir import eval_program, verify
from .optim import SGD, Adam
from .runtime.load import load
from .train import TrainStep, train_step
from .transforms import check_grad, grad, value_and_grad
from .types import Array, f32, f64, i32, i64

__version__ = "0.1.0"

__all__ = ["nn", "Array", "f32", "f64", "i32", "i64", "function", "Function", "eval_program",
           "verify", "grad", "value_and_grad", "check_grad", "train_step", "TrainStep", "SGD",
           "Adam", "load", "DiffcError", "SignatureError", "ShapeError", "DTypeError",
           "TraceError", "ArgumentError"]
