"""The on-disk cache of compiled code.

Input: the text of a program (before any pass) and what else decides its machine code (name,
fit loop, target, CPU name and features, llvmlite/LLVM versions, options and a digest of
diffc's own source: compiler/llvm.py's `cache_context`). Output: the object code, optimized
LLVM IR and `Native` description (as JSON) of an earlier compile, or None: a hit skips the
passes, code generation and LLVM.
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

MAGIC = b"diffc-cache-2\n"
PARTS = 3  # object code, LLVM IR, JSON


def enabled() -> bool:
    return os.environ.get("DIFFC_CACHE", "1") != "0"


def directory() -> str:
    return os.environ.get("DIFFC_CACHE_DIR") or os.path.join(os.path.expanduser("~"), ".cache",
                                                             "diffc")


def key(text: str, context: dict) -> str:
    """The sha256 of the program text and everything else its object code depends on."""
    h = hashlib.sha256()
    h.update(json.dumps(context, sort_keys=True).encode())
    h.update(b"\0")
    h.update(text.encode())
    return h.hexdigest()


def _path(k: str) -> str:
    return os.path.join(directory(), k + ".bin")


def load(k: str) -> tuple[bytes, str, dict] | None:
    """(object code, optimized LLVM IR, JSON) stored under key k, or None if absent or damaged."""
    if not enabled():
        return None
    try:
        with open(_path(k), "rb") as f:
            data = f.read()
    except OSError:
        return None
    header = len(MAGIC) + 64 + 1
    if len(data) < header + 8 * PARTS or not data.startswith(MAGIC):
        return None
    digest, payload = data[len(MAGIC):header - 1], data[header:]
    if hashlib.sha256(payload).hexdigest().encode() != digest:
        return None
    sizes = [int.from_bytes(payload[8 * i:8 * i + 8], "little") for i in range(PARTS)]
    if 8 * PARTS + sum(sizes) != len(payload):
        return None
    parts, at = [], 8 * PARTS
    for size in sizes:
        parts.append(payload[at:at + size])
        at += size
    try:
        return parts[0], parts[1].decode(), json.loads(parts[2])
    except ValueError:  # includes UnicodeDecodeError and JSONDecodeError
        return None


def store(k: str, object_code: bytes, llvm_ir: str, meta: dict) -> None:
    """Write an entry atomically; a cache that cannot be written is skipped silently."""
    if not enabled():
        return
    parts = [object_code, llvm_ir.encode(), json.dumps(meta).encode()]
    payload = b"".join(len(p).to_bytes(8, "little") for p in parts) + b"".join(parts)
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
