"""Optimizers as IR: the update of each parameter appended to a gradient program.

Input: the program of `ad.vjp` (loss, then one gradient per param) and an optimizer.
Output: the train-step program. Its inputs are the function's inputs, then `lr` (a runtime
scalar), then the step's state: `step_count` (f64[1], the number of updates applied, exact to
2**53 whatever the params' dtype) and the optimizer state (one array per param and state slot).
Its output is the loss; its `updates` replace each param and state array with its new value and
the count with count + 1, in place: one native call applies an update and counts it, so nothing
(an interrupt, another thread) can separate the two. The update rules see `t = count + 1` (the
1-based step number, in the params' dtype) and are exactly torch.optim's SGD and Adam
(dampening 0, no amsgrad): state starts at zero, and SGD's zero momentum buffer makes torch's
first step `buf = g` fall out.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from ..core.elementwise import elementwise
from ..core.errors import ArgumentError, SignatureError
from ..core.ir import Lit, Program, Var
from ..core.structural import convert_element_type_p, reshape_p
from ..core.trace import TraceContext, bind, is_finite_number, is_number
from ..core.tracer import Tracer, replay
from ..core.types import ArrayType, DType, f64

STEP_COUNT = ArrayType(f64, (1,))  # the type of a train step's update count


@dataclass(frozen=True)  # hyperparameters; the learning rate in use is the step's `lr`
class SGD:
    """torch.optim.SGD: p -= lr * (g + wd p), with optional (Nesterov) momentum."""

    lr: float
    momentum: float = 0.0
    nesterov: bool = False
    weight_decay: float = 0.0

    def __post_init__(self):
        _check_hyper(self, "lr", "momentum", "weight_decay")
        if not isinstance(self.nesterov, bool | np.bool_):
            raise ArgumentError(f"SGD: nesterov must be True or False, got "
                                f"{_short(self.nesterov)}")
        object.__setattr__(self, "nesterov", bool(self.nesterov))
        if self.nesterov and self.momentum <= 0:
            raise ArgumentError("SGD: nesterov needs momentum > 0")

    @property
    def state_names(self) -> tuple[str, ...]:
        return ("momentum_buffer",) if self.momentum else ()

    def update(self, p, g, state: list, lr, t) -> tuple:
        if self.weight_decay:
            g = g + self.weight_decay * p
        new_state = []
        if self.momentum:
            buf = self.momentum * state[0] + g
            g = g + self.momentum * buf if self.nesterov else buf
            new_state = [buf]
        return p - lr * g, new_state


@dataclass(frozen=True)
class Adam:
    """torch.optim.Adam (L2 weight decay added to the gradient, bias-corrected moments)."""

    lr: float = 1e-3
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = 1e-8
    weight_decay: float = 0.0

    def __post_init__(self):
        _check_hyper(self, "lr", "eps", "weight_decay")
        betas = self.betas
        pair = isinstance(betas, tuple | list) or isinstance(betas, np.ndarray) and betas.ndim == 1
        if not pair or len(betas) != 2 or not all(is_number(b) and 0 <= b < 1 for b in betas):
            raise ArgumentError(f"Adam: betas must be two numbers in [0, 1), got "
                                f"{_short(betas)}")
        object.__setattr__(self, "betas", (float(betas[0]), float(betas[1])))

    state_names = ("exp_avg", "exp_avg_sq")

    def update(self, p, g, state: list, lr, t) -> tuple:
        b1, b2 = self.betas
        if self.weight_decay:
            g = g + self.weight_decay * p
        m = b1 * state[0] + (1 - b1) * g
        v = b2 * state[1] + (1 - b2) * (g * g)
        correction1 = 1 - elementwise("exp", t * math.log(b1)) if b1 else 1.0  # 1 - b1**t
        correction2 = 1 - elementwise("exp", t * math.log(b2)) if b2 else 1.0
        denom = v ** 0.5 / correction2 ** 0.5 + self.eps
        return p - (lr / correction1) * (m / denom), [m, v]


def _short(v) -> str:
    return f"{type(v).__name__} {v!r}"[:60]


def _check_hyper(optimizer, *names: str) -> None:
    """Each named hyperparameter must be a finite number >= 0; it is stored as a float (numpy
    scalars too: the settings are exported as JSON)."""
    for k in names:
        v = getattr(optimizer, k)
        if not is_finite_number(v) or v < 0:
            raise ArgumentError(f"{type(optimizer).__name__}: {k} must be a finite number >= 0, "
                                f"got {_short(v)}")
        object.__setattr__(optimizer, k, float(v))


def train_program(grad_program: Program, param_indices: list[int], optimizer) -> Program:
    """Append the step count's and the optimizer's update of each param to a (loss, *grads)
    program."""
    dtype = _param_dtype([grad_program.inputs[i].type for i in param_indices])
    ctx = TraceContext()
    inputs = [Var(v.type) for v in grad_program.inputs]
    args = [Tracer(ctx, v) for v in inputs]
    _, (loss, *grads) = replay(ctx, grad_program, args)
    params = [(inputs[i], args[i]) for i in param_indices]
    state_inputs, updates = _append_update(ctx, params, grads, optimizer, dtype)
    return Program(tuple(inputs) + state_inputs, ctx.eqns,
                   (loss if isinstance(loss, Lit) else loss.var,), updates)


def update_program(param_types: list[ArrayType], optimizer) -> Program:
    """The update alone, as `train_program` appends it: inputs are the params, one gradient
    per param, then `lr`, `step_count` and the optimizer state; no outputs, the same updates.
    (Data-parallel training applies it to gradients summed across processes.)"""
    dtype = _param_dtype(param_types)
    ctx = TraceContext()
    params = [Var(t) for t in param_types]
    grads = [Var(t) for t in param_types]
    state_inputs, updates = _append_update(
        ctx, [(p, Tracer(ctx, p)) for p in params], [Tracer(ctx, g) for g in grads], optimizer,
        dtype)
    return Program(tuple(params) + tuple(grads) + state_inputs, ctx.eqns, (), updates)


def _param_dtype(types: list[ArrayType]) -> DType:
    """The one dtype the params share, or a SignatureError."""
    dtypes = {t.dtype for t in types}
    if len(dtypes) != 1:
        raise SignatureError(f"train_step: params must share one dtype, got "
                             f"{sorted(d.name for d in dtypes)}")
    return dtypes.pop()


def _append_update(ctx: TraceContext, params: list, grads: list, optimizer, dtype) -> tuple:
    """Trace the count's and each param's update into ctx. params: (input var, its traced
    value) pairs; grads: their traced gradients. Returns the new inputs (lr, step_count, the
    state arrays: per param, per state slot) and the updates."""
    lr, count = Var(ArrayType(dtype, ())), Var(STEP_COUNT)
    states = [[Var(p.type) for _ in optimizer.state_names] for p, _ in params]
    new_count = Tracer(ctx, count) + 1.0
    t = bind(reshape_p, new_count, shape=())
    if dtype != STEP_COUNT.dtype:
        t = bind(convert_element_type_p, t, dtype=dtype)
    updates = []
    for (p, value), g, state in zip(params, grads, states, strict=True):
        new_p, new_state = optimizer.update(value, g, [Tracer(ctx, s) for s in state],
                                            Tracer(ctx, lr), t)
        updates.append((p, new_p.var))
        updates.extend((s, n.var) for s, n in zip(state, new_state, strict=True))
    updates.append((count, new_count.var))
    return (lr, count) + tuple(s for st in states for s in st), tuple(updates)
