"""The on-disk cache of compiled code.

Input: the text of a module's LLVM IR and what else decides its machine code (target, CPU name
and features, llvmlite/LLVM and diffc versions, options). Output: the object code and optimized
LLVM IR of an earlier compile, or None.
Invariants: `DIFFC_CACHE_DIR` (default `~/.cache/diffc`, created private, 0700) holds one file
per key, written atomically (a temporary file renamed into place), so concurrent writers never
expose a partial entry; every entry carries the sha256 of its payload and is checked when read:
a corrupt, truncated or mismatched entry is ignored (and rebuilt), never loaded.
`DIFFC_CACHE=0` turns the cache off: nothing is read or written.
"""
from __future__ import annotations

import hashlib
import json
import os
import tempfile

MAGIC = b"diffc-cache-1\n"


def enabled() -> bool:
    return os.environ.get("DIFFC_CACHE", "1") != "0"


def directory() -> str:
    return os.environ.get("DIFFC_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache",
                                                             "diffc")


def key(llvm_ir: str, context: dict) -> str:
    """The sha256 of the IR text and everything else its object code depends on."""
    h = hashlib.sha256()
    h.update(json.dumps(context, sort_keys=True).encode())
    h.update(b"\0")
    h.update(llvm_ir.encode())
    return h.hexdigest()


def _path(k: str) -> str:
    return os.path.join(directory(), k + ".bin")


def load(k: str) -> tuple[bytes, str] | None:
    """(object code, optimized LLVM IR) stored under key k, or None if absent or damaged."""
    if not enabled():
        return None
    try:
        with open(_path(k), "rb") as f:
            data = f.read()
    except OSError:
        return None
    header = len(MAGIC) + 64 + 1
    if len(data) < header + 16 or not data.startswith(MAGIC):
        return None
    digest, payload = data[len(MAGIC):header - 1], data[header:]
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        return None
    obj_size, ir_size = int.from_bytes(payload[:8], "little"), int.from_bytes(payload[8:16],
                                                                               "little")
    if 16 + obj_size + ir_size != len(payload):
        return None
    body = payload[16:]
    try:
        return body[:obj_size], body[obj_size:].decode()
    except UnicodeDecodeError:
        return None


def store(k: str, object_code: bytes, llvm_ir: str) -> None:
    """Write an entry atomically; a cache that cannot be written is skipped silently."""
    if not enabled():
        return
    ir_bytes = llvm_ir.encode()
    payload = (len(object_code).to_bytes(8, "little") + len(ir_bytes).to_bytes(8, "little") +
               object_code + ir_bytes)
    data = MAGIC + hashlib.sha256(payload).hexdigest().encode() + b"\n" + payload
    folder = directory()
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=".tmp-")
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, _path(k))
        except BaseException:
            os.unlink(tmp)
            raise
    except OSError:
        return
