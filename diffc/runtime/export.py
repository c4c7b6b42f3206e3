"""Export compiled code as standalone artifacts: `path.o`, `path.h`, `path.json`, `path.so`.

Input: the record, `Native` description, IR text and object code of a compiled callable (plain,
grad, value_and_grad or train step), and a maker of the digest's object. Output: the object code
(position-independent, no libm or Python symbols), a C header generated from the signature that
documents argument order, layout, symbolic dims, the workspace, in-place arguments, thread
safety and the parallel hook (how a C program runs the code on threads of its own; for a train
step also its fit loop, the slots of its table as an enum), the signature as JSON (what
`diffc.load` rebuilds the calling convention from) and, where a system C compiler exists, a
shared library linked from the object.
Invariants: the two halves `diffc.load` uses are bound to each other: the .json records the
size and sha256 of the .o and the .so, and the .so also defines `<entry>_export_digest`, the
sha256 of the .json's other fields (load.py's `description_digest`), so that a .json edited
since (its label ranges, shapes, ...) no longer describes the .so. Each file is written
whole (a temporary file renamed into place), the .json last. Without a C compiler a stale
`path.so` is removed: it would not belong to the new .o/.h/.json.
"""
from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import textwrap
import warnings

from .abi import Abi, Native, distinct_names
from .load import FORMAT, description_digest
from .record import Record


def export(path: str, meta: dict, object_code: bytes, digest_object) -> list[str]:
    """Write an export's files next to `path` (a path without extension); return their paths.

    `meta` is `metadata(...)`; `digest_object(symbol, data)` returns the object code of a module
    defining the constant byte array `symbol` (the compiler makes it)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    meta = json.loads(json.dumps(meta))  # as `load` will read it
    _write(path + ".o", object_code)
    library = _link(path, meta, digest_object)
    meta["files"] = {"o": file_record(object_code),
                     "so": None if library is None else file_record(library)}
    _write(path + ".h", c_header(meta).encode())
    _write(path + ".json", (json.dumps(meta, indent=1) + "\n").encode())
    return [path + ext for ext in (".o", ".h", ".json")] + ([] if library is None else
                                                            [path + ".so"])


def file_record(data: bytes) -> dict:
    return {"size": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _write(path: str, data: bytes) -> None:
    """Replace path with data at once: a reader sees the old file or the new, never a part."""
    tmp = f"{path}.tmp-{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(data)
        os.replace(tmp, path)
    except BaseException:
        if os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def _link(path: str, meta: dict, digest_object) -> bytes | None:
    """Link path.so from path.o and the digest of meta; its bytes, or None without a C compiler.
    Any earlier path.so is removed first, so none is left that the new .json does not describe."""
    stale = os.path.lexists(path + ".so")
    if stale:
        os.unlink(path + ".so")
    cc = shutil.which("cc") or shutil.which("gcc") or shutil.which("clang")
    if cc is None:
        removed = f" (and removed the old {path}.so, made from another export)" if stale else ""
        warnings.warn(f"no C compiler found: wrote {path}.o, {path}.h and {path}.json but no "
                      f"{path}.so{removed}, so diffc.load cannot load this export; link it for "
                      f"C programs with: cc -shared -o {path}.so {path}.o", stacklevel=4)
        return None
    symbol = meta["abi"]["entry"] + "_export_digest"  # a name C programs can read it by
    digest = digest_object(symbol, description_digest(meta))
    with tempfile.TemporaryDirectory(prefix="diffc-export-") as folder:
        digest_o, library = os.path.join(folder, "digest.o"), os.path.join(folder, "lib.so")
        with open(digest_o, "wb") as f:
            f.write(digest)
        result = subprocess.run([cc, "-shared", "-o", library, path + ".o", digest_o],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"linking {path}.so failed:\n{result.stderr}")
        with open(library, "rb") as f:
            data = f.read()
    _write(path + ".so", data)
    return data


def metadata(record: Record, native: Native, ir: str, version: str) -> dict:
    """The JSON description of an export: everything `diffc.load` needs."""
    return {"format": FORMAT, "diffc": version, "record": record.to_json(), "ir": ir,
            **native.to_json()}


def c_header(meta: dict) -> str:
    """The C header of an export: its prototypes made from the abi's argument lists."""
    abi, record = Abi.from_json(meta["abi"]), Record.from_json(meta["record"])
    names = record.entry.names
    written = set(meta["written"])
    guard = f"DIFFC_{abi.entry.upper()}_H"
    args = _entry_decls(abi, names, written)
    dims = ", ".join(a.c_decl() for a in abi.size_args()) or "void"
    in_place = ", ".join(names[i] for i in sorted(written)) or "none"
    lines = [
        f"/* {abi.entry}: generated by diffc {meta['diffc']} for `{record.name}` "
        f"({record.kind}). */",
        f"#ifndef {guard}", f"#define {guard}", "#include <stdint.h>",
        "#ifdef __cplusplus", 'extern "C" {', "#endif", "",
        "/* Arrays are dense, row-major (C order) and must not overlap each other. Scalars are",
        "   passed by value; each output (scalars too) is written through its pointer. Each",
        "   symbolic dim is passed as an int64_t >= 1 after the outputs; it must equal the size",
        "   the argument types give it. `workspace` points at workspace_size(dims) bytes, aligned",
        "   to 64 bytes. Arrays updated in place: " + in_place + ".",
        "   Thread safety: calls may run concurrently if each uses its own workspace and",
        "   its own in-place arrays. */",
        f"int64_t {abi.workspace_size}({dims});",
        f"void {abi.entry}(\n    " + ",\n    ".join(args) + ");",
        *_threads_comment(abi),
    ]
    if record.kind == "train_step":
        lines += _fit_section(abi, record, meta["fit"])
    lines += ["", "#ifdef __cplusplus", "}", "#endif", f"#endif /* {guard} */", ""]
    return "\n".join(lines)


def _entry_decls(abi: Abi, names, written: set) -> list[str]:
    """The entry's parameters in C: arrays it only reads are const, and each array's diffc
    type is noted beside it."""
    types = list(abi.inputs) + list(abi.outputs)
    decls = []
    for i, arg in enumerate(abi.entry_args(names)):
        if not arg.pointer or arg.role == "workspace":
            decls.append(arg.c_decl())
        else:
            const = arg.role == "input" and i not in written
            decls.append(f"{arg.c_decl(const)} /* {types[i]} */")
    return decls


def _threads_comment(abi: Abi) -> list[str]:
    return [
        "",
        "/* Threads: the code runs on the calling thread alone unless you give it more. Its",
        "   large loops (matrix products, row updates, ...) are cut into parts, a number that",
        "   depends on the sizes only, and run through the function pointer below, which starts",
        "   as a serial loop. Point it (before calling, never while a call runs) at a",
        "   parallel-for of your own: it must call task(ctx, part) exactly once for every",
        "   0 <= part < parts, on any threads in any order, and return when all have returned;",
        "   `work` estimates the multiply-adds of all the parts (run a small one inline). The",
        "   number of threads is then yours to choose, and results (outputs, updated arrays,",
        "   losses) are bit-identical for every choice. If calls run concurrently, it must",
        "   allow concurrent calls. */",
        f"extern void (*{abi.parallel_hook})(",
        "    void (*task)(void *ctx, int64_t part), void *ctx, int64_t parts, int64_t work);",
    ]


def _fit_section(abi: Abi, record: Record, fit: dict) -> list[str]:
    """The fit loop's prototype, what its arguments mean, and its table's slots as an enum."""
    fit_abi = Abi.from_json(fit["abi"])
    symbol = record.options["batch_symbol"]
    size = abi.fit_entry + "_workspace_size"
    dims = ", ".join(a.c_decl() for a in fit_abi.size_args()) or "void"
    takes = ("`batch` samples (the last step of an epoch the rest)" if symbol else
             "one sample (pass batch = 1)")
    prose = (
        f"{abi.fit_entry}: training over a data set of n samples in one call. It runs steps "
        f"first <= s < last of an epoch, taking the samples in the order perm[0..n) (a "
        f"permutation of 0..n-1: the identity for no shuffling); each step takes {takes}. "
        f"Step s writes its loss to losses[s] and updates the params, step_count and the state "
        f"in place, exactly as a call of {abi.entry} on the same samples does. An epoch has "
        f"ceil(n / batch) steps (n / batch drops a short last batch): call it once per epoch "
        f"with a new perm to shuffle, or in chunks (first, last). table[k] points at slot k of "
        f"the enum below ({abi.fit_entry}_slots slots); staging[k] at a buffer of `batch` rows "
        f"for each slot marked `staging`, else NULL. The dims are those of one full batch"
        f"{f' ({symbol} = batch)' if symbol else ''}; workspace points at {size}(dims) bytes, "
        f"aligned to 64, used by this call alone. */")
    return [
        "",
        "/* The train step's inputs are the function's, then `lr`, then `step_count` (one",
        "   double: the number of updates applied; each call adds 1 to it in place, and Adam's",
        "   bias corrections use step t = step_count + 1), then the optimizer state. Zero",
        "   step_count together with the state to start (or restart) training.",
        "",
        *textwrap.wrap(prose, 92, initial_indent="   ", subsequent_indent="   ",
                       break_on_hyphens=False),
        *([f"int64_t {fit_abi.workspace_size}({dims});"] if fit_abi.entry != abi.entry else []),
        f"#define {size} {fit_abi.workspace_size}",
        f"void {abi.fit_entry}(" + ", ".join(_fit_decl(a) for a in abi.fit_args()) + ");",
        "enum {",
        *_fit_slots(abi, record, fit_abi, fit["rewrites"]),
        "};",
    ]


def _fit_slots(abi: Abi, record: Record, fit_abi: Abi, rewrites: list[dict]) -> list[str]:
    """One enum line per slot of the fit loop's table (the inputs of the step it runs),
    saying what it points at; then the number of slots."""
    options, names = record.options, list(record.entry.names)
    n_args = len(record.signature.params)  # then lr, step_count and the optimizer state
    c_names = [a.name for a in abi.entry_args(names)][:len(names)]  # as the prototype spells them
    slots = []
    for i, name in enumerate(names):
        t = fit_abi.inputs[i]
        ctype = t.dtype.c_type
        if i in options["data"]:
            rows = "".join(f"[{d}]" for d in (t.shape[1:] if options["batch_symbol"] else t.shape))
            what = f"const {ctype}[n]{rows}: the whole data set" + (
                f"; staging: {ctype}[batch]{rows}" if options["batch_symbol"] else "")
        elif name in options["params"] or i > n_args:
            what = f"{ctype}{''.join(f'[{d}]' for d in t.shape)}: updated in place"
        elif t.ndim == 0:
            what = f"{ctype}: " + ("the learning rate" if i == n_args else "the same every step")
        else:
            what = f"const {ctype}{''.join(f'[{d}]' for d in t.shape)}: the same every step"
        slots.append((c_names[i], what))
    slots += [None] * (len(fit_abi.inputs) - len(slots))
    for k, r in enumerate(rewrites):  # cross-step fusion: W @ x carried to the next step
        carry = fit_abi.inputs[r["carry"]]
        slots[r["carry"]] = (f"carry{k}", f"{carry.dtype.c_type}[{carry.shape[0]}]: scratch, "
                             f"the next step's {names[r['weight']]} @ {names[r['data']]}")
        slots[r["next"]] = (f"next{k}", f"the data set of {names[r['data']]} again")
    enum = distinct_names([name for name, _ in slots], {"slots"})
    return [f"    {abi.fit_entry}_{name} = {k}, /* {what} */"
            for k, (name, (_, what)) in enumerate(zip(enum, slots, strict=True))] + [
        f"    {abi.fit_entry}_slots = {len(slots)}"]


def _fit_decl(arg) -> str:
    if arg.name == "table" or arg.name == "staging":
        return f"void **{arg.name}"
    return arg.c_decl(const=arg.name == "perm")
