"""Fusion: equations that compute elementwise over one shape become one `fused` equation.

A group is a chain of elementwise equations (plus `indexed` ones: `broadcast_in_dim`, `outer`,
transposes, slices and gathers, whose inputs are read through an index map, so they start a
group rather than join one that computes their inputs) whose outputs all have the group's
shape (each in its own dtype: a comparison's mask or a conversion stays inside the group); its
kernel is one loop nest, so intermediate values live in registers and are never stored. A group
may also start with a `matmul` whose results the rest of the group (primitives flagged
`epilogue` only: bias, relu, an SGD update) finishes while they are in registers. Values a
group computes that anything outside it reads become the fused equation's outputs.
One forward walk: an equation joins an open group it reads from if the shapes agree; a group is
closed (emitted) just before the first equation outside it that reads one of its values, or at
the end. Emitting a group at its close keeps every producer before its consumers.
"""
from __future__ import annotations

from ..core.ir import Eqn, Lit, Program, Var
from ..core.linalg import matmul_p
from .primitives import fused_p


def fusible(e: Eqn) -> bool:
    return e.prim.elementwise or e.prim.indexed


def fuse(program: Program) -> Program:
    g = _Groups(program)
    for e in program.eqns:
        g.add(e)
    g.close(list(g.open))
    used_outside = _uses_outside(program, g.groups, g.group_of)
    eqns = []
    for item in g.order:
        if isinstance(item, Eqn):
            eqns.append(item)
        elif len(g.groups[item]) == 1:
            eqns.append(g.groups[item][0])
        else:
            eqns.append(_fused_eqn(g.groups[item], used_outside))
    return Program(program.inputs, eqns, program.outputs, program.updates)


class _Groups:
    """The forward walk's state: the groups, which are open, and the emission order."""

    def __init__(self, program: Program):
        self.groups: list[list[Eqn]] = []
        self.group_of: dict[int, int] = {}  # var id -> index of the group computing it
        self.open: list[int] = []
        self.order: list = []  # equations and group indices, in emission order
        self.position = {id(e): i for i, e in enumerate(program.eqns)}

    def close(self, indices) -> None:
        for gi in sorted(indices):
            self.open.remove(gi)
            self.order.append(gi)

    def start(self) -> int:
        self.groups.append([])
        self.open.append(len(self.groups) - 1)
        return len(self.groups) - 1

    def headed(self, gi: int) -> bool:  # a matmul whose results the group's others finish
        return self.groups[gi][0].prim is matmul_p

    def add(self, e: Eqn) -> None:
        """Put e in a group it may join (or a new one), closing the groups it reads but
        cannot join; or emit it alone."""
        read = {self.group_of[id(a)] for a in e.inputs
                if isinstance(a, Var) and id(a) in self.group_of} & set(self.open)
        if e.prim is matmul_p:
            self.close(read)
            gi = self.start()
        elif fusible(e):
            gi = self.join(e, read)
        else:
            self.close(read)
            self.order.append(e)
            return
        self.groups[gi].append(e)
        self.group_of.update((id(v), gi) for v in e.outputs)

    def join(self, e: Eqn, read: set[int]) -> int:
        """The group e joins: among those it reads, of its shape (a GEMM's only if e may be its
        epilogue; none if e is indexed), the others merged into it; closes the rest."""
        shape = e.outputs[0].type.shape  # a group computes over one shape
        same = [gi for gi in sorted(read) if self.groups[gi][0].outputs[0].type.shape == shape
                and (not self.headed(gi) or e.prim.epilogue) and not e.prim.indexed]
        heads = [gi for gi in same if self.headed(gi)]
        gi = heads[0] if heads else same[0] if same else self.start()
        merged = [g for g in same if g != gi and not self.headed(g) and
                  (not self.headed(gi) or all(m.prim.epilogue for m in self.groups[g]))]
        for g in merged:  # open groups read by e never read each other: merge in order,
            head = self.groups[gi][0] if self.headed(gi) else None  # a GEMM head first
            self.groups[gi] = sorted(self.groups[gi] + self.groups[g], key=lambda m, h=head: (
                m is not h, self.position[id(m)]))
            self.group_of.update((id(v), gi) for m in self.groups[g] for v in m.outputs)
            self.groups[g] = []
            self.open.remove(g)
        self.close(read - {gi} - set(merged))
        return gi


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
    return Eqn(fused_p, tuple(external), {"body": body}, tuple(escaped),
               members[-1].source)
