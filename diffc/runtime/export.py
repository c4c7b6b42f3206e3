"""Export compiled code as standalone artifacts: `path.o`, `path.h`, `path.json`, `path.so`.

Input: the record, `Native` description, IR text and object code of a compiled callable (plain,
grad, value_and_grad or train step), and a maker of the digest's object. Output: the object code
(position-independent, no libm or Python symbols), a C header generated from the signature that
documents argument order, layout, symbolic dims, the workspace, in-place arguments, thread
safety and the parallel hook (how a C program runs the code on threads of its own), the
signature as JSON (what `diffc.load` rebuilds the calling convention from) and, where a system
C compiler exists, a shared library linked from the object.
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
import warnings

from .abi import Abi, Native
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
        lines += _fit_comment(abi)
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


def _fit_comment(abi: Abi) -> list[str]:
    return [
        "",
        "/* The train step's inputs are the function's, then `lr`, then `step_count` (one",
        "   double: the number of updates applied; each call adds 1 to it in place, and Adam's",
        "   bias corrections use step t = step_count + 1), then the optimizer state. Zero",
        "   step_count together with the state to start (or restart) training.",
        f"   {abi.fit_entry} runs steps first <= s < last of an epoch over n samples in the",
        "   order perm: table[i] points at input i (data inputs: the whole data set with a",
        "   leading sample axis; a scalar such as `lr`: its value; each step updates the",
        "   params, step_count and the state in place), staging[i] at a batch-sized buffer",
        "   for batched data inputs; step s writes its loss to losses[s].",
        "   The table lists the inputs of the JSON's fit.abi: with cross-step fusion",
        "   (fit.rewrites) each fused layer adds a carry buffer (W @ x, of W's row count) and",
        "   the data set of its x again. */",
        f"void {abi.fit_entry}(" + ", ".join(_fit_decl(a) for a in abi.fit_args()) + ");",
    ]


def _fit_decl(arg) -> str:
    if arg.name == "table" or arg.name == "staging":
        return f"void **{arg.name}"
    return arg.c_decl(const=arg.name == "perm")
