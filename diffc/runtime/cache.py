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
The folder is capped at `DIFFC_CACHE_MAX_MB` megabytes (2**20 bytes; default `DEFAULT_MAX_MB`):
a hit marks its entry used (its mtime), and each store then removes the least recently used
entries until the entries fit (the one just stored stays, even alone over the cap). `info` and
`clear` (`python -m diffc cache info|clear`) inspect and empty it. Only diffc's files are ever
removed: regular files of the user named like an entry (or like a store's temporary file);
anything else in the folder is left alone. Processes sharing the folder may remove each
other's entries (a reader keeps the bytes it opened); they never fail because of it.
"""
from __future__ import annotations

import hashlib
import json
import os
import re
import secrets
import stat
import warnings
from dataclasses import dataclass

from ..core.errors import ArgumentError
from .files import read_regular

MAGIC = b"diffc-cache-3\n"
PARTS = 3  # object code, LLVM IR, JSON
HEADER = len(MAGIC) + 2 * 65  # the magic, then the key and the payload's sha256 (hex lines)
DEFAULT_MAX_MB = 500
ENTRY = re.compile(r"[0-9a-f]{64}\.bin")  # an entry's name: its key
TEMPORARY = re.compile(r"\.tmp-[0-9a-f]{16}")  # a store's file before its rename
_warned: set[str] = set()  # untrusted folders and bad caps already warned about


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


def max_bytes() -> int:
    """The cap: DIFFC_CACHE_MAX_MB megabytes (a number >= 0; otherwise a warning, once, and
    the default)."""
    text = os.environ.get("DIFFC_CACHE_MAX_MB", "")
    try:
        mb = float(text) if text else DEFAULT_MAX_MB
    except ValueError:
        mb = -1.0
    if not 0 <= mb < float("inf"):
        if text not in _warned:
            _warned.add(text)
            warnings.warn(f"diffc: DIFFC_CACHE_MAX_MB={text!r} is not a number of megabytes "
                          f">= 0; the cache is capped at the default, {DEFAULT_MAX_MB} MB",
                          RuntimeWarning, stacklevel=4)
        mb = DEFAULT_MAX_MB
    return int(mb * 2 ** 20)


def _distrust(st: os.stat_result) -> str | None:
    """Why a folder with this status may not hold the cache, or None if it is the user's alone."""
    if st.st_uid != os.geteuid():
        return f"owned by uid {st.st_uid}, not by you (uid {os.geteuid()})"
    if st.st_mode & 0o022:
        return "writable by group or others"
    return None


def _open(folder: str) -> tuple[int | None, str | None]:
    """(a descriptor of the existing folder if it may hold the cache, else None; why not)."""
    try:
        fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    except OSError as e:
        return None, f"cannot be opened ({e.strerror})"
    why = _distrust(os.fstat(fd))
    if why is None:
        return fd, None
    os.close(fd)
    return None, f"it is {why}, so others could plant native code in it"


def _open_folder() -> int | None:
    """A descriptor of the cache folder (created if missing) if the cache is on and the folder
    is the user's alone (warning once per folder otherwise), else None."""
    if not enabled():
        return None
    folder = directory()
    try:
        os.makedirs(folder, mode=0o700, exist_ok=True)
    except OSError:
        return None
    fd, why = _open(folder)
    if fd is None and folder not in _warned:
        _warned.add(folder)
        warnings.warn(f"diffc: not using the compiled-code cache {folder}: {why}. Use a "
                      f"private folder (DIFFC_CACHE_DIR, or `chmod go-w {folder}` if it is "
                      f"yours); compiling without a cache meanwhile", RuntimeWarning,
                      stacklevel=4)
    return fd


def _entries(folder: int, pattern=ENTRY) -> list[tuple[int, int, str]]:
    """(mtime in ns, size, name) of the folder's files named like `pattern` that are regular
    files of the user: the only files the cache ever removes."""
    found = []
    for name in os.listdir(folder):
        if not pattern.fullmatch(name):
            continue
        try:
            st = os.stat(name, dir_fd=folder, follow_symlinks=False)
        except OSError:  # removed meanwhile by another process
            continue
        if stat.S_ISREG(st.st_mode) and st.st_uid == os.geteuid():
            found.append((st.st_mtime_ns, st.st_size, name))
    return found


def _evict(folder: int, keep: str) -> None:
    """Remove the least recently used entries (but `keep`) until the entries fit the cap."""
    entries = sorted(_entries(folder))
    total, cap = sum(size for _, size, _ in entries), max_bytes()
    for _, size, name in entries:
        if total <= cap:
            return
        if name == keep:
            continue
        try:
            os.unlink(name, dir_fd=folder)
        except FileNotFoundError:  # another process evicted it first
            pass
        except OSError:
            continue
        total -= size


@dataclass(frozen=True)
class Info:
    """What `python -m diffc cache info` shows: the folder, whether diffc uses it (`problem`
    says why not), its entries and their total size, and the cap."""

    folder: str
    problem: str | None
    entries: int
    size: int
    max_bytes: int


def info() -> Info:
    """The cache folder's state, read without creating or changing anything."""
    folder, cap = directory(), max_bytes()
    if not os.path.isdir(folder):
        return Info(folder, None if enabled() else "DIFFC_CACHE=0 turns it off", 0, 0, cap)
    fd, why = _open(folder)
    if fd is None:
        return Info(folder, why, 0, 0, cap)
    try:
        entries = _entries(fd)
    finally:
        os.close(fd)
    problem = None if enabled() else "DIFFC_CACHE=0 turns it off"
    return Info(folder, problem, len(entries), sum(size for _, size, _ in entries), cap)


def clear() -> tuple[int, int]:
    """Remove every entry (and temporary file left by an interrupted store): (entries removed,
    their bytes). A folder diffc would not use is left alone: an ArgumentError says why."""
    folder = directory()
    if not os.path.isdir(folder):
        return 0, 0
    fd, why = _open(folder)
    if fd is None:
        raise ArgumentError(f"not clearing the cache {folder}: {why}; remove what is yours "
                            f"in it by hand")
    removed, size = 0, 0
    try:
        for pattern in (ENTRY, TEMPORARY):
            for _, n, name in _entries(fd, pattern):
                try:
                    os.unlink(name, dir_fd=fd)
                except OSError:  # removed meanwhile
                    continue
                removed += pattern is ENTRY
                size += n
    finally:
        os.close(fd)
    return removed, size


def _header(k: str, payload: bytes) -> bytes:
    """What an entry of key k starts with: it binds the entry to its key and its payload."""
    return MAGIC + k.encode() + b"\n" + hashlib.sha256(payload).hexdigest().encode() + b"\n"


def load(k: str) -> tuple[bytes, str, dict] | None:
    """(object code, optimized LLVM IR, JSON) stored under key k, or None if absent, damaged,
    stored under another key or not safe to read. A hit marks the entry used (its mtime)."""
    folder = _open_folder()
    if folder is None:
        return None
    try:
        data = read_regular(k + ".bin", dir_fd=folder, follow=False, owner=os.geteuid())
        parts = _parts(k, data)
        if parts is not None:
            os.utime(k + ".bin", dir_fd=folder, follow_symlinks=False)
        return parts
    except (OSError, ValueError):
        return None
    finally:
        os.close(folder)


def _parts(k: str, data: bytes) -> tuple[bytes, str, dict] | None:
    """The parts of an entry of key k, or None if it is damaged or another key's."""
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
    """Write an entry atomically, then evict down to the cap; a cache that cannot be written
    is skipped silently."""
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
        _evict(folder, k + ".bin")
    except OSError:
        return
    finally:
        os.close(folder)
