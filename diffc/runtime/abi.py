"""The calling convention of compiled code, shared by codegen, the runtime and exports.

`Abi` names the entry points and lists the entry's input and output types and symbolic dims;
`Native` adds what calling a program's object code safely needs besides (label ranges, constant
labels, written inputs, the fit loop's table). Both round-trip through JSON (`to_json` /
`from_json`), so that cached and exported code can be called without the program it was
compiled from. A function taking more than `MAX_ARGS` arguments (ctypes' limit) also has a
packed twin, `<name>_packed(slots)`, reading its arguments from an array of 8-byte slots.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..compiler.passes.crossstep import CrossStep
from ..types import DTYPES, ArrayType, Dim

MAX_ARGS = 1024  # the most arguments a ctypes call can pass
FIT_ARGS = 9  # the fit loop's arguments besides the dims (compiler/fitloop.py)


def packed_name(name: str) -> str:
    return name + "_packed"


@dataclass(frozen=True)
class Abi:
    """`entry(inputs..., outputs..., dims..., workspace)`; scalars by value, arrays by pointer."""

    entry: str
    inputs: tuple[ArrayType, ...]
    outputs: tuple[ArrayType, ...]
    symbols: tuple[str, ...]

    @property
    def py_entry(self) -> str:
        return self.entry + "_py"

    @property
    def workspace_size(self) -> str:
        return self.entry + "_workspace_size"

    @property
    def fit_entry(self) -> str:
        return self.entry + "_fit"

    @property
    def arity(self) -> int:
        """The number of arguments of the entry."""
        return len(self.inputs) + len(self.outputs) + len(self.symbols) + 1

    def to_json(self) -> dict:
        return {"entry": self.entry, "inputs": [type_to_json(t) for t in self.inputs],
                "outputs": [type_to_json(t) for t in self.outputs],
                "symbols": list(self.symbols)}

    @staticmethod
    def from_json(data: dict) -> Abi:
        return Abi(data["entry"], tuple(type_from_json(t) for t in data["inputs"]),
                   tuple(type_from_json(t) for t in data["outputs"]), tuple(data["symbols"]))


def type_to_json(t: ArrayType) -> dict:
    return {"dtype": t.dtype.name, "shape": list(t.shape)}


def type_from_json(data: dict) -> ArrayType:
    dtype = next(d for d in DTYPES if d.name == data["dtype"])
    return ArrayType(dtype, tuple(data["shape"]))


@dataclass(frozen=True)
class Native:
    """Everything besides the object code that calling it needs."""

    abi: Abi
    labels: dict[int, tuple[str, ...]]  # label input -> the names of the dims it indexes
    written: tuple[int, ...]  # inputs updated in place
    fit_abi: Abi | None  # the abi of the step `fit` runs (None: no fit entry)
    fit_rewrites: tuple[CrossStep, ...]
    literal_labels: tuple[tuple[int, Dim], ...] = ()  # (constant label, the dim it indexes)

    def arities(self) -> dict[str, int]:
        """The entry points taking plain (C) arguments, and how many each takes."""
        abi, fit = self.abi, self.fit_abi
        names = {abi.entry: abi.arity, abi.workspace_size: len(abi.symbols)}
        if fit is not None:
            names |= {abi.fit_entry: FIT_ARGS + len(abi.symbols),
                      fit.workspace_size: len(fit.symbols)}
        return names

    def packed(self) -> list[str]:
        """The entry points that take more than MAX_ARGS arguments: they get packed twins."""
        return [n for n, k in self.arities().items() if k > MAX_ARGS]

    def symbols(self) -> list[str]:
        """The entry points to link."""
        return [*self.arities(), self.abi.py_entry, *map(packed_name, self.packed())]

    def to_json(self) -> dict:
        return {"abi": self.abi.to_json(),
                "labels": {str(i): list(n) for i, n in self.labels.items()},
                "literal_labels": [list(pair) for pair in self.literal_labels],
                "written": list(self.written),
                "fit": None if self.fit_abi is None else {
                    "abi": self.fit_abi.to_json(),
                    "rewrites": [vars(r) for r in self.fit_rewrites]}}

    @staticmethod
    def from_json(data: dict) -> Native:
        fit = data["fit"]
        return Native(Abi.from_json(data["abi"]),
                      {int(i): tuple(n) for i, n in data["labels"].items()},
                      tuple(data["written"]),
                      None if fit is None else Abi.from_json(fit["abi"]),
                      () if fit is None else tuple(CrossStep(**r) for r in fit["rewrites"]),
                      tuple((v, d) for v, d in data.get("literal_labels", ())))
