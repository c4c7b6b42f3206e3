"""`train_step`: loss, gradients and optimizer update compiled into one native function.

Input: a scalar-valued `Function`, the names of its params and an optimizer. Output: a
`TrainStep`, called like the function: it validates the arguments (params must be writable,
C-contiguous and of the declared dtype), runs one native call that updates the params in place,
and returns the loss before the update. It owns the optimizer state and the step count;
`lr` is passed at every call, so setting `step.lr` needs no recompiling.
"""
from __future__ import annotations

import numpy as np

from .ad import vjp
from .errors import SignatureError
from .function import CompiledFunction
from .optim import SGD, train_program
from .transforms import _as_function, _wrt_names
from .types import ArrayType, Param, Signature


class TrainStep(CompiledFunction):
    def __init__(self, f, params, optimizer=None):
        f = _as_function(f)
        if isinstance(params, str) or params is None:
            raise SignatureError(f"train_step: params must be a sequence of parameter names, "
                                 f"got {params!r}")
        self.params, _ = _wrt_names(f, params)
        self.optimizer = optimizer if optimizer is not None else SGD(lr=0.01)
        indices = [f.signature.names.index(n) for n in self.params]
        for n in self.params:
            if f.signature.param(n).type.symbols:
                raise SignatureError(f"train_step: param {n!r} has symbolic dims "
                                     f"({f.signature.param(n).type}); params need static shapes")
        program = train_program(vjp(f.program, indices), indices, self.optimizer)
        self.function = f
        self._state = [np.zeros(f.signature.param(n).type.shape,
                                f.signature.param(n).type.dtype.np_dtype)
                       for n in self.params for _ in self.optimizer.state_names]
        scalar = ArrayType(f.signature.param(self.params[0]).type.dtype, ())
        extra = [Param("lr", scalar), Param("t", scalar)] + [
            Param(f"{n}.{s}", f.signature.param(n).type)
            for n in self.params for s in self.optimizer.state_names]
        signature = Signature(f.signature.params + tuple(extra), f.signature.result)
        super().__init__(f"train_step_{f.name}", signature, program)
        self.user_signature = f.signature
        self.lr = self.optimizer.lr
        self.steps = 0  # the number of updates applied since construction or reset()

    @property
    def lr(self) -> float:
        return self._lr

    @lr.setter
    def lr(self, value) -> None:
        if isinstance(value, bool) or not isinstance(value, int | float | np.floating) or \
                not value >= 0:
            raise ValueError(f"lr must be a number >= 0, got {value!r}")
        self._lr = float(value)

    def reset(self) -> None:
        """Zero the optimizer state and the step count."""
        for s in self._state:
            s.fill(0)
        self.steps = 0

    def __call__(self, *args, **kwargs) -> float:
        compiled = self._compiled or self.compile()._compiled
        values = compiled.invoker.bind(args, kwargs, len(self.user_signature.params))
        (loss,) = compiled(*values, self._lr, self.steps + 1, *self._state)
        self.steps += 1
        return loss


def train_step(f, params, optimizer=None) -> TrainStep:
    """One native function: loss, gradients and the optimizer update of `params` (in place)."""
    return TrainStep(f, params, optimizer)
