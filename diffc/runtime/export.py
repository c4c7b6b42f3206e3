"""Export compiled code as standalone artifacts: `path.o`, `path.h`, `path.json`, `path.so`.

Input: a compiled function (plain, grad, value_and_grad or train step). Output: the object code
(position-independent, no libm or Python symbols), a C header generated from the signature that
documents argument order, layout, symbolic dims, the workspace, in-place arguments and thread
safety, the signature as JSON (what `diffc.load` rebuilds the calling convention from) and,
where a system C compiler exists, a shared library linked from the object.
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

from .abi import Abi, type_to_json
from .load import FORMAT, description_digest

C_TYPES = {"f32": "float", "f64": "double", "i32": "int32_t", "i64": "int64_t"}


def export(fn, path: str) -> list[str]:
    """Write the artifacts of fn next to `path` (a path without extension); return their paths."""
    compiled = fn.compile()._compiled
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    meta = json.loads(json.dumps(metadata(fn, compiled)))  # as `load` will read it
    _write(path + ".o", compiled.object_code)
    library = _link(path, meta)
    meta["files"] = {"o": file_record(compiled.object_code),
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


def _link(path: str, meta: dict) -> bytes | None:
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
    from ..compiler import codegen, llvm
    symbol = meta["abi"]["entry"] + "_export_digest"  # a name C programs can read it by
    digest = llvm.compile_module(codegen.constant_module(symbol, symbol,
                                                         description_digest(meta)))
    with tempfile.TemporaryDirectory(prefix="diffc-export-") as folder:
        digest_o, library = os.path.join(folder, "digest.o"), os.path.join(folder, "lib.so")
        with open(digest_o, "wb") as f:
            f.write(digest.object_code)
        result = subprocess.run([cc, "-shared", "-o", library, path + ".o", digest_o],
                                capture_output=True, text=True)
        if result.returncode != 0:
            raise RuntimeError(f"linking {path}.so failed:\n{result.stderr}")
        with open(library, "rb") as f:
            data = f.read()
    _write(path + ".so", data)
    return data


def metadata(fn, compiled) -> dict:
    """The JSON description of an exported function: everything `diffc.load` needs."""
    from .. import __version__
    sig = fn._entry_signature
    return {
        "format": FORMAT,
        "diffc": __version__,
        "name": fn.name,
        "kind": fn._export_kind(),
        "options": fn._export_options(),
        "params": [{"name": p.name, **type_to_json(p.type)} for p in sig.params],
        "result": type_to_json(sig.result),
        "ir": fn.ir,
        **compiled.native.to_json(),
    }


def c_header(meta: dict) -> str:
    abi = Abi.from_json(meta["abi"])
    names = [p["name"] for p in meta["params"]]
    written = set(meta["written"])
    guard = f"DIFFC_{abi.entry.upper()}_H"
    args = []
    for i, (name, t) in enumerate(zip(names, abi.inputs, strict=True)):
        ctype = C_TYPES[t.dtype.name]
        if t.ndim == 0:
            args.append(f"{ctype} {_c_ident(name)}")
        else:
            const = "" if i in written else "const "
            args.append(f"{const}{ctype} *{_c_ident(name)} /* {t} */")
    args += [f"{C_TYPES[t.dtype.name]} *out{j} /* {t} */" for j, t in enumerate(abi.outputs)]
    args += [f"int64_t {s}" for s in abi.symbols] + ["void *workspace"]
    dims = ", ".join(f"int64_t {s}" for s in abi.symbols) or "void"
    in_place = ", ".join(names[i] for i in sorted(written)) or "none"
    lines = [
        f"/* {abi.entry}: generated by diffc {meta['diffc']} for `{meta['name']}` "
        f"({meta['kind']}). */",
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
    ]
    if meta["kind"] == "train_step":
        lines += [
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
            f"void {abi.fit_entry}(void **table, const int64_t *perm, int64_t first, "
            f"int64_t last, int64_t batch, int64_t n, {C_TYPES[abi.outputs[0].dtype.name]} "
            f"*losses, void **staging" + "".join(f", int64_t {s}" for s in abi.symbols) +
            ", void *workspace);",
        ]
    lines += ["", "#ifdef __cplusplus", "}", "#endif", f"#endif /* {guard} */", ""]
    return "\n".join(lines)


def _c_ident(name: str) -> str:
    return "".join(ch if ch.isalnum() else "_" for ch in name)
