"""The calling convention of compiled code, shared by codegen, the runtime and exports.

`Abi` names the entry points and lists the entry's input and output types and symbolic dims;
it round-trips through JSON (`to_json` / `from_json`) so that exported code can be called with
numpy and ctypes alone.
"""
from __future__ import annotations

from dataclasses import dataclass

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
