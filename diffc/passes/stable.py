"""Stable forms: compositions that overflow or underflow, computed by the primitive that
computes them stably.

Input: a traced program. Output: the program with each match of a rule's pattern replaced by the
rule's primitive, at the pattern's root (its last equation), with the root's outputs and
`source` (after a reshape of it, where the pattern has one between its root and the rest). It
runs on every traced program, before AD, so gradients come from the stable form too
(`softmax(z) * sum(y) - y`, never a division by an underflowed probability). The rules,
`RULES`, keyed by the root's primitive:

    log(softmax(z))                                  -> log_softmax(z)
    log(add(1, x))                                   -> log1p(x)       a literal 1, either side
    log(reduce_sum(exp(z), axes))                    -> logsumexp(z, axes)
    log(reshape(reduce_sum(exp(z), axes)))           -> reshape(logsumexp(z, axes))  keepdims
    neg(log(pick(softmax(z), y)))                    -> softmax_cross_entropy(z, y)  labels
    neg(reduce_sum(mul(y, log_softmax(z)), last))    -> softmax_cross_entropy(z, y)  targets

(`nn.cross_entropy(nn.softmax(z), y)` traces to the second or, once the first has fired, the
third; `mul`'s operands in either order.) A rule is a function of the root equation and the
producers of values, returning the replacement equations (the last computing the root's outputs)
and the equations it matched, or None; a new rule is one more entry. One forward walk: a rule
sees the equations before its root already rewritten. A replacement equals its pattern wherever
the pattern is finite.
Invariants: the result verifies; a matched value that something else reads stays computed
(only the rule's root is replaced); matched equations left unread are dropped, other code is
left as it is (`f.ir` shows the user's program, dead code included).
"""
from __future__ import annotations

from collections.abc import Callable

from ..core.ir import Eqn, Lit, Program, Var
from ..core.primitive import PRIMITIVES

Producers = dict[int, Eqn]  # id of a var -> the (rewritten) equation computing it
# a rule's result: the replacement equations (the last computes the root's outputs) and the
# matched equations other than the root
Match = tuple[tuple[Eqn, ...], tuple[Eqn, ...]]


def _made_by(producer: Producers, atom, name: str) -> Eqn | None:
    """The equation computing atom if it applies the primitive `name`."""
    e = producer.get(id(atom))
    return e if e is not None and e.prim.name == name else None


def _root(e: Eqn, name: str, inputs: tuple, params: dict | None = None) -> Eqn:
    """The primitive `name` applied to inputs in place of the root e: e's outputs and source."""
    return Eqn(PRIMITIVES[name], inputs, params or {}, e.outputs, e.source)


def _log_of_softmax(e: Eqn, producer: Producers) -> Match | None:
    softmax = _made_by(producer, e.inputs[0], "softmax")
    if softmax is None:
        return None
    return (_root(e, "log_softmax", softmax.inputs),), (softmax,)


def _log_of_one_plus(e: Eqn, producer: Producers) -> Match | None:
    add = _made_by(producer, e.inputs[0], "add")
    if add is None:
        return None
    for one, x in (add.inputs, add.inputs[::-1]):
        if isinstance(one, Lit) and one.value == 1 and x.type == add.outputs[0].type:
            return (_root(e, "log1p", (x,)),), (add,)
    return None


def _log_of_sum_of_exp(e: Eqn, producer: Producers) -> Match | None:
    """log(sum(exp(z))), and log(reshape(sum(exp(z)))) as sum(..., keepdims=True) traces:
    log is elementwise, so the reshape moves after the logsumexp."""
    reshape = _made_by(producer, e.inputs[0], "reshape")
    total = _made_by(producer, (reshape or e).inputs[0], "reduce_sum")
    exp = total and _made_by(producer, total.inputs[0], "exp")
    if exp is None:
        return None
    params = {"axes": total.params["axes"]}
    if reshape is None:
        return (_root(e, "logsumexp", exp.inputs, params),), (total, exp)
    lse = Eqn(PRIMITIVES["logsumexp"], exp.inputs, params, (Var(total.outputs[0].type),),
              e.source)
    return (lse, _root(e, "reshape", lse.outputs, reshape.params)), (reshape, total, exp)


def _cross_entropy_of_labels(e: Eqn, producer: Producers) -> Match | None:
    log = _made_by(producer, e.inputs[0], "log")
    pick = log and _made_by(producer, log.inputs[0], "pick")
    softmax = pick and _made_by(producer, pick.inputs[0], "softmax")
    if softmax is None:
        return None
    return ((_root(e, "softmax_cross_entropy", (softmax.inputs[0], pick.inputs[1])),),
            (log, pick, softmax))


def _cross_entropy_of_targets(e: Eqn, producer: Producers) -> Match | None:
    total = _made_by(producer, e.inputs[0], "reduce_sum")
    mul = total and _made_by(producer, total.inputs[0], "mul")
    if mul is None or total.params["axes"] != (mul.outputs[0].type.ndim - 1,):
        return None
    for y, log_p in (mul.inputs, mul.inputs[::-1]):
        log_softmax = _made_by(producer, log_p, "log_softmax")
        if log_softmax is not None and y.type == log_p.type:  # y is not broadcast by mul
            return ((_root(e, "softmax_cross_entropy", (log_softmax.inputs[0], y)),),
                    (total, mul, log_softmax))
    return None


RULES: dict[str, tuple[Callable[[Eqn, Producers], Match | None], ...]] = {
    "log": (_log_of_softmax, _log_of_one_plus, _log_of_sum_of_exp),
    "neg": (_cross_entropy_of_labels, _cross_entropy_of_targets),
}


def stable_forms(program: Program) -> Program:
    producer: Producers = {}
    matched: set[int] = set()  # ids of matched non-root equations: dropped if left unread
    eqns = []
    for e in program.eqns:
        replacement = (e,)
        for rule in RULES.get(e.prim.name, ()):
            match = rule(e, producer)
            if match is not None:
                replacement, inner = match
                matched.update(id(m) for m in inner)
                break
        for r in replacement:
            eqns.append(r)
            producer.update((id(v), r) for v in r.outputs)
    return Program(program.inputs, _drop_unread(program, eqns, matched), program.outputs,
                   program.updates)


def _drop_unread(program: Program, eqns: list[Eqn], matched: set[int]) -> list[Eqn]:
    """eqns without the matched equations whose outputs nothing reads any more."""
    live = {id(a) for a in program.outputs if isinstance(a, Var)}
    live |= {id(v) for _, v in program.updates if isinstance(v, Var)}
    kept = []
    for e in reversed(eqns):
        if id(e) not in matched or any(id(v) in live for v in e.outputs):
            kept.append(e)
            live |= {id(a) for a in e.inputs if isinstance(a, Var)}
    return kept[::-1]
