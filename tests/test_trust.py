"""Native code runs only if it is what diffc built for this program: the compiled-code cache
(untrusted folders; damaged, swapped, special, oversize and foreign entries) and `diffc.load`
(truncated, flipped, mixed-up, edited and re-exported exports). Each bad case must end in a
rebuild or a `DiffcError` naming the file: never a crash, a hang or someone else's code.
Cases where the unfixed code crashes or hangs run in a subprocess (with a memory limit, so a
runaway read fails instead of filling the machine)."""
import json
import os
import shutil
import subprocess
import sys
import warnings
from hashlib import sha256
from pathlib import Path

import numpy as np
import pytest

import diffc
from diffc import ArgumentError, f64, i32, nn
from diffc.compiler import llvm, pipeline
from diffc.runtime import cache, files

HAVE_CC = shutil.which("cc") is not None
IS_ROOT = os.geteuid() == 0
NOT_ROOT = "needs root: only root can give a file to another user (os.chown)"
OTHER_UID = 65534  # nobody
LIMIT = "import resource; resource.setrlimit(resource.RLIMIT_AS, (3 << 30, 3 << 30))\n"


def run_script(script: str, *args, timeout: float = 60, **env) -> list[dict]:
    """Run script in a new process; the JSON lines it printed. A crash or hang fails the test
    naming the last case started."""
    try:
        done = subprocess.run([sys.executable, "-c", LIMIT + script, *map(str, args)],
                              capture_output=True, text=True, timeout=timeout,
                              env={**os.environ, **env})
        stdout, stderr, code = done.stdout, done.stderr, done.returncode
    except subprocess.TimeoutExpired as e:
        stdout, stderr, code = (e.stdout or b"").decode(), "timed out", "hang"
    lines = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    started = [r["case"] for r in lines if r.get("start")]
    assert code == 0, f"exit {code} in case {started[-1:] or '-'}: {stderr[-2000:]}"
    return [r for r in lines if not r.get("start")]


# ------------------------------------------------------------------ the cache's folder

def scaled(scale: float):
    """A fresh (newly traced) function; the same scale gives the same program and key."""
    @diffc.function(name="scaled")
    def f(x: f64[3]) -> f64:
        return nn.sum(nn.tanh(x) * scale)
    MADE.append(f)
    return f


X3 = np.array([0.5, -1.0, 2.0])


MADE: list = []  # the functions `scaled` made, in order


class Compiles:
    """How many of the functions `scaled` made were compiled (a cache hit compiles nothing)."""

    def __len__(self) -> int:
        return sum(not f.artifacts.cached for f in MADE)

    def clear(self) -> None:
        MADE.clear()


@pytest.fixture
def compiles():
    MADE.clear()
    return Compiles()


def snapshot(folder: Path) -> dict:
    return {p.name: (p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns)
            for p in folder.iterdir()}


def check_untrusted(folder: Path, monkeypatch, compiles, reason: str) -> None:
    """With folder untrusted, compiling reads and writes nothing there and warns once."""
    before = snapshot(folder)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        for scale in (2.0, 3.0, 2.0):  # 2.0 has a valid entry there: it must not be read
            assert scaled(scale)(X3) == pytest.approx(np.sum(np.tanh(X3)) * scale, rel=1e-12)
    assert len(compiles) == 3
    assert snapshot(folder) == before
    assert [type(w.message) for w in caught] == [RuntimeWarning], [str(w.message) for w in caught]
    message = str(caught[0].message)
    assert str(folder) in message and reason in message and "chmod go-w" in message


@pytest.fixture
def cache_folder(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("DIFFC_CACHE_DIR", str(folder))
    monkeypatch.delenv("DIFFC_CACHE", raising=False)
    return folder


@pytest.mark.parametrize("mode", [0o777, 0o770, 0o702])
def test_cache_folder_writable_by_others_is_not_used(cache_folder, monkeypatch, compiles,
                                                     mode):
    assert scaled(2.0)(X3) == pytest.approx(np.sum(np.tanh(X3)) * 2.0, rel=1e-12)
    assert len(compiles) == 1 and len(os.listdir(cache_folder)) == 1
    assert scaled(2.0)(X3) and len(compiles) == 1  # a hit while the folder is private
    cache_folder.chmod(mode)
    compiles.clear()
    check_untrusted(cache_folder, monkeypatch, compiles, "writable by group or others")


@pytest.mark.skipif(not IS_ROOT, reason=NOT_ROOT)
def test_cache_folder_of_another_user_is_not_used(cache_folder, monkeypatch, compiles):
    scaled(2.0)(X3)
    os.chown(cache_folder, OTHER_UID, OTHER_UID)
    compiles.clear()
    check_untrusted(cache_folder, monkeypatch, compiles, f"owned by uid {OTHER_UID}")


# ------------------------------------------------------------------ the cache's entries

def entry_path(folder: Path, fn) -> Path:
    return folder / (pipeline.cache_key(fn.program, fn.name, None, llvm.host_target()) + ".bin")


def test_cache_entry_of_another_key_is_not_loaded(cache_folder, compiles):
    """g's valid entry copied over f's (same types): f must not run g's code."""
    f, g = scaled(2.0), scaled(-5.0)
    assert f(X3) != g(X3) and len(compiles) == 2
    f_entry, g_entry = entry_path(cache_folder, f), entry_path(cache_folder, g)
    shutil.copy(g_entry, f_entry)
    assert scaled(2.0)(X3) == pytest.approx(np.sum(np.tanh(X3)) * 2.0, rel=1e-12)
    assert len(compiles) == 3  # rebuilt, and stored again under its own key
    assert f_entry.read_bytes() != g_entry.read_bytes()
    assert scaled(2.0)(X3) == f(X3) and len(compiles) == 3


@pytest.mark.skipif(not IS_ROOT, reason=NOT_ROOT)
def test_cache_entry_of_another_user_is_not_loaded(cache_folder, compiles):
    f = scaled(2.0)
    f(X3)
    entry = entry_path(cache_folder, f)
    key = entry.name.removesuffix(".bin")
    assert cache.load(key) is not None
    os.chown(entry, OTHER_UID, OTHER_UID)
    assert cache.load(key) is None
    assert scaled(2.0)(X3) == f(X3) and len(compiles) == 2
    assert entry.stat().st_uid == os.geteuid() and cache.load(key) is not None  # rebuilt


def _flip(data: bytes, at: int) -> bytes:
    return data[:at] + bytes([data[at] ^ 0x5A]) + data[at + 1:]


def _sparse(path: Path, start: bytes, size: int) -> None:
    """A file of `size` bytes beginning with `start`, the rest a hole (no disk used)."""
    path.write_bytes(start)
    os.truncate(path, size)


CACHE_FUZZ_SCRIPT = """
import json, os, resource, sys
import numpy as np
import diffc
from diffc import f64, nn
from diffc.runtime import cache
key, root = sys.argv[1], sys.argv[2]
x = np.array([0.5, -1.0, 2.0])
for case in sorted(os.listdir(root)):
    print(json.dumps({"case": case, "start": True}), flush=True)
    os.environ["DIFFC_CACHE_DIR"] = os.path.join(root, case)
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    hit = cache.load(key) is not None
    grew = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss - rss

    @diffc.function(name="scaled")
    def f(x: f64[3]) -> f64:
        return nn.sum(nn.tanh(x) * 2.0)

    print(json.dumps({"case": case, "hit": hit, "result": f(x), "grew_kb": grew,
                      "compiles": int(not f.artifacts.cached),
                      "stored": cache.load(key) is not None}), flush=True)
"""


def test_cache_fuzz_entries(cache_folder, compiles, tmp_path):
    """Damaged, swapped and special-file entries: ignored without hanging or reading them
    whole, and rebuilt; only the intact entry is a hit."""
    f, g = scaled(2.0), scaled(-5.0)
    f(X3), g(X3)
    valid, other = entry_path(cache_folder, f).read_bytes(), entry_path(cache_folder, g)
    big = files.MAX_BYTES + 4096
    cases = {
        "valid": lambda p: p.write_bytes(valid),
        "swapped": lambda p: p.write_bytes(other.read_bytes()),
        "empty": lambda p: p.write_bytes(b""),
        "truncated 10": lambda p: p.write_bytes(valid[:10]),
        "truncated header": lambda p: p.write_bytes(valid[:cache.HEADER]),
        "truncated half": lambda p: p.write_bytes(valid[:len(valid) // 2]),
        "truncated last byte": lambda p: p.write_bytes(valid[:-1]),
        "one byte more": lambda p: p.write_bytes(valid + b"\0"),
        "flipped magic": lambda p: p.write_bytes(_flip(valid, 3)),
        "flipped key": lambda p: p.write_bytes(_flip(valid, len(cache.MAGIC) + 5)),
        "flipped digest": lambda p: p.write_bytes(_flip(valid, cache.HEADER - 5)),
        "flipped sizes": lambda p: p.write_bytes(_flip(valid, cache.HEADER + 2)),
        "flipped payload": lambda p: p.write_bytes(_flip(valid, len(valid) // 2)),
        "fifo": lambda p: os.mkfifo(p),
        "symlink to dev zero": lambda p: p.symlink_to("/dev/zero"),
        "symlink to a valid entry": lambda p: p.symlink_to(entry_path(cache_folder, f)),
        "directory": lambda p: p.mkdir(),
        "oversize (sparse)": lambda p: _sparse(p, valid, big),
    }
    root = tmp_path / "cases"
    for name, make in cases.items():
        (root / name).mkdir(parents=True)
        make(entry_path(root / name, f))
    key = entry_path(cache_folder, f).name.removesuffix(".bin")
    results = {r["case"]: r for r in run_script(CACHE_FUZZ_SCRIPT, key, root)}
    assert sorted(results) == sorted(cases)
    expected = float(f(X3))
    for name, r in results.items():
        assert r["result"] == expected, name  # f's own code ran, not g's
        assert r["hit"] == (name == "valid") and r["compiles"] == (name != "valid"), name
        assert r["stored"] == (name != "directory"), name  # rebuilt where a file can go
        assert r["grew_kb"] < 64 << 10, name  # no entry was read beyond the size cap
    assert entry_path(root / "fifo", f).is_file()
    assert entry_path(root / "directory", f).is_dir()


# ------------------------------------------------------------------ export / load

@diffc.function
def cls_loss(W: f64[6, 4], b: f64[6], V: f64[3, 6], x: f64[4], k: i32) -> f64:
    return nn.softmax_cross_entropy(nn.dense(V, nn.relu(nn.dense(W, x, b))), k)


@diffc.function
def poly(x: f64[5], w: f64[5]) -> f64:
    return nn.sum(nn.tanh(w * x))


@pytest.fixture(scope="module")
def exports(tmp_path_factory):
    """A train step (labels, in-place params, a fit loop) and a function, exported."""
    folder = tmp_path_factory.mktemp("pristine")
    diffc.train_step(cls_loss, ["W", "b", "V"], diffc.SGD(lr=0.1)).export(str(folder / "step"))
    poly.export(str(folder / "poly"))
    return folder


def test_export_without_cc_removes_the_old_so(tmp_path, monkeypatch):
    path = str(tmp_path / "poly")
    poly.export(path)
    assert os.path.exists(path + ".so") == HAVE_CC
    monkeypatch.setattr(shutil, "which", lambda name: None)
    with pytest.warns(UserWarning, match="no C compiler found") as caught:
        written = poly.export(path)
    assert ("removed the old" in str(caught[0].message)) == HAVE_CC
    assert sorted(written) == [path + ".h", path + ".json", path + ".o"]
    assert not os.path.lexists(path + ".so")
    meta = json.loads(Path(path + ".json").read_text())
    assert meta["files"]["so"] is None and meta["files"]["o"]["size"] == len(
        Path(path + ".o").read_bytes())
    with pytest.raises(ArgumentError, match=r"poly\.json records no \.so"):
        diffc.load(path)


def test_export_records_its_files(exports):
    for stem in ("step", "poly"):
        meta = json.loads((exports / f"{stem}.json").read_text())
        for ext in ("o", "so") if HAVE_CC else ("o",):
            data = (exports / f"{stem}.{ext}").read_bytes()
            assert meta["files"][ext] == {"size": len(data),
                                          "sha256": sha256(data).hexdigest()}


USE_STEP = """
def use(step):
    \"\"\"One step on fixed inputs (loss and updated param sums), and whether a label out of
    range is refused.\"\"\"
    rng = np.random.default_rng(3)
    W, b, V = rng.standard_normal((6, 4)), rng.standard_normal(6), rng.standard_normal((3, 6))
    x = rng.standard_normal(4)
    loss = step(W, b, V, x, 2)
    try:  # the label range must still be checked
        step(W, b, V, x, 3)
        checked = False
    except diffc.ArgumentError:
        checked = True
    return [loss, float(W.sum()), float(b.sum()), float(V.sum()), checked]
"""
LOAD_FUZZ_SCRIPT = """
import json, os, sys
import numpy as np
import diffc
root = sys.argv[1]
""" + USE_STEP + """

for case in sorted(os.listdir(root)):
    print(json.dumps({"case": case, "start": True}), flush=True)
    try:
        out = {"result": use(diffc.load(os.path.join(root, case, "step")))}
    except diffc.DiffcError as e:
        out = {"error": type(e).__name__, "message": str(e)}
    except BaseException as e:
        out = {"error": "not a DiffcError: " + type(e).__name__, "message": repr(e)[:500]}
    print(json.dumps({"case": case, **out}), flush=True)
"""


def _edit(**changes):
    """A JSON edit: dotted field -> new value (files and everything else as exported)."""
    def edit(data: bytes) -> bytes:
        meta = json.loads(data)
        for field, value in changes.items():
            *parents, last = field.split(".")
            node = meta
            for p in parents:
                node = node[int(p)] if isinstance(node, list) else node[p]
            if value is _DELETE:
                del node[last]
            elif isinstance(node, list):
                node[int(last)] = value
            else:
                node[last] = value
        return (json.dumps(meta) + "\n").encode()
    return edit


_DELETE = object()
SO, JSON = ".so", ".json"
# case -> (file to change, how, the file the error must name; None: loads and runs correctly)
LOAD_CASES = {
    "pristine": (None, None, None),
    "json reformatted": (JSON, lambda d: json.dumps(json.loads(d), indent=4,
                                                    sort_keys=True).encode(), None),
    "o truncated": (".o", lambda d: d[:len(d) // 2], None),
    "o missing": (".o", None, None),
    "json missing": (JSON, None, JSON),
    "so missing": (SO, None, SO),
    "json empty": (JSON, lambda d: b"", JSON),
    "json truncated 1": (JSON, lambda d: d[:1], JSON),
    "json truncated half": (JSON, lambda d: d[:len(d) // 2], JSON),
    "json truncated end": (JSON, lambda d: d[:-3], JSON),
    "json not utf-8": (JSON, lambda d: b"\xff\xfe" + d, JSON),
    "json a list": (JSON, lambda d: b"[1, 2]", JSON),
    "json deeply nested": (JSON, lambda d: b"[" * 200000, JSON),
    "json fifo": (JSON, "fifo", JSON),
    "json symlink to dev zero": (JSON, "/dev/zero", JSON),
    "json a directory": (JSON, "dir", JSON),
    "json of another export": (JSON, "other", JSON),
    "json older format": (JSON, _edit(format=_DELETE, files=_DELETE), JSON),
    "json format edited": (JSON, _edit(format=2), JSON),
    "json files removed": (JSON, _edit(files=_DELETE), JSON),
    "json so record null": (JSON, _edit(**{"files.so": None}), JSON),
    "json so size edited": (JSON, _edit(**{"files.so.size": 12}), SO),
    "json so sha256 edited": (JSON, _edit(**{"files.so.sha256": "0" * 64}), SO),
    "json so sha256 not hex": (JSON, _edit(**{"files.so.sha256": "z" * 64}), JSON),
    "json entry renamed": (JSON, _edit(**{"abi.entry": "diffc_other"}), JSON),
    "json entry a number": (JSON, _edit(**{"abi.entry": 7}), JSON),
    "json labels removed": (JSON, _edit(labels={}), JSON),
    "json labels widened": (JSON, _edit(**{"labels.4": [60]}), JSON),
    "json written removed": (JSON, _edit(written=[]), JSON),
    "json abi shape edited": (JSON, _edit(**{"abi.inputs.0.shape": [2, 4]}), JSON),
    "json param shape edited": (JSON, _edit(**{"record.entry.params.0.shape": [60, 4]}), JSON),
    "json result dtype edited": (JSON, _edit(**{"record.entry.result.dtype": "f32"}), JSON),
    "json fit removed": (JSON, _edit(fit=None), JSON),
    "json data edited": (JSON, _edit(**{"record.options.data": []}), JSON),
    "json kind edited": (JSON, _edit(**{"record.kind": "function"}), JSON),
    "json labels a string": (JSON, _edit(labels="x"), JSON),
    "so empty": (SO, lambda d: b"", SO),
    "so truncated 64": (SO, lambda d: d[:64], SO),
    "so truncated half": (SO, lambda d: d[:len(d) // 2], SO),
    "so truncated last byte": (SO, lambda d: d[:-1], SO),
    "so one byte more": (SO, lambda d: d + b"\0", SO),
    "so flipped header": (SO, lambda d: _flip(d, 20), SO),
    "so flipped middle": (SO, lambda d: _flip(d, len(d) // 2), SO),
    "so flipped end": (SO, lambda d: _flip(d, len(d) - 16), SO),
    "so of another export": (SO, "other", SO),
    "so fifo": (SO, "fifo", SO),
    "so symlink to dev zero": (SO, "/dev/zero", SO),
    "so a directory": (SO, "dir", SO),
    "so relinked, files record updated": (SO, "relink", JSON),
}


def _make_case(folder: Path, pristine: Path, ext: str, how) -> None:
    for e in (".o", ".so", ".json"):
        shutil.copy(pristine / f"step{e}", folder / f"step{e}")
    if ext is None:
        return
    target = folder / f"step{ext}"
    if how is None:
        target.unlink()
    elif how in ("fifo", "/dev/zero", "dir", "other"):
        target.unlink()
        {"fifo": lambda: os.mkfifo(target), "/dev/zero": lambda: target.symlink_to("/dev/zero"),
         "dir": target.mkdir, "other": lambda: shutil.copy(pristine / f"poly{ext}", target)}[how]()
    elif how == "relink":  # linked from the .o alone (no digest), its new digests recorded
        subprocess.run(["cc", "-shared", "-o", str(target), str(folder / "step.o")], check=True)
        data = target.read_bytes()
        edit = _edit(**{"files.so": {"size": len(data), "sha256": sha256(data).hexdigest()}})
        (folder / "step.json").write_bytes(edit((folder / "step.json").read_bytes()))
    else:
        target.write_bytes(how(target.read_bytes()))


@pytest.fixture(scope="module")
def load_fuzz(exports, tmp_path_factory):
    """case -> what loading and using its export gave, all cases in one new process."""
    root = tmp_path_factory.mktemp("load-cases")
    for name, (ext, how, _) in LOAD_CASES.items():
        (root / name).mkdir()
        _make_case(root / name, exports, ext, how)
    private = tmp_path_factory.mktemp("private-copies")
    results = {r["case"]: r for r in run_script(LOAD_FUZZ_SCRIPT, root, TMPDIR=str(private))}
    assert sorted(results) == sorted(LOAD_CASES)
    assert os.listdir(private) == []  # every private copy was deleted once mapped
    return root, results


def _expect(load_fuzz, *names):
    root, results = load_fuzz
    namespace = {"np": np, "diffc": diffc}
    exec(USE_STEP, namespace)
    reference = namespace["use"](diffc.train_step(cls_loss, ["W", "b", "V"], diffc.SGD(lr=0.1)))
    assert reference[-1] is True  # labels are checked
    for name in names:
        r, (_, _, blamed) = results[name], LOAD_CASES[name]
        if blamed is None:
            assert r.get("result") == reference, (name, r)
        else:
            assert r.get("error") == "ArgumentError", (name, r)
            assert r["message"].startswith("diffc.load: "), (name, r)
            assert f"{root / name / 'step'}{blamed} " in r["message"], (name, r)


needs_cc = pytest.mark.skipif(not HAVE_CC, reason="no C compiler: exports have no .so")


@needs_cc
def test_load_rejects_a_truncated_so(load_fuzz):
    _expect(load_fuzz, "so truncated half", "so truncated last byte", "so empty")


@needs_cc
def test_load_rejects_the_json_of_another_export(load_fuzz):
    _expect(load_fuzz, "json of another export", "so of another export")


@needs_cc
def test_load_rejects_edited_label_ranges(load_fuzz):
    _expect(load_fuzz, "json labels removed", "json labels widened")
    assert "changed after export" in load_fuzz[1]["json labels removed"]["message"]


@needs_cc
def test_load_errors_are_diffc_errors_naming_the_file(load_fuzz):
    _expect(load_fuzz, *[n for n, (_, _, blamed) in LOAD_CASES.items() if blamed])


@needs_cc
def test_load_fuzz_intact_files_load_and_run(load_fuzz):
    _expect(load_fuzz, *[n for n, (_, _, blamed) in LOAD_CASES.items() if not blamed])


@needs_cc
def test_load_takes_a_path_object(exports):
    x, w = np.linspace(-1, 1, 5), np.linspace(0.5, 2, 5)
    assert diffc.load(exports / "poly")(x, w) == pytest.approx(np.sum(np.tanh(w * x)),
                                                               rel=1e-12)


def test_load_rejects_paths_that_are_not_paths():
    for bad, kind in ((None, "NoneType"), (3, "int"), (b"bytes/path", "bytes")):
        with pytest.raises(ArgumentError, match=f"path: expected a str or os.PathLike .* got "
                           f"{kind}$"):
            diffc.load(bad)


REEXPORT_SCRIPT = """
import json, sys
import numpy as np
import diffc
from diffc import f64, nn
path = sys.argv[1]
for case, rows in (("8 rows", 8), ("2 rows", 2), ("5 rows", 5)):
    print(json.dumps({"case": case, "start": True}), flush=True)

    @diffc.function(name="reexported")
    def loss(W: f64[rows, 4], x: f64[4]) -> f64:
        return nn.sum(nn.tanh(nn.dense(W, x)) * rows)

    step = diffc.train_step(loss, ["W"], diffc.SGD(lr=0.1))
    step.export(path)
    rng = np.random.default_rng(rows)
    W, x = rng.standard_normal((rows, 4)), rng.standard_normal(4)
    reference = float(np.sum(np.tanh(W @ x)) * rows)
    in_process, loaded = W.copy(), W.copy()
    results = [step(in_process, x), diffc.load(path)(loaded, x)]
    print(json.dumps({"case": case, "reference": reference, "results": results,
                      "same_update": bool(np.array_equal(in_process, loaded)),
                      "updated": not np.array_equal(W, loaded)}), flush=True)
"""


@needs_cc
def test_reexport_to_the_same_path_loads_the_new_code(tmp_path):
    """Export, load, export other shapes to the same path, load: the new code runs (the old
    one would write 8 rows into 2)."""
    private = tmp_path / "private"
    private.mkdir()
    results = run_script(REEXPORT_SCRIPT, tmp_path / "step", TMPDIR=str(private))
    assert [r["case"] for r in results] == ["8 rows", "2 rows", "5 rows"]
    for r in results:
        assert r["results"][0] == pytest.approx(r["reference"], rel=1e-12), r
        assert r["results"][1] == r["results"][0] and r["same_update"] and r["updated"], r
    assert os.listdir(private) == []
