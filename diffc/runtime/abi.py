"""The calling convention of compiled code, shared by codegen, the runtime and exports.

`Abi` names the entry points and lists the entry's input and output types and symbolic dims;
`Native` adds what calling a program's object code safely needs besides (label ranges, written
inputs, the fit loop's table). Both round-trip through JSON (`to_json` / `from_json`), so that
cached and exported code can be called without the program it was compiled from.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..compiler.passes.crossstep import CrossStep
from ..types import DTYPES, ArrayType


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

    def symbols(self) -> list[str]:
        """The entry points to link."""
        names = [self.abi.entry, self.abi.py_entry, self.abi.workspace_size]
        if self.fit_abi is not None:
            names += [self.abi.fit_entry, self.fit_abi.workspace_size]
        return list(dict.fromkeys(names))

    def to_json(self) -> dict:
        return {"abi": self.abi.to_json(),
                "labels": {str(i): list(n) for i, n in self.labels.items()},
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
                      () if fit is None else tuple(CrossStep(**r) for r in fit["rewrites"]))
