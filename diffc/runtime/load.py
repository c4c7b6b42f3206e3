"""Loading an export: run exported code with numpy and ctypes only (no llvmlite, tracing or
compiling).

Input: the path given to `export` (or the path of one of its files: `m.so` or `m.json` for the
export `m`). Output: an `Export`: the `Record` of
the exported callable (function, gradient, train step), its IR text and a `NativeProgram` with
the same calling convention and argument validation, built from `path.json` and calling into
`path.so` (`diffc.load`, api/load.py, makes the user's object from it).
Invariants: the .so is mapped only if its bytes have the size and sha256 the .json records and
hold the digest of the .json (export.py links it in as `<entry>_export_digest`): the .json is
then the one written with this .so, so the label ranges, shapes and in-place arguments it gives
are those the code was compiled for. (A .json changed since has another digest, which a .so
holds by chance with probability 2^-256.) The bytes checked are the bytes mapped: a private
copy, at a path new to the process (dlopen hands out the library already mapped for a path, so
a re-exported path would otherwise run its old code). Every failure is an `ArgumentError`
naming the file and what is wrong with it. This detects damaged, mixed-up and edited exports,
not forged ones: whoever can write both files can make them agree, and loading an export runs
its native code, so load only exports you would trust as a library.
"""
from __future__ import annotations

import ctypes
import hashlib
import itertools
import json
import os
import re
import tempfile
from dataclasses import dataclass

from ..core.errors import ArgumentError
from .abi import Native
from .call import NativeProgram
from .files import read_regular
from .record import Record

# the version of the .json and of the calling convention it describes; bump when what load
# reads changes. 2: a train step takes its step count as an in-place `step_count` (f64[1]) and
# the .json records the digests of the .o and .so; 3: the callable is described by a `record`;
# 4: the .so defines the parallel hook `<entry>_parallel` (compiler/codegen.py `add_hook`)
FORMAT = 4
SUFFIXES = (".json", ".so", ".o", ".h")  # the files of an export at `path`: path.json, ...
_copies = itertools.count()  # numbers the private copies, so that no path is mapped twice


@dataclass(frozen=True)
class Export:
    """What `load` gives the API: the record of the exported callable, its IR as text and its
    native code, ready to call."""

    record: Record
    ir: str
    program: NativeProgram


def description_digest(meta: dict) -> bytes:
    """The sha256 of an export's JSON without its files record (which holds the digest of the
    .so this digest is linked into)."""
    body = {k: v for k, v in meta.items() if k != "files"}
    return hashlib.sha256(json.dumps(body, sort_keys=True, separators=(",", ":")).encode()).digest()


def load(path) -> Export:
    """The export at `path` (as given to `export`), verified and mapped."""
    given = path
    if isinstance(path, os.PathLike):
        path = os.fspath(path)
    if not isinstance(path, str):
        raise ArgumentError(f"path: expected a str or os.PathLike (the path given to export), "
                            f"got {type(given).__name__}")
    path = export_path(path)
    meta = _read_json(path + ".json")
    data = _read(path + ".so", path + ".json", _so_record(meta, path + ".json"))
    if description_digest(meta) not in data:  # the .so holds the digest of its own .json
        raise _bad(path + ".json", f"does not describe {path}.so: it was changed after export, "
                   f"or the .so was not linked by the export that wrote it (export again)")
    library = _map_copy(path + ".so", data)  # ctypes never unloads it: addresses stay valid
    native, record = Native.from_json(meta), Record.from_json(meta["record"])
    addresses = {s: ctypes.cast(getattr(library, s), ctypes.c_void_p).value
                 for s in native.symbols()}
    return Export(record, meta["ir"], NativeProgram(native, record.entry, addresses, library))


def export_path(path: str) -> str:
    """The path given to export, from itself or from one of the export's files (`m.so` for
    the export `m`): `path` if `path.json` exists, else `path` without its suffix if that names
    an export. Neither: an ArgumentError naming the files looked for."""
    if os.path.lexists(path + ".json"):
        return path
    stem, suffix = os.path.splitext(path)
    if suffix in SUFFIXES and os.path.lexists(stem + ".json"):
        return stem
    folder = os.path.dirname(path)
    if folder and not os.path.isdir(folder):
        raise _bad(path, f"names no export: the folder {folder} does not exist")
    missing = (f"neither {path}.json nor {stem}.json exists" if suffix in SUFFIXES else
               f"{path}.json does not exist")
    raise _bad(path, f"names no export: {missing} (export(path) writes path.json, path.so, "
               f"path.o and path.h; load takes path or one of those)")


def _bad(file: str, what: str) -> ArgumentError:
    return ArgumentError(f"diffc.load: {file} {what}")


def _read(file: str, json_file: str | None = None, expected: dict | None = None) -> bytes:
    """The bytes of a regular file (checked against `expected` size and sha256, if given)."""
    try:
        data = read_regular(file)
    except FileNotFoundError:
        hint = f", though {json_file} records it (moved or deleted since? export again)" if \
            expected else ""
        raise _bad(file, f"does not exist{hint}") from None
    except (OSError, ValueError) as e:
        raise _bad(file, f"cannot be read: {e}") from None
    if expected is not None and (len(data) != expected["size"] or
                                 hashlib.sha256(data).hexdigest() != expected["sha256"]):
        raise _bad(file, f"does not match {json_file} (it is not the file exported with it, or "
                   f"it was damaged or changed since; export again)")
    return data


def _read_json(file: str) -> dict:
    data = _read(file)
    try:
        meta = json.loads(data)
    except (ValueError, RecursionError) as e:  # ValueError: JSONDecodeError, UnicodeDecodeError
        raise _bad(file, f"is not valid JSON ({type(e).__name__}: {e})") from None
    if not isinstance(meta, dict):
        raise _bad(file, f"is not a diffc export (a JSON {type(meta).__name__}, not an object)")
    return meta


def _so_record(meta: dict, file: str) -> dict:
    """The size and sha256 of the .so, checked for type: all load reads from the JSON before
    the JSON itself is checked against the digest in the .so."""
    if "format" not in meta:
        raise _bad(file, "has no format field: it was written by an older diffc, or is no "
                   "diffc export (export it again)")
    if meta["format"] != FORMAT:
        raise _bad(file, f"is in export format {meta['format']!r} (by diffc "
                   f"{meta.get('diffc')!r}), not {FORMAT}: export it again with this diffc")
    files = meta.get("files")
    record = files.get("so", {}) if isinstance(files, dict) else {}
    if record is None:
        raise _bad(file, "records no .so: it was exported where no C compiler was found "
                   "(export it again where `cc` exists)")
    if not (isinstance(record, dict) and type(record.get("size")) is int and
            isinstance(record.get("sha256"), str) and
            re.fullmatch("[0-9a-f]{64}", record["sha256"])):
        raise _bad(file, "has no valid files.so record (size and sha256 of the .so)")
    return record


def _map_copy(file: str, data: bytes) -> ctypes.CDLL:
    """dlopen a private copy of data (the verified bytes of `file`) at a path new to the process;
    the copy is deleted once mapped."""
    try:
        folder = tempfile.mkdtemp(prefix="diffc-load-")
    except OSError as e:
        raise _bad(file, f"cannot be loaded: no temporary folder for its private copy ({e}); "
                   f"set TMPDIR to a writable folder") from None
    copy = os.path.join(folder, f"{next(_copies)}-{os.path.basename(file)[-64:]}")
    try:
        with open(copy, "xb") as f:
            f.write(data)
        return ctypes.CDLL(copy)
    except OSError as e:
        raise _bad(file, f"cannot be loaded: {e} (its private copy was in {folder}: if that "
                   f"folder's file system is mounted noexec, set TMPDIR to another)") from None
    finally:
        if os.path.exists(copy):
            os.unlink(copy)
        os.rmdir(folder)
