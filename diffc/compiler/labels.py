"""Where a program indexes with integer labels: what `Native` records for the call-time checks.

Input: a Program (as compiled). Output: the class counts each integer-label input indexes
(`label_bounds`) and the (value, class count) of each constant label or index (`literal_labels`).
Invariant: every equation that indexes with labels counts (the primitive's `labels` flag: pick,
gather, ...), the gradient-only ones too (`unpick`, `scatter_add`, ...), and labels are followed
back through equations that only move values (`moves`) to every input they come from: an
unchecked label would index out of bounds. Constant indices into symbolic dims (a slice's
`constant_indices`) count like constant labels. Labels computed in the program (argmax's, whose
primitive gives an `index_bound`) must provably lie inside the axis they index, else compiling
is a ShapeError: no call-time check could catch them. Fused bodies count as their equations.
"""
from __future__ import annotations

import math

from ..core.errors import ShapeError
from ..core.ir import Eqn, Lit


def _equations(program):
    """The program's equations, those of fused bodies in their place (read and written through
    the fused equation's own inputs and outputs)."""
    for e in program.eqns:
        body = e.params.get("body")
        if body is None:
            yield e
            continue
        outer = {id(inner): a for inner, a in zip(body.inputs + body.outputs,
                                                  e.inputs + e.outputs, strict=True)}
        for inner in body.eqns:
            yield Eqn(inner.prim, tuple(outer.get(id(a), a) for a in inner.inputs),
                      inner.params, tuple(outer.get(id(v), v) for v in inner.outputs))


def _label_uses(program):
    """(label atom, class dim) of every equation indexing with integer labels; each label
    followed back to the inputs or constants it comes from."""
    eqns = list(_equations(program))
    producer = {id(v): e for e in eqns for v in e.outputs}
    for e in eqns:
        if e.prim.labels is None or e.inputs[1].type.dtype.is_float:
            continue
        indexed = e.outputs[0] if e.prim.labels == "output" else e.inputs[0]
        classes = indexed.type.shape[e.params.get("axis", -1)]
        labels = [e.inputs[1]]
        while labels:
            label = labels.pop()
            made_by = producer.get(id(label))
            if made_by is not None and made_by.prim.moves:
                labels.extend(made_by.inputs)
            elif made_by is not None:
                _check_computed(made_by, classes, e)
            else:
                yield label, classes


def _check_computed(made_by: Eqn, classes, user: Eqn) -> None:
    """Labels computed by made_by must provably index inside an axis of `classes`."""
    bound = made_by.prim.index_bound and made_by.prim.index_bound(
        *[a.type for a in made_by.inputs], **made_by.params)
    if bound is not None and (tuple(bound) == (classes,) or (
            all(isinstance(d, int) for d in bound) and isinstance(classes, int) and
            math.prod(bound) <= classes)):
        return
    what = (f"lie in [0, {' * '.join(map(str, bound))})" if bound is not None else
            "have no known range")
    raise ShapeError(f"{user.source}: {user.prim.name} indexes an axis of size {classes} with "
                     f"indices computed by {made_by.prim.name}, which {what}: they cannot be "
                     f"checked before the code runs; index with an input (checked at call "
                     f"time) or with indices provably inside the axis")


def label_bounds(program) -> dict[int, tuple]:
    """Input index -> the class counts (ints or symbols) each integer-label input indexes."""
    index = {id(v): i for i, v in enumerate(program.inputs)}
    bounds: dict[int, tuple] = {}
    for label, classes in _label_uses(program):
        if id(label) in index and classes not in bounds.get(index[id(label)], ()):
            bounds[index[id(label)]] = bounds.get(index[id(label)], ()) + (classes,)
    return bounds


def literal_labels(program) -> tuple[tuple[int, object], ...]:
    """(value, class dim) of every constant label, and (index, dim) of every constant index
    into a symbolic dim that needs dim > index (`constant_indices`): those into symbolic dims
    are checked at call time, when the dims have sizes."""
    pairs = {(label.value, classes): None for label, classes in _label_uses(program)
             if isinstance(label, Lit)}
    for e in _equations(program):
        if e.prim.constant_indices is not None:
            pairs.update(dict.fromkeys(e.prim.constant_indices(*[a.type for a in e.inputs],
                                                               **e.params)))
    return tuple(pairs)
