"""The on-disk cache of compiled code.

Input: the text of a program (before any pass) and what else decides its machine code (name,
fit loop, target, CPU name and features, llvmlite/LLVM versions, options and a digest of
diffc's own source: compiler/llvm.py's `cache_context`). Output: the object code, optimized
LLVM IR and `Native` description (as JSON) of an earlier compile, or None: a hit skips the
passes, code generation and LLVM.
Invariants: `DIFFC_CACHE_DIR` (default `~/.cache/diffc`, created private, 0700) is used only
if it is owned by the user and not writable by group or others (as ssh and pip require);
otherwise diffc warns once and compiles without it, reading and writing nothing there. Object
code is native code the process runs, and a checksum is no signature: anyone who can write the
folder could plant an entry. The folder is checked and used through one open descriptor, so the
folder checked is the folder used. An entry (one per key, 0600, written atomically: a temporary
file renamed into place) is read only if it is a regular file of the user, not a symlink, and
at most `files.MAX_BYTES` long; it carries its key and the sha256 of its payload, and a
damaged, truncated or other key's entry is ignored (and rebuilt), never loaded.
`DIFFC_CACHE=0` turns the cache off: nothing is read or written.
"""
from __future__ import annotations

import hashlib
import json
import os
import secrets
import warnings

from .files import read_regular

MAGIC = b"diffc-cache-3\n"
PARTS = 3  # object code, LLVM IR, JSON
HEADER = len(MAGIC) + 2 * 65  # the magic, then the key and the payload's sha256 (hex lines)
_warned: set[str] = set()  # untrusted folders already warned about


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


def _open_folder() -> int | None:
    """A descriptor of the cache folder if the cache is on and the folder is the user's alone
    (warning once per folder otherwise), else None."""
    if not enabled():
        return None
    folder = directory()
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError:
        return None
    st = os.fstat(fd)
    if st.st_uid == os.geteuid() and not st.st_mode & 0o022:
        return fd
    os.close(fd)
    if folder not in _warned:
        _warned.add(folder)
        why = (f"owned by uid {st.st_uid}, not by you (uid {os.geteuid()})"
               if st.st_uid != os.geteuid() else "writable by group or others")
        warnings.warn(f"diffc: not using the compiled-code cache {folder}: it is {why}, so "
                      f"others could plant native code in it. Use a private folder "
                      f"(DIFFC_CACHE_DIR, or `chmod go-w {folder}` if it is yours); compiling "
                      f"without a cache meanwhile", RuntimeWarning, stacklevel=4)
    return None


def _header(k: str, payload: bytes) -> bytes:
    """What an entry of key k starts with: it binds the entry to its key and its payload."""
    return MAGIC + k.encode() + b"\n" + hashlib.sha256(payload).hexdigest().encode() + b"\n"


def load(k: str) -> tuple[bytes, str, dict] | None:
    """(object code, optimized LLVM IR, JSON) stored under key k, or None if absent, damaged,
    stored under another key or not safe to read."""
    folder = _open_folder()
    if folder is None:
        return None
    try:
        data = read_regular(k + ".bin", dir_fd=folder, follow=False, owner=os.geteuid())
    except (OSError, ValueError):
        return None
    finally:
        os.close(folder)
    payload = data[HEADER:]
    if len(payload) < 8 * PARTS or data[:HEADER] != _header(k, payload):
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
    folder = _open_folder()
    if folder is None:
        return
    parts = [object_code, llvm_ir.encode(), json.dumps(meta).encode()]
    payload = b"".join(len(p).to_bytes(8, "little") for p in parts) + b"".join(parts)
    data = _header(k, payload) + payload
    tmp = f".tmp-{secrets.token_hex(8)}"
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600,
                     dir_fd=folder)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            os.replace(tmp, k + ".bin", src_dir_fd=folder, dst_dir_fd=folder)
        except BaseException:
            os.unlink(tmp, dir_fd=folder)
            raise
    except OSError:
        return
    finally:
        os.close(folder)
