"""What a compiled thing is, as data: the `Record` that export writes and load reads back.

A record names the kind of callable ("function", "grad" or "train_step"), its name, the
signature callers use, the signature of its native entry (a train step's also takes `lr` and
its state) and the kind's options (grad: wrt, single, with_value; train step: params, the
optimizer's settings, lr, the data inputs and the batch symbol). The API makes its objects from
records (api/load.py), so nothing outside a record is needed to rebuild one.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from ..core.types import Param, Signature
from .abi import BATCH, FIXED, SAMPLE, FitSpec, type_from_json, type_to_json

KINDS = ("function", "grad", "train_step")


@dataclass(frozen=True)
class Record:
    kind: str
    name: str
    signature: Signature  # what callers pass
    entry: Signature  # what the native entry takes
    options: dict = field(default_factory=dict)

    def to_json(self) -> dict:
        return {"kind": self.kind, "name": self.name,
                "signature": _signature_to_json(self.signature),
                "entry": _signature_to_json(self.entry), "options": self.options}

    @staticmethod
    def from_json(data: dict) -> Record:
        return Record(data["kind"], data["name"], _signature_from_json(data["signature"]),
                      _signature_from_json(data["entry"]), data["options"])


def _signature_to_json(sig: Signature) -> dict:
    return {"params": [{"name": p.name, **type_to_json(p.type)} for p in sig.params],
            "result": type_to_json(sig.result)}


def _signature_from_json(data: dict) -> Signature:
    return Signature(tuple(Param(p["name"], type_from_json(p)) for p in data["params"]),
                     type_from_json(data["result"]))


def fit_spec(record: Record) -> FitSpec | None:
    """What each input of a train step's entry is to the fit loop (None for other kinds): its
    data inputs are SAMPLE (or BATCH, with a batch symbol), everything else FIXED."""
    if record.kind != "train_step":
        return None
    batch_symbol = record.options["batch_symbol"]
    data = set(record.options["data"])
    kinds = [(BATCH if batch_symbol else SAMPLE) if i in data else FIXED
             for i in range(len(record.entry.params))]
    return FitSpec(tuple(kinds), batch_symbol)
