"""Fusion: equations that compute elementwise over one shape become one `fused` equation.

A group is a chain of elementwise equations (plus `broadcast_in_dim` and `outer`, whose inputs
are read through an index map) whose outputs all have the group's shape and dtype (so a
`convert_element_type` to another dtype starts a new group); its kernel is one loop nest, so
intermediate values live in registers and are never stored. A group may also start
with a `matmul` whose results the rest of the group (vector-safe `EPILOGUE` ops only: bias,
relu, an SGD update) finishes while they are in registers. Values a group computes that
anything outside it reads become the fused equation's outputs.
One forward walk: an equation joins an open group it reads from if the types agree; a group is
closed (emitted) just before the first equation outside it that reads one of its values, or at
the end. Emitting a group at its close keeps every producer before its consumers.
"""
from __future__ import annotations

from ...ir import Eqn, Lit, Program, Var
from ...ops import PRIMITIVES

INDEXED = ("broadcast_in_dim", "outer")  # read smaller inputs at a mapped index
# what a GEMM can apply to its results while they are still in vector registers
EPILOGUE = ("add", "sub", "mul", "div", "neg", "relu", "step", "broadcast_in_dim")


def fusible(e: Eqn) -> bool:
    return e.prim.elementwise or e.prim.name in INDEXED


def fuse(program: Program) -> Program:
    groups: list[list[Eqn]] = []
    group_of: dict[int, int] = {}  # var id -> index of the group computing it
    open_groups: list[int] = []
    order: list = []  # equations and group indices, in emission order
    position = {id(e): i for i, e in enumerate(program.eqns)}

    def close(indices) -> None:
        for gi in sorted(indices):
            open_groups.remove(gi)
            order.append(gi)

    def start(e: Eqn) -> int:
        groups.append([])
        open_groups.append(len(groups) - 1)
        return len(groups) - 1

    def headed(gi: int) -> bool:  # a matmul whose results the group's other members finish
        return groups[gi][0].prim.name == "matmul"

    def epilogue_only(gi: int) -> bool:
        return all(m.prim.name in EPILOGUE for m in groups[gi])

    for e in program.eqns:
        read = {group_of[id(a)] for a in e.inputs if isinstance(a, Var) and id(a) in group_of}
        read &= set(open_groups)
        if e.prim.name == "matmul":
            close(read)
            gi = start(e)
        elif fusible(e):
            out = e.outputs[0].type  # a group computes one shape in one dtype
            same = [gi for gi in sorted(read) if groups[gi][0].outputs[0].type == out
                    and (not headed(gi) or e.prim.name in EPILOGUE)]
            heads = [gi for gi in same if headed(gi)]
            gi = heads[0] if heads else same[0] if same else start(e)
            merged = [g for g in same if g != gi and not headed(g) and
                      (not headed(gi) or epilogue_only(g))]
            for g in merged:  # open groups read by e never read each other: merge in order,
                head = groups[gi][0] if headed(gi) else None  # a GEMM head staying first
                groups[gi] = sorted(groups[gi] + groups[g],
                                    key=lambda m, head=head: (m is not head, position[id(m)]))
                group_of.update((id(v), gi) for m in groups[g] for v in m.outputs)
                groups[g] = []
                open_groups.remove(g)
            close(read - {gi} - set(merged))
        else:
            close(read)
            order.append(e)
            continue
        groups[gi].append(e)
        group_of.update((id(v), gi) for v in e.outputs)
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
