"""The gradient program of one process's share of a batch, for data-parallel training.

Input: a traced program with one floating-point scalar output (a batch's mean loss), the
indices of its params and their dtype. Output: `weighted_grad_program`, a program with the same
inputs plus a scalar `weight` (last), computing (weight * loss, weight * gradient of the loss
for each param), the weighted loss in the params' dtype.
Why: with weight = (this process's rows) / (the global batch's rows), the sum of these outputs
over the processes is the global batch's mean loss and its gradient, so one all-reduce of them
gives what a single process computes on the whole batch (up to the order of the summation).
"""
from __future__ import annotations

from ..core.ir import Program, Var
from ..core.structural import convert_element_type_p
from ..core.trace import TraceContext, bind
from ..core.tracer import Tracer, replay
from ..core.types import ArrayType, DType
from .ad import vjp


def weighted_grad_program(program: Program, param_indices: list[int], dtype: DType) -> Program:
    """(weight * loss, *(weight * d loss / d param)) with `weight` an extra last input."""
    ctx = TraceContext()
    inputs = [Var(v.type) for v in program.inputs]
    (loss_type,) = [a.type for a in program.outputs]
    weight = Var(ArrayType(loss_type.dtype, ()))
    _, (loss,) = replay(ctx, program, [Tracer(ctx, v) for v in inputs])
    weighted = Tracer(ctx, weight) * (loss if isinstance(loss, Tracer) else loss.value)
    if loss_type.dtype != dtype:  # one buffer of the params' dtype carries loss and gradients
        weighted = bind(convert_element_type_p, weighted, dtype=dtype)
    return vjp(Program(tuple(inputs) + (weight,), ctx.eqns, (weighted.var,)), param_indices)
