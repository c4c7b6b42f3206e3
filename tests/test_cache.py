"""The cache's size cap (least recently used entries evicted first), `info`, `clear` and the
command line `python -m diffc cache info|clear`.

Entries are stored through `cache.store` with payloads of known sizes, and their ages set with
`os.utime` (file times have a coarse clock: two stores in a row may share a timestamp), so
which entries go is exactly predictable. Whatever the cap, files diffc did not write (other
names, links, folders, other users' files) are never removed.
"""
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import diffc
from diffc import ArgumentError, f64, nn
from diffc.__main__ import main
from diffc.runtime import cache

ENTRY_BYTES = 20_000  # the object code of each synthetic entry (plus a small header, IR, JSON)


@pytest.fixture
def folder(tmp_path, monkeypatch):
    path = tmp_path / "cache"
    monkeypatch.setenv("DIFFC_CACHE_DIR", str(path))
    monkeypatch.delenv("DIFFC_CACHE", raising=False)
    monkeypatch.delenv("DIFFC_CACHE_MAX_MB", raising=False)
    return path


def key(i: int) -> str:
    return f"{i:064x}"


def store(i: int, size: int = ENTRY_BYTES) -> None:
    cache.store(key(i), bytes([i % 256]) * size, "ir", {"entry": i})


def names(folder: Path) -> set[str]:
    return {p.name for p in folder.iterdir()}


def entries(folder: Path, *ids) -> set[str]:
    return {key(i) + ".bin" for i in ids}


def age(folder: Path, *ids) -> None:
    """Give the entries ids (oldest first) distinct times an hour ago."""
    base = time.time() - 3600
    for n, i in enumerate(ids):
        os.utime(folder / f"{key(i)}.bin", (base + n, base + n))


def cap_for(n_entries: float, monkeypatch) -> None:
    """A cap that holds n_entries synthetic entries (and not one more)."""
    monkeypatch.setenv("DIFFC_CACHE_MAX_MB", str(n_entries * (ENTRY_BYTES + 400) / 2 ** 20))


def test_stores_evict_the_oldest_entries_beyond_the_cap(folder, monkeypatch):
    cap_for(2.5, monkeypatch)
    for i in range(2):
        store(i)
    assert names(folder) == entries(folder, 0, 1)
    age(folder, 1, 0)
    store(2)
    assert names(folder) == entries(folder, 0, 2)  # 1 was the oldest
    age(folder, 2, 0)
    store(3)
    assert names(folder) == entries(folder, 0, 3)
    total = sum(p.stat().st_size for p in folder.iterdir())
    assert total <= cache.max_bytes() < total + ENTRY_BYTES


def test_a_hit_makes_an_entry_recently_used(folder, monkeypatch):
    cap_for(2.5, monkeypatch)
    for i in range(2):
        store(i)
    age(folder, 0, 1)
    hit = cache.load(key(0))
    assert hit is not None and hit[0] == bytes([0]) * ENTRY_BYTES
    store(2)  # 1 is now the least recently used
    assert names(folder) == entries(folder, 0, 2)


def test_a_compiled_hit_marks_its_entry_used(folder):
    @diffc.function(name="lru_probe")
    def first(x: f64[3]) -> f64:
        return nn.sum(x * 2.0)

    first.compile()
    (entry,) = folder.iterdir()
    os.utime(entry, (0, 0))

    @diffc.function(name="lru_probe")
    def again(x: f64[3]) -> f64:
        return nn.sum(x * 2.0)

    assert again.compile().artifacts.cached
    assert entry.stat().st_mtime > time.time() - 60


def test_an_entry_larger_than_the_cap_stays_alone(folder, monkeypatch):
    monkeypatch.setenv("DIFFC_CACHE_MAX_MB", "0")
    store(1)
    store(2)
    assert names(folder) == entries(folder, 2)
    assert cache.load(key(2)) is not None


def test_eviction_and_clear_remove_only_diffc_files(folder, monkeypatch):
    """Other names, a link and a folder named like entries, temporary files (for eviction)
    are left alone; clear also removes a store's leftover temporary file."""
    store(1)
    outside = folder.parent / "outside.bin"
    outside.write_bytes(b"x" * ENTRY_BYTES)
    (folder / "notes.txt").write_text("mine")
    (folder / f"{key(7)}.bin.bak").write_bytes(b"x" * ENTRY_BYTES)
    (folder / f"{key(0xabc).upper()}.bin").write_bytes(b"x" * ENTRY_BYTES)
    (folder / f"{key(9)}.bin").symlink_to(outside)
    (folder / f"{key(10)}.bin").mkdir()
    (folder / ".tmp-0123456789abcdef").write_bytes(b"x" * 100)
    foreign = names(folder) - entries(folder, 1)
    monkeypatch.setenv("DIFFC_CACHE_MAX_MB", "0")
    store(2)
    assert names(folder) == foreign | entries(folder, 2)
    assert cache.info().entries == 1
    size = (folder / f"{key(2)}.bin").stat().st_size
    assert cache.clear() == (1, size + 100)  # the entry and the temporary file
    assert names(folder) == foreign - {".tmp-0123456789abcdef"}
    assert outside.read_bytes() == b"x" * ENTRY_BYTES


@pytest.mark.parametrize("value", ["lots", "-1", "nan", "inf"])
def test_a_bad_cap_warns_once_and_the_default_applies(folder, monkeypatch, value):
    monkeypatch.setenv("DIFFC_CACHE_MAX_MB", value)
    monkeypatch.setattr(cache, "_warned", set())
    with pytest.warns(RuntimeWarning, match=f"DIFFC_CACHE_MAX_MB='{value}' is not a number"):
        store(1)
    assert cache.max_bytes() == cache.DEFAULT_MAX_MB * 2 ** 20
    store(2)
    assert names(folder) == entries(folder, 1, 2)


def test_info_counts_entries_and_bytes(folder, monkeypatch):
    assert cache.info() == cache.Info(str(folder), None, 0, 0, cache.DEFAULT_MAX_MB * 2 ** 20)
    assert not folder.exists()  # info creates nothing
    for i in range(3):
        store(i, 1000 * (i + 1))
    (folder / "notes.txt").write_text("not an entry")
    size = sum((folder / name).stat().st_size for name in entries(folder, 0, 1, 2))
    monkeypatch.setenv("DIFFC_CACHE_MAX_MB", "2.5")
    assert cache.info() == cache.Info(str(folder), None, 3, size, int(2.5 * 2 ** 20))
    monkeypatch.setenv("DIFFC_CACHE", "0")
    assert cache.info().problem == "DIFFC_CACHE=0 turns it off"


def test_an_untrusted_folder_is_neither_counted_nor_cleared(folder):
    store(1)
    folder.chmod(0o777)
    try:
        state = cache.info()
        assert state.problem.startswith("it is writable by group or others")
        before = names(folder)
        with pytest.raises(ArgumentError, match="^not clearing the cache .*: it is writable by "
                                                "group or others"):
            cache.clear()
        assert names(folder) == before
    finally:
        folder.chmod(0o700)


def run_cli(folder: Path, *args, **env) -> subprocess.CompletedProcess:
    script = ("import sys, runpy; sys.argv = ['diffc'] + sys.argv[1:]; "
              "runpy.run_module('diffc', run_name='__main__'); ")
    return subprocess.run([sys.executable, "-c", script, *args], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "DIFFC_CACHE_DIR": str(folder), **env})


def test_command_line_info_and_clear(folder, monkeypatch, capsys):
    for i in range(4):
        store(i, 2 ** 19)  # 0.5 MB each
    info = run_cli(folder, "cache", "info", DIFFC_CACHE_MAX_MB="300")  # as users run it
    assert info.returncode == 0, info.stderr
    lines = info.stdout.splitlines()
    assert lines[:3] == [f"folder:   {folder}", "in use:   yes", "entries:  4"]
    assert lines[3].startswith("size:     2.0 MB of at most 300.0 MB (DIFFC_CACHE_MAX_MB")
    assert main(["cache", "clear"]) == 0
    assert capsys.readouterr().out == f"removed 4 entries (2.0 MB) from {folder}\n"
    assert names(folder) == set()
    assert main(["cache", "info"]) == 0
    assert capsys.readouterr().out.splitlines()[2] == "entries:  0"


def test_command_line_refuses_an_untrusted_folder_and_bad_commands(folder, capsys):
    store(1)
    folder.chmod(0o770)
    try:
        assert main(["cache", "clear"]) == 1
        assert "writable by group or others" in capsys.readouterr().err
        assert names(folder) == entries(folder, 1)
    finally:
        folder.chmod(0o700)
    for bad in ([], ["cache"], ["cache", "wipe"], ["compile"]):
        with pytest.raises(SystemExit) as exit_:
            main(bad)
        assert exit_.value.code == 2 and "usage: python -m diffc" in capsys.readouterr().err


def test_command_line_needs_no_llvmlite(folder):
    script = ("import sys; sys.argv = ['diffc', 'cache', 'info']; import runpy\n"
              "try:\n    runpy.run_module('diffc', run_name='__main__')\n"
              "except SystemExit:\n    pass\n"
              "print(sorted(m for m in sys.modules if m.startswith('llvmlite')))")
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True,
                          timeout=60, env={**os.environ, "DIFFC_CACHE_DIR": str(folder)})
    assert done.returncode == 0 and done.stdout.splitlines()[-1] == "[]", done.stderr


WORKER = """
import json, sys
import numpy as np
import diffc
from diffc import f64, nn
results = []
for scale in range(1, 7):  # distinct programs: each a store that evicts the others' entries
    @diffc.function(name="shared_cache_probe")
    def f(x: f64[4]) -> f64:
        return nn.sum(nn.tanh(x) * float(scale))
    results.append(f(np.arange(4.0)))
print(json.dumps(results))
"""


def test_processes_sharing_a_tiny_cache_never_fail(folder):
    """Two compiling processes and this one clearing in a loop, with a cap smaller than any
    entry: each store evicts the others' entries (also while they are read); all results
    correct."""
    env = {**os.environ, "DIFFC_CACHE_DIR": str(folder), "DIFFC_CACHE_MAX_MB": "0.0001"}
    workers = [subprocess.Popen([sys.executable, "-c", WORKER], env=env, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
               for _ in range(2)]
    clears = 0
    while any(w.poll() is None for w in workers):
        cache.clear()
        clears += 1
        time.sleep(0.001)
    want = [float(np.sum(np.tanh(np.arange(4.0)) * s)) for s in range(1, 7)]
    for w in workers:
        out, err = w.communicate(timeout=60)
        assert w.returncode == 0, err
        assert json.loads(out) == pytest.approx(want, rel=1e-12)
    assert clears >= 1
    assert len([n for n in names(folder) if n.endswith(".bin")]) <= 1
