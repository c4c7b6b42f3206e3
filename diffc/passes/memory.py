"""Memory planning: where every value of a program lives.

Input: a program after fusion. Output: a `MemoryPlan` giving each var a home: an input buffer,
an output buffer, or a slot of one 64-byte aligned workspace arena.
- An output computed by an equation is computed straight into the caller's output buffer.
- An update `param <- new` is computed straight into the param's buffer when `new` comes from
  an elementwise (or fused elementwise) equation that reads the param at the same index it
  writes, and every other read of the param comes earlier: the update then costs no copy, and a
  fused weight update `W - lr * outer(g, x)` never materializes the gradient.
- Other values take workspace slots; a slot is reused, once its value is dead, by a later value
  of the same dtype and shape (liveness over equation order). Slots are freed after the equation
  that last reads them, so no equation writes a slot it reads.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..core.ir import Eqn, Program, Var
from ..core.linalg import matmul_p
from ..core.types import ArrayType
from .primitives import fused_p

END = 1 << 60  # "used after the last equation": outputs and update values


@dataclass
class MemoryPlan:
    home: dict[int, tuple[str, int]] = field(default_factory=dict)  # ("input"|"output"|"slot", k)
    slots: list[ArrayType] = field(default_factory=list)
    in_place: set[int] = field(default_factory=set)  # update values computed in their param
    staging: dict[int, int] = field(default_factory=dict)  # input-valued update -> its slot


def plan_memory(program: Program) -> MemoryPlan:
    plan = MemoryPlan()
    for i, v in enumerate(program.inputs):
        plan.home[id(v)] = ("input", i)
    for j, a in enumerate(program.outputs):
        if isinstance(a, Var) and id(a) not in plan.home:
            plan.home[id(a)] = ("output", j)
    last_use = _last_uses(program)
    for param, new in program.updates:
        producer = _in_place_producer(program, param, new, last_use)
        if producer is not None and id(new) not in plan.home:
            plan.home[id(new)] = plan.home[id(param)]
            plan.in_place.add(id(new))
    free: dict[ArrayType, list[int]] = {}
    for index, e in enumerate(program.eqns):
        for v in e.outputs:
            if id(v) not in plan.home:
                reusable = free.get(v.type)
                slot = reusable.pop() if reusable else _new_slot(plan, v.type)
                plan.home[id(v)] = ("slot", slot)
        for v in {id(a): a for a in (*e.inputs, *e.outputs) if isinstance(a, Var)}.values():
            kind, slot = plan.home[id(v)]
            if kind == "slot" and last_use.get(id(v), index) == index:
                free.setdefault(v.type, []).append(slot)
    inputs = {id(v) for v in program.inputs}
    for _, new in program.updates:
        if isinstance(new, Var) and id(new) in inputs and id(new) not in plan.staging:
            plan.staging[id(new)] = _new_slot(plan, new.type)
    return plan


def _new_slot(plan: MemoryPlan, t: ArrayType) -> int:
    plan.slots.append(t)
    return len(plan.slots) - 1


def _last_uses(program: Program) -> dict[int, int]:
    last = {}
    for index, e in enumerate(program.eqns):
        last.update((id(a), index) for a in e.inputs if isinstance(a, Var))
    last.update((id(a), END) for a in program.outputs if isinstance(a, Var))
    last.update((id(v), END) for _, v in program.updates if isinstance(v, Var))
    return last


def _in_place_producer(program: Program, param: Var, new, last_use) -> Eqn | None:
    """The equation that may write `new` into `param`'s buffer, or None."""
    if not isinstance(new, Var) or param.type.ndim == 0 or any(
            a is param or a is new for a in program.outputs):
        return None
    index = next((i for i, e in enumerate(program.eqns) if new in e.outputs), None)
    if index is None:
        return None
    e = program.eqns[index]
    if not _reads_at_write_index(e, param):
        return None
    earlier_reads_only = all(i <= index for i, other in enumerate(program.eqns)
                             if any(a is param for a in other.inputs))
    return e if earlier_reads_only else None


def _reads_at_write_index(e: Eqn, param: Var) -> bool:
    """Whether e can write its output over param: it does not read param, or reads it only
    at the index it writes (elementwise, or row by row for the weights of the SGD kernels)."""
    if not any(a is param for a in e.inputs):
        return True
    if e.prim.rowwise:
        return e.inputs[0] is param and not any(a is param for a in e.inputs[1:])
    if e.prim.elementwise:
        return all(v.type.shape == param.type.shape for v in e.outputs)
    if e.prim is not fused_p:
        return False
    body = e.params["body"]
    inner = {id(b) for a, b in zip(e.inputs, body.inputs, strict=True) if a is param}
    for be in body.eqns:
        if (be.prim.indexed or be.prim is matmul_p) and any(id(a) in inner for a in be.inputs):
            return False
    return all(v.type.shape == param.type.shape for v in e.outputs)
