"""Where a program indexes with integer labels: what `Native` records for the call-time checks.

Input: a Program (as compiled). Output: the class counts each integer-label input indexes
(`label_bounds`) and the (value, class count) of each constant label (`literal_labels`).
Invariant: every equation that indexes with labels counts (the primitive's `labels` flag), the
gradient-only ones too (`unpick`, `softmax_cross_entropy_grad`), and labels are followed back
through equations that only move values (`moves`): an unchecked label would index out of bounds.
"""
from __future__ import annotations

from ..core.ir import Lit


def _label_uses(program):
    """(label atom, class dim) of every equation indexing with integer labels; each label
    followed back to the input or constant it comes from."""
    producer = {id(v): e for e in program.eqns for v in e.outputs}
    for e in program.eqns:
        if e.prim.labels is None or e.inputs[1].type.dtype.is_float:
            continue
        classes = (e.outputs[0] if e.prim.labels == "output" else e.inputs[0]).type.shape[-1]
        label = e.inputs[1]
        while id(label) in producer and producer[id(label)].prim.moves:
            label = producer[id(label)].inputs[0]
        yield label, classes


def label_bounds(program) -> dict[int, tuple]:
    """Input index -> the class counts (ints or symbols) each integer-label input indexes."""
    index = {id(v): i for i, v in enumerate(program.inputs)}
    bounds: dict[int, tuple] = {}
    for label, classes in _label_uses(program):
        if id(label) in index and classes not in bounds.get(index[id(label)], ()):
            bounds[index[id(label)]] = bounds.get(index[id(label)], ()) + (classes,)
    return bounds


def literal_labels(program) -> tuple[tuple[int, object], ...]:
    """(value, class dim) of every constant label: one indexing a symbolic class axis is
    checked at call time, when the axis has a size."""
    pairs = {(label.value, classes): None for label, classes in _label_uses(program)
             if isinstance(label, Lit)}
    return tuple(pairs)
