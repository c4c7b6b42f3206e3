"""Loops in llvmlite IR: `for_range` (with loop-carried values) and `loop_nest`.

Input: an IRBuilder positioned in a block, and i64 trip counts. Output: the builder positioned
inside the body while the context is open and after the loop once it closes.
Invariant: a loop whose count is <= 0 runs no iteration (the count is tested before entry).
"""
from __future__ import annotations

from contextlib import ExitStack, contextmanager

from llvmlite import ir

I64 = ir.IntType(64)


class Loop:
    """The state of an open `for_range`: its index, carried values and their final values."""

    def __init__(self, index, carried):
        self.index = index
        self.carried = carried  # phis: this iteration's values
        self.next = list(carried)  # what the body sets: the next iteration's values
        self.results = []  # after the loop: the final values

    def update(self, values) -> None:
        self.next = list(values)


@contextmanager
def for_range(b: ir.IRBuilder, count, carry=(), name: str = "i"):
    """`for i in range(count)` with optional carried values (e.g. a reduction's accumulator)."""
    count = count if isinstance(count, ir.Value) else ir.Constant(I64, count)
    fn = b.block.function
    pre = b.block
    body = fn.append_basic_block(f"{name}.body")
    end = fn.append_basic_block(f"{name}.end")
    b.cbranch(b.icmp_signed(">", count, ir.Constant(I64, 0)), body, end)
    b.position_at_end(body)
    index = b.phi(I64, name=name)
    index.add_incoming(ir.Constant(I64, 0), pre)
    phis = []
    for value in carry:
        phi = b.phi(value.type)
        phi.add_incoming(value, pre)
        phis.append(phi)
    loop = Loop(index, phis)
    yield loop
    latch = b.block
    nxt = b.add(index, ir.Constant(I64, 1), flags=("nuw", "nsw"))
    index.add_incoming(nxt, latch)
    for phi, value in zip(phis, loop.next, strict=True):
        phi.add_incoming(value, latch)
    b.cbranch(b.icmp_signed("<", nxt, count), body, end)
    b.position_at_end(end)
    for init, value in zip(carry, loop.next, strict=True):
        result = b.phi(init.type)
        result.add_incoming(init, pre)
        result.add_incoming(value, latch)
        loop.results.append(result)


@contextmanager
def loop_nest(b: ir.IRBuilder, counts, name: str = "i"):
    """Nested `for_range`s, outermost first; yields the tuple of indices."""
    with ExitStack() as stack:
        indices = tuple(stack.enter_context(for_range(b, c, name=f"{name}{d}")).index
                        for d, c in enumerate(counts))
        yield indices
