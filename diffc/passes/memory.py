"""Memory planning: where every value of a program lives.

Input: a program after fusion. Output: a `MemoryPlan` giving each var a home: an input buffer,
an output buffer, or a slot of one 64-byte aligned workspace arena.
- An output computed by an equation is computed straight into the caller's output buffer.
- An update `param <- new` is computed straight into the param's buffer when `new` comes from
  an elementwise (or fused elementwise) equation that reads the param at the same index it
  writes, and every other read of the param comes earlier: the update then costs no copy, and a
  fused weight update `W - lr * outer(g, x)` never materializes the gradient.
- A `view` (a reshape: the same elements in the same order) lives in its input's buffer, so it
  costs no copy, unless it is an output or an update's value (those need their own buffers).
  Its input's buffer then lives until the view's last read, and a read of the view counts as a
  read of that buffer's value (its root) wherever reads matter. Codegen emits no kernel for it.
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
    root = _view_roots(program)
    last_use = _last_uses(program, root)
    for param, new in program.updates:
        producer = _in_place_producer(program, param, new, root)
        if producer is not None and id(new) not in plan.home:
            plan.home[id(new)] = plan.home[id(param)]
            plan.in_place.add(id(new))
    free: dict[ArrayType, list[int]] = {}
    for index, e in enumerate(program.eqns):
        for v in e.outputs:
            if id(v) in root:
                plan.home[id(v)] = plan.home[id(root[id(v)])]
            elif id(v) not in plan.home:
                reusable = free.get(v.type)
                slot = reusable.pop() if reusable else _new_slot(plan, v.type)
                plan.home[id(v)] = ("slot", slot)
        for v in {id(a): a for a in (*e.inputs, *e.outputs) if isinstance(a, Var)}.values():
            kind, slot = plan.home[id(v)]
            if kind == "slot" and id(v) not in root and last_use.get(id(v), index) == index:
                free.setdefault(v.type, []).append(slot)
    inputs = {id(v) for v in program.inputs}
    for _, new in program.updates:
        if isinstance(new, Var) and id(new) in inputs and id(new) not in plan.staging:
            plan.staging[id(new)] = _new_slot(plan, new.type)
    return plan


def _new_slot(plan: MemoryPlan, t: ArrayType) -> int:
    plan.slots.append(t)
    return len(plan.slots) - 1


def _view_roots(program: Program) -> dict[int, Var]:
    """Each view that lives in another value's buffer -> that value (not itself a view)."""
    own = {id(a) for a in program.outputs} | {id(v) for _, v in program.updates}
    root: dict[int, Var] = {}
    for e in program.eqns:
        if e.prim.view and isinstance(e.inputs[0], Var) and id(e.outputs[0]) not in own:
            root[id(e.outputs[0])] = root.get(id(e.inputs[0]), e.inputs[0])
    return root


def _last_uses(program: Program, root: dict[int, Var]) -> dict[int, int]:
    """Var id -> the index of the last equation reading it (a view's reads are its root's)."""
    last = {}
    for index, e in enumerate(program.eqns):
        last.update((id(root.get(id(a), a)), index) for a in e.inputs if isinstance(a, Var))
    last.update((id(a), END) for a in program.outputs if isinstance(a, Var))
    last.update((id(v), END) for _, v in program.updates if isinstance(v, Var))
    return last


def _in_place_producer(program: Program, param: Var, new, root) -> Eqn | None:
    """The equation that may write `new` into `param`'s buffer, or None."""
    if not isinstance(new, Var) or param.type.ndim == 0 or any(
            a is param or a is new for a in program.outputs):
        return None
    index = next((i for i, e in enumerate(program.eqns) if new in e.outputs), None)
    if index is None:
        return None
    e = program.eqns[index]
    reads = [root.get(id(a), a) is param for a in e.inputs]  # through views too
    if not _reads_at_write_index(e, param, reads):
        return None
    earlier_reads_only = all(i <= index for i, other in enumerate(program.eqns)
                             if any(root.get(id(a), a) is param for a in other.inputs))
    return e if earlier_reads_only else None


def _reads_at_write_index(e: Eqn, param: Var, reads: list[bool]) -> bool:
    """Whether e can write its output over param: it does not read param, or reads it only
    at the index it writes (elementwise, or row by row for the weights of the SGD kernels).
    `reads` says which of e's inputs are param's buffer (param or a view of it)."""
    if not any(reads):
        return True
    if any(r and a is not param for r, a in zip(reads, e.inputs, strict=True)):
        return False  # a view of param: another shape, so read at other indices
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
