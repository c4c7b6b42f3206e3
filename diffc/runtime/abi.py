"""The calling convention of compiled code: the one description that codegen, the runtime and
exports all derive theirs from.

`Abi` names a program's entry points and lists their arguments (`Arg`): the entry

    void entry(inputs..., outputs..., int64_t dims..., void *workspace)

takes array inputs and every output (scalars too) by pointer, scalar inputs by value, one
int64 per symbolic dim and a workspace of `workspace_size(dims...)` bytes aligned to 64; the fit
loop entry takes `FIT_ARGS`, the dims and a workspace. The compiler makes the LLVM function types
from these lists (compiler/codegen.py, fitloop.py), `call.py` the ctypes argtypes and
`export.py` the C prototypes. `Native` adds what calling a program's object code safely needs
besides (label ranges, constant labels, written inputs, the fit loop's table). Both round-trip
through JSON, so that cached and exported code can be called without the program it was
compiled from. A function taking more than `MAX_ARGS` arguments (ctypes' limit) also has a
packed twin, `<name>_packed(slots)`, reading its arguments from an array of 8-byte slots.
"""
from __future__ import annotations

from dataclasses import dataclass

from ..core.types import DTYPES, ArrayType, Dim, DType, i64
from ..passes.crossstep import CrossStep

MAX_ARGS = 1024  # the most arguments a ctypes call can pass
NUMPY_DATA_OFFSET = 16  # offsetof(PyArrayObject_fields, data): after ob_refcnt and ob_type
FIXED, SAMPLE, BATCH = "fixed", "sample", "batch"  # what an entry input is to the fit loop


@dataclass(frozen=True)
class Arg:
    """One argument: a scalar of `dtype` by value, or a pointer (to elements of `dtype`; None:
    untyped). `role` says what it is: input, output, dim, workspace, or a fit loop argument."""

    name: str
    dtype: DType | None
    pointer: bool
    role: str

    def c_decl(self, const: bool = False) -> str:
        ctype = self.dtype.c_type if self.dtype is not None else "void"
        if not self.pointer:
            return f"{ctype} {self.name}"
        return f"{'const ' if const else ''}{ctype} *{self.name}"


def c_name(name: str) -> str:
    """name as a C identifier's tail: ASCII letters and digits kept, anything else `_`."""
    return "".join(ch if ch.isascii() and ch.isalnum() else "_" for ch in name)


def packed_name(name: str) -> str:
    return name + "_packed"


C_KEYWORDS = frozenset(
    "auto bool break case char const continue default do double else enum extern float for goto "
    "if inline int long register restrict return short signed sizeof static struct switch "
    "typedef union unsigned void volatile while int32_t int64_t".split())


def distinct_names(names, taken=()) -> list[str]:
    """names with each one that is a C keyword, or repeats an earlier one or one of `taken`,
    suffixed `_2`, `_3`, ...: C identifiers that tell them apart."""
    taken, out = set(taken), []
    for n in names:
        name, k = n, 1
        while name in taken or name in C_KEYWORDS:
            k += 1
            name = f"{n}_{k}"
        taken.add(name)
        out.append(name)
    return out


def _distinct(args: list[Arg]) -> list[Arg]:
    """args with distinct C names (the dims and the workspace keep theirs)."""
    fixed = [a for a in args if a.role in ("dim", "workspace")]
    named = [a for a in args if a.role not in ("dim", "workspace")]
    names = distinct_names([a.name for a in named], {a.name for a in fixed})
    return [Arg(n, a.dtype, a.pointer, a.role) for n, a in zip(names, named, strict=True)] + fixed
def hook_name(entry: str) -> str:
    """The program's parallel hook (compiler/codegen.py `add_hook`): a pointer variable."""
    return entry + "_parallel"


def _dim_args(symbols) -> list[Arg]:
    return [Arg(s, i64, False, "dim") for s in symbols]


@dataclass(frozen=True)
class Abi:
    """A program's entry points and the types of the entry's inputs, outputs and dims."""

    entry: str
    inputs: tuple[ArrayType, ...]
    outputs: tuple[ArrayType, ...]
    symbols: tuple[str, ...]

    @property
    def py_entry(self) -> str:
        """The entry taking numpy array objects for arrays and outputs (the data pointer read
        at NUMPY_DATA_OFFSET), so Python calls skip `.ctypes`."""
        return self.entry + "_py"

    @property
    def parallel_hook(self) -> str:
        return hook_name(self.entry)

    @property
    def workspace_size(self) -> str:
        return self.entry + "_workspace_size"

    @property
    def fit_entry(self) -> str:
        return self.entry + "_fit"

    def entry_args(self, names=None) -> list[Arg]:
        """The entry's arguments (inputs named `names`, default in0, in1, ...; names that C
        would spell alike, or as a keyword, are told apart by a suffix)."""
        names = names or [f"in{i}" for i in range(len(self.inputs))]
        return _distinct([Arg(c_name(n), t.dtype, t.ndim > 0, "input")
                          for n, t in zip(names, self.inputs, strict=True)] +
                         [Arg(f"out{j}", t.dtype, True, "output")
                          for j, t in enumerate(self.outputs)] +
                         _dim_args(self.symbols) + [Arg("workspace", None, True, "workspace")])

    def size_args(self) -> list[Arg]:
        """The arguments of `workspace_size` (which returns an int64, -1 on overflow)."""
        return _dim_args(self.symbols)

    def fit_args(self) -> list[Arg]:
        """The fit loop's arguments (compiler/fitloop.py says what they mean)."""
        loss = self.outputs[0].dtype
        return [Arg("table", None, True, "fit"), Arg("perm", i64, True, "fit"),
                *(Arg(n, i64, False, "fit") for n in ("first", "last", "batch", "n")),
                Arg("losses", loss, True, "fit"), Arg("staging", None, True, "fit"),
                *_dim_args(self.symbols), Arg("workspace", None, True, "workspace")]

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
class FitSpec:
    """What each input of a train step's entry is to the fit loop: FIXED (the same buffer or
    value every step), SAMPLE (one row of its data per step) or BATCH (rows gathered per step,
    the leading dim `batch_symbol` bound to their number)."""

    kinds: tuple[str, ...]
    batch_symbol: str | None


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
            names |= {abi.fit_entry: len(abi.fit_args()), fit.workspace_size: len(fit.symbols)}
        return names

    def packed(self) -> list[str]:
        """The entry points that take more than MAX_ARGS arguments: they get packed twins."""
        return [n for n, k in self.arities().items() if k > MAX_ARGS]

    def symbols(self) -> list[str]:
        """The entry points to link, and the parallel hook."""
        return [*self.arities(), self.abi.py_entry, *map(packed_name, self.packed()),
                self.abi.parallel_hook]

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
