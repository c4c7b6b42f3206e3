"""Fusion: equations that compute elementwise over one shape become one `fused` equation.

A group is a chain of elementwise equations (plus `broadcast_in_dim` and `outer`, whose inputs
are read through an index map) whose outputs all have the group's shape; its kernel is one loop
nest, so intermediate values live in registers and are never stored. Values a group computes
that anything outside it reads become the fused equation's outputs.
One forward walk: an equation joins an open group it reads from if the shapes agree; a group is
closed (emitted) just before the first equation outside it that reads one of its values, or at
the end. Emitting a group at its close keeps every producer before its consumers.
"""
from __future__ import annotations

from ...ir import Eqn, Lit, Program, Var
from ...ops import PRIMITIVES

INDEXED = ("broadcast_in_dim", "outer")  # read smaller inputs at a mapped index


def fusible(e: Eqn) -> bool:
    return e.prim.elementwise or e.prim.name in INDEXED


def fuse(program: Program) -> Program:
    groups: list[list[Eqn]] = []
    group_of: dict[int, int] = {}  # var id -> index of the group computing it
    open_groups: list[int] = []
    order: list = []  # equations and group indices, in emission order

    def close(indices) -> None:
        for gi in sorted(indices):
            open_groups.remove(gi)
            order.append(gi)

    for e in program.eqns:
        read = {group_of[id(a)] for a in e.inputs if isinstance(a, Var) and id(a) in group_of}
        read &= set(open_groups)
        if fusible(e):
            shape = e.outputs[0].type.shape
            same = sorted(gi for gi in read if groups[gi][0].outputs[0].type.shape == shape)
            close(read - set(same[:1]))
            if same:
                gi = same[0]
            else:
                gi = len(groups)
                groups.append([])
                open_groups.append(gi)
            groups[gi].append(e)
            group_of.update((id(v), gi) for v in e.outputs)
        else:
            close(read)
            order.append(e)
    close(list(open_groups))

    used_outside = _uses_outside(program, groups, group_of)
    eqns = []
    for item in order:
        if isinstance(item, Eqn):
            eqns.append(item)
        elif len(groups[item]) == 1:
            eqns.append(groups[item][0])
        else:
            eqns.append(_fused_eqn(groups[item], used_outside))
    return Program(program.inputs, eqns, program.outputs, program.updates)


def _uses_outside(program: Program, groups, group_of) -> set[int]:
    """Ids of group-computed vars that something outside their group reads."""
    used = {id(a) for a in program.outputs if isinstance(a, Var)}
    used |= {id(v) for _, v in program.updates if isinstance(v, Var)}
    member_of = {id(e): gi for gi, members in enumerate(groups) for e in members}
    for e in program.eqns:
        used |= {id(a) for a in e.inputs if isinstance(a, Var) and id(a) in group_of and
                 group_of[id(a)] != member_of.get(id(e))}
    return used


def _fused_eqn(members: list[Eqn], used_outside: set[int]) -> Eqn:
    """One `fused` equation whose body is the members, renamed to fresh vars."""
    produced = {id(v) for e in members for v in e.outputs}
    rename: dict[int, Var] = {}
    external: list[Var] = []
    for e in members:
        for a in e.inputs:
            if isinstance(a, Var) and id(a) not in produced and id(a) not in rename:
                rename[id(a)] = Var(a.type)
                external.append(a)
    body_eqns = []
    for e in members:
        outs = tuple(rename.setdefault(id(v), Var(v.type)) for v in e.outputs)
        ins = tuple(a if isinstance(a, Lit) else rename[id(a)] for a in e.inputs)
        body_eqns.append(Eqn(e.prim, ins, e.params, outs, e.source))
    escaped = [v for e in members for v in e.outputs if id(v) in used_outside]
    body = Program(tuple(rename[id(v)] for v in external), body_eqns,
                   tuple(rename[id(v)] for v in escaped))
    return Eqn(PRIMITIVES["fused"], tuple(external), {"body": body}, tuple(escaped),
               members[-1].source)
