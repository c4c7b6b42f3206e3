"""Export and load (artifacts, headers, objects, loading without llvmlite, the C example) and the
on-disk cache of compiled code (hits across processes, damage, opt-out, concurrency)."""
import inspect
import itertools
import json
import os
import re
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import diffc
import diffc.compiler.llvm
from diffc import ArgumentError, f32, f64, i32, i64, nn
from diffc.compiler import pipeline
from diffc.runtime import cache
from diffc.runtime.load import FORMAT

EXAMPLE_C = Path(__file__).resolve().parent.parent / "examples" / "c"
HAVE_CC = shutil.which("cc") is not None


@diffc.function
def poly(x: f64[5], w: f64[5]) -> f64:
    return nn.sum(nn.tanh(w * x) + nn.exp(x) * 0.5 + nn.log(w * w + 1.0) + nn.sigmoid(x) ** 1.5)


@diffc.function
def affine(X: f64["B", 4], W: f64[3, 4], b: f64[3]) -> f64["B", 3]:
    return nn.tanh(nn.dense(W, X, b))


@diffc.function
def cls_loss(W: f64[6, 4], b: f64[6], V: f64[3, 6], x: f64[4], k: i32) -> f64:
    return nn.softmax_cross_entropy(nn.dense(V, nn.relu(nn.dense(W, x, b))), k)


@diffc.function
def batch_loss(W: f64[6, 4], b: f64[6], V: f64[3, 6], X: f64["B", 4], k: i64["B"]) -> f64:
    return nn.softmax_cross_entropy(nn.dense(V, nn.relu(nn.dense(W, X, b))), k)


# each exported kind, built afresh by its factory (train steps own optimizer state)
KINDS = {
    "poly": lambda: poly,
    "affine": lambda: affine,
    "grad_W": lambda: diffc.grad(cls_loss, "W"),
    "grad_list": lambda: diffc.grad(cls_loss, ["V", "W"]),
    "vg": lambda: diffc.value_and_grad(cls_loss),
    "sgd": lambda: diffc.train_step(cls_loss, ["W", "b", "V"],
                                    diffc.SGD(lr=0.1, momentum=0.9)),
    "adam": lambda: diffc.train_step(batch_loss, ["W", "b", "V"], diffc.Adam(lr=0.01)),
}
STEPS = ("sgd", "adam")


def run_all(make, d):
    """Every kind (`make(kind)`) called on the inputs d; name -> result array (numpy only)."""
    out = {"poly": np.array(make("poly")(d["x"], d["w"]))}
    affine_fn = make("affine")
    out["affine2"] = affine_fn(d["X2"], d["W"], d["b"])
    out["affine5"] = affine_fn(X=d["X5"], W=d["W"], b=d["b"])
    cls_args = (d["W6"], d["b6"], d["V"], d["x4"], int(d["k"]))
    out["grad_W"] = make("grad_W")(*cls_args)
    out["grad_list"] = np.concatenate([g.ravel() for g in make("grad_list")(*cls_args)])
    value, grads = make("vg")(*cls_args)
    out["vg"] = np.concatenate([[value]] + [g.ravel() for g in grads])
    for kind, calls, fit_data, batch in (
            ("sgd", [(d["X"][i], int(d["K"][i])) for i in range(3)], (d["X"], d["K"]), None),
            ("adam", [(d["X"][:3], d["K64"][:3]), (d["X"][3:], d["K64"][3:])],
             (d["X"], d["K64"]), 3)):
        step = make(kind)
        params = [d["W6"].copy(), d["b6"].copy(), d["V"].copy()]
        losses = [step(*params, *data) for data in calls]
        losses += list(step.fit(*params, *fit_data, batch_size=batch, epochs=2, shuffle=False))
        out[kind] = np.concatenate([losses] + [p.ravel() for p in params])
    return out


@pytest.fixture(scope="module")
def inputs():
    rng = np.random.default_rng(42)
    return {"x": rng.standard_normal(5), "w": rng.standard_normal(5),
            "X2": rng.standard_normal((2, 4)), "X5": rng.standard_normal((5, 4)),
            "W": rng.standard_normal((3, 4)), "b": rng.standard_normal(3),
            "W6": rng.standard_normal((6, 4)) * 0.5, "b6": rng.standard_normal(6) * 0.1,
            "V": rng.standard_normal((3, 6)) * 0.5, "x4": rng.standard_normal(4),
            "k": np.int32(2), "X": rng.standard_normal((7, 4)),
            "K": rng.integers(0, 3, 7).astype(np.int32),
            "K64": rng.integers(0, 3, 7).astype(np.int64)}


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """kind -> (the exported object, its export path, the paths export returned)."""
    folder = tmp_path_factory.mktemp("exported")
    result = {}
    for kind, make in KINDS.items():
        fn = make()
        path = str(folder / kind)
        result[kind] = (fn, path, fn.export(path))
    return result


# ------------------------------------------------------------------ export / load round trip

def test_export_returns_the_paths_written(exported):
    for kind, (_, path, written) in exported.items():
        exts = [".o", ".h", ".json"] + ([".so"] if HAVE_CC else [])
        assert sorted(written) == sorted(path + e for e in exts), kind
        assert all(os.path.getsize(p) > 0 for p in written), kind
        assert Path(path + ".o").read_bytes()[:4] == b"\x7fELF", kind


@pytest.mark.skipif(not HAVE_CC, reason="no C compiler: no .so to load")
def test_loaded_plain_functions_equal_in_process(exported, inputs):
    d = inputs
    p = diffc.load(exported["poly"][1])
    value = p(d["x"], d["w"])
    assert type(value) is float and value == poly(d["x"], d["w"])
    x, w = d["x"], d["w"]
    reference = np.sum(np.tanh(w * x) + np.exp(x) * 0.5 + np.log(w * w + 1.0) +
                       (1 / (1 + np.exp(-x))) ** 1.5)
    assert value == pytest.approx(reference, rel=1e-12)
    a = diffc.load(exported["affine"][1])
    for X in (d["X2"], d["X5"]):
        got = a(X, d["W"], d["b"])
        assert got.shape == (len(X), 3) and got.dtype == np.float64
        assert np.array_equal(got, affine(X, d["W"], d["b"]))
        assert np.array_equal(got, a(b=d["b"], X=X, W=d["W"]))
        np.testing.assert_allclose(got, np.tanh(X @ d["W"].T + d["b"]), rtol=1e-12, atol=1e-15)


@pytest.mark.skipif(not HAVE_CC, reason="no C compiler: no .so to load")
def test_loaded_gradients_equal_in_process(exported, inputs):
    d = inputs
    args = (d["W6"], d["b6"], d["V"], d["x4"], 1)
    g = diffc.load(exported["grad_W"][1])(*args)
    assert isinstance(g, np.ndarray) and np.array_equal(g, exported["grad_W"][0](*args))
    gl = diffc.load(exported["grad_list"][1])(*args)
    expected = exported["grad_list"][0](*args)
    assert isinstance(gl, tuple) and [x.shape for x in gl] == [(3, 6), (6, 4)]
    assert all(np.array_equal(a, b) for a, b in zip(gl, expected, strict=True))
    assert np.array_equal(gl[1], g)
    value, grads = diffc.load(exported["vg"][1])(*args)
    ref_value, ref_grads = exported["vg"][0](*args)
    assert type(value) is float and value == ref_value == cls_loss(*args)
    assert [x.shape for x in grads] == [(6, 4), (6,), (3, 6), (4,)]  # every float param
    assert all(np.array_equal(a, b) for a, b in zip(grads, ref_grads, strict=True))


def _same(a, b) -> bool:
    return all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))


@pytest.mark.skipif(not HAVE_CC, reason="no C compiler: no .so to load")
@pytest.mark.parametrize("kind", STEPS)
def test_loaded_train_step_equals_in_process(exported, inputs, kind):
    d = inputs
    fresh, loaded = KINDS[kind](), diffc.load(exported[kind][1])
    assert isinstance(loaded, diffc.TrainStep)
    assert loaded.params == fresh.params and loaded.optimizer == fresh.optimizer
    assert loaded.lr == fresh.lr and loaded.steps == 0
    data = ([(d["X"][i], int(d["K"][i])) for i in range(4)] if kind == "sgd" else
            [(d["X"][:2], d["K64"][:2]), (d["X"][2:7], d["K64"][2:7]), (d["X"][:1], d["K64"][:1])])
    fit_data = (d["X"], d["K"] if kind == "sgd" else d["K64"])
    batch = None if kind == "sgd" else 3
    initial = [d["W6"], d["b6"], d["V"]]
    pa, pb = [p.copy() for p in initial], [p.copy() for p in initial]
    for args in data:
        loss = loaded(*pb, *args)
        assert type(loss) is float and loss == fresh(*pa, *args)
        assert _same(pa, pb)
    assert not any(np.array_equal(p, q) for p, q in zip(pb, initial, strict=True))
    fresh.lr = loaded.lr = 0.0  # takes effect at once: no update at all
    before = [p.copy() for p in pb]
    assert loaded(*pb, *data[0]) == fresh(*pa, *data[0])
    assert loaded.lr == 0.0 and _same(pb, before) and _same(pa, pb)
    fresh.lr = loaded.lr = 0.05
    losses = loaded.fit(*pb, *fit_data, batch_size=batch, epochs=2, shuffle=False)
    per_epoch = 7 if kind == "sgd" else 3
    assert losses.dtype == np.float64 and losses.shape == (2 * per_epoch,)
    assert np.array_equal(losses, fresh.fit(*pa, *fit_data, batch_size=batch, epochs=2,
                                            shuffle=False))
    assert _same(pa, pb) and loaded.steps == fresh.steps == len(data) + 1 + 2 * per_epoch
    loaded.reset()  # zero state and step count: as good as a newly loaded step
    assert loaded.steps == 0
    again = diffc.load(exported[kind][1])
    again.lr = 0.05
    p1, p2 = [p.copy() for p in pb], [p.copy() for p in pb]
    assert loaded(*p1, *data[1]) == again(*p2, *data[1])
    assert _same(p1, p2)


@pytest.mark.skipif(not HAVE_CC, reason="no C compiler: no .so to load")
def test_loaded_train_step_has_the_lr_it_was_exported_with(tmp_path):
    step = KINDS["adam"]()
    step.lr = 0.25
    step.export(str(tmp_path / "step"))
    loaded = diffc.load(str(tmp_path / "step"))
    assert loaded.lr == 0.25 and loaded.optimizer == diffc.Adam(lr=0.01)


def _cls(d, k, **changed):
    """Arguments of cls_loss with copies of the params (some replaced)."""
    args = {"W": d["W6"].copy(), "b": d["b6"].copy(), "V": d["V"].copy(), "x": d["x4"], "k": k}
    args.update(changed)
    return tuple(args.values())


def _read_only(a):
    a = a.copy()
    a.flags.writeable = False
    return a


BAD_CALLS = [  # (kind, method, arguments made from the inputs, the parameter to blame)
    ("poly", "__call__", lambda d: (d["x"].astype(np.float32), d["w"]), "x"),
    ("poly", "__call__", lambda d: (d["x"], d["w"][:4]), "w"),
    ("affine", "__call__", lambda d: (d["X2"], d["W"].T.copy(), d["b"]), "W"),
    ("affine", "__call__", lambda d: (d["X2"].astype(np.float32), d["W"], d["b"]), "X"),
    ("grad_W", "__call__", lambda d: _cls(d, 3), "k"),
    ("vg", "__call__", lambda d: _cls(d, -1), "k"),
    ("sgd", "__call__", lambda d: _cls(d, 3), "k"),
    ("sgd", "__call__", lambda d: _cls(d, 1, W=_read_only(d["W6"])), "W"),
    ("sgd", "__call__", lambda d: _cls(d, 1, V=d["V"].astype(np.float32)), "V"),
    ("sgd", "fit", lambda d: _cls(d, 0)[:3] + (d["X"], np.where(d["K"] == 0, 3, d["K"])), "k"),
    ("adam", "__call__", lambda d: _cls(d, 0)[:3] + (d["X"][:3], d["K64"][:2]), "k"),
    ("adam", "__call__", lambda d: _cls(d, 0)[:3] + (d["X"][:2], np.array([0, 3])), "k"),
]


@pytest.mark.skipif(not HAVE_CC, reason="no C compiler: no .so to load")
@pytest.mark.parametrize("kind, method, make_args, name", BAD_CALLS,
                         ids=[f"{k}-{m.strip('_')}-{n}-{i}"
                              for i, (k, m, _, n) in enumerate(BAD_CALLS)])
def test_loaded_validates_like_original(exported, inputs, kind, method, make_args, name):
    original, path, _ = exported[kind]
    loaded = diffc.load(path)
    messages = []
    for fn in (original, loaded):
        args = make_args(inputs)
        before = [a.copy() for a in args if isinstance(a, np.ndarray)]
        with pytest.raises(ArgumentError) as info:
            getattr(fn, method)(*args)
        messages.append(str(info.value))
        assert _same(before, [a for a in args if isinstance(a, np.ndarray)])  # nothing written
        assert getattr(fn, "steps", 0) == 0
    assert messages[0] == messages[1]
    assert messages[1].startswith(f"{name}:")


@pytest.mark.skipif(not HAVE_CC, reason="no C compiler: no .so to load")
def test_loaded_ir_and_signature_equal_original(exported):
    for kind, (original, path, _) in exported.items():
        loaded = diffc.load(path)
        assert loaded.ir == original.ir and "\n" in loaded.ir, kind
        assert loaded.signature == original.signature, kind
        assert isinstance(original, type(loaded)), kind


def test_load_without_so_or_json_raises(exported, tmp_path):
    source = exported["poly"][1]
    shutil.copy(source + ".json", tmp_path / "only_json.json")
    shutil.copy(source + ".o", tmp_path / "only_json.o")
    if HAVE_CC:
        shutil.copy(source + ".so", tmp_path / "only_so.so")
    for stem, missing in (("only_json", ".so"), ("only_so", ".json"), ("nothing", ".json")):
        with pytest.raises(diffc.DiffcError, match=re.escape(stem + missing)):
            diffc.load(str(tmp_path / stem))


@pytest.mark.skipif(not HAVE_CC, reason="no C compiler: no .so to load")
@pytest.mark.parametrize("suffix", ["", ".so", ".json", ".o", ".h"])
def test_load_takes_the_export_path_or_one_of_its_files(exported, inputs, suffix):
    """Before, load("m.so") looked for m.so.json."""
    _, path, _ = exported["poly"]
    loaded = diffc.load(path + suffix)
    assert loaded(inputs["x"], inputs["w"]) == poly(inputs["x"], inputs["w"])


@pytest.mark.skipif(not HAVE_CC, reason="no C compiler: no .so to load")
def test_load_prefers_an_export_named_with_a_suffix(tmp_path):
    """export("m.so") writes m.so.json: load("m.so") is that export, not one at m."""
    poly.export(str(tmp_path / "m"))
    affine.export(str(tmp_path / "m.so"))
    assert diffc.load(tmp_path / "m.so").name == "affine"
    assert diffc.load(tmp_path / "m").name == "poly"
    assert diffc.load(tmp_path / "m.so.so").name == "affine"


@pytest.mark.parametrize("given, message", [
    ("nothing", r"nothing names no export: \S*nothing\.json does not exist \(export\(path\) "
                r"writes path\.json, path\.so, path\.o and path\.h; load takes path or one of"),
    ("nothing.so", r"nothing\.so names no export: neither \S*nothing\.so\.json nor "
                   r"\S*nothing\.json exists"),
    ("no/folder/m", r"m names no export: the folder \S*no/folder does not exist$"),
])
def test_load_of_a_missing_export_names_the_files_looked_for(tmp_path, given, message):
    """Before: 'nothing.so.json does not exist' for load('nothing.so')."""
    with pytest.raises(diffc.ArgumentError, match=r"^diffc\.load: \S*" + message):
        diffc.load(str(tmp_path / given))


@pytest.mark.skipif(not HAVE_CC, reason="no C compiler: no .so to load")
def test_load_of_an_export_whose_so_was_deleted_says_so(exported, tmp_path):
    """Before, a missing .so was blamed on a missing C compiler although the .json records
    one."""
    source = exported["poly"][1]
    shutil.copy(source + ".json", tmp_path / "m.json")
    with pytest.raises(diffc.ArgumentError) as info:
        diffc.load(str(tmp_path / "m"))
    assert str(info.value) == (f"diffc.load: {tmp_path}/m.so does not exist, though "
                               f"{tmp_path}/m.json records it (moved or deleted since? export "
                               f"again)")


@pytest.mark.skipif(not HAVE_CC, reason="no C compiler: no .so to load")
@pytest.mark.parametrize("fmt", [None, 2, FORMAT - 1, FORMAT + 1, str(FORMAT)])
def test_load_refuses_another_export_format(exported, tmp_path, fmt):
    """An export of another format (before 2: none recorded; a train step then took its step
    number `t` by value; before 4: no parallel hook) is refused by name, not called with the
    wrong arguments."""
    source = exported["adam"][1]
    meta = json.loads(Path(source + ".json").read_text())
    assert meta["format"] == FORMAT
    if fmt is None:
        del meta["format"]
    else:
        meta["format"] = fmt
    (tmp_path / "step.json").write_text(json.dumps(meta))
    shutil.copy(source + ".so", tmp_path / "step.so")
    expected = ("has no format field" if fmt is None else
                f"is in export format {fmt!r} .*, not {FORMAT}: export it again")
    with pytest.raises(diffc.ArgumentError, match=r"step\.json " + expected):
        diffc.load(str(tmp_path / "step"))


LOAD_SCRIPT = """
import json, os, sys
ATTEMPTS = []


class BlockLlvmlite:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] == "llvmlite":
            ATTEMPTS.append(name)
            raise ImportError("llvmlite is blocked in this process")


sys.meta_path.insert(0, BlockLlvmlite())
import numpy as np
import diffc
folder = sys.argv[1]
inputs = dict(np.load(os.path.join(folder, "inputs.npz")))
{run_all}
out = run_all(lambda kind: diffc.load(os.path.join(folder, kind)), inputs)
np.savez(os.path.join(folder, "outputs.npz"), **out)
print(json.dumps({{"attempts": ATTEMPTS,
                   "modules": sorted(m for m in sys.modules if m.split(".")[0] == "llvmlite")}}))
"""


@pytest.mark.skipif(not HAVE_CC, reason="no C compiler: no .so to load")
def test_load_runs_without_llvmlite(exported, inputs):
    folder = os.path.dirname(exported["poly"][1])
    np.savez(os.path.join(folder, "inputs.npz"), **inputs)
    script = LOAD_SCRIPT.format(run_all=inspect.getsource(run_all))
    done = subprocess.run([sys.executable, "-c", script, folder], capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.splitlines()[-1])
    assert report == {"attempts": [], "modules": []}
    expected = run_all(lambda kind: KINDS[kind](), inputs)
    with np.load(os.path.join(folder, "outputs.npz")) as got:
        assert sorted(got.files) == sorted(expected)
        for name, value in expected.items():
            assert np.array_equal(got[name], value), name


# ------------------------------------------------------------------ the artifacts themselves

@pytest.mark.skipif(not HAVE_CC, reason="no C compiler")
@pytest.mark.parametrize("kind", list(KINDS))
def test_header_compiles_and_documents_the_abi(exported, kind):
    _, path, _ = exported[kind]
    done = subprocess.run(["cc", "-fsyntax-only", "-Wall", "-Werror", "-x", "c", path + ".h"],
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    header = Path(path + ".h").read_text()
    meta = json.loads(Path(path + ".json").read_text())
    entry, abi = meta["abi"]["entry"], meta["abi"]
    dims = ", ".join(f"int64_t {s}" for s in abi["symbols"]) or "void"
    assert f"int64_t {entry}_workspace_size({dims});" in header
    prototype = re.search(rf"void {entry}\(([^;]*)\);", header)
    assert prototype is not None
    count = len(abi["inputs"]) + len(abi["outputs"]) + len(abi["symbols"]) + 1
    assert len(prototype.group(1).split(",\n")) == count  # one argument a line
    if kind in STEPS:
        assert re.search(rf"void {entry}_fit\(void \*\*table, const int64_t \*perm,", header)
        state = [f"{p}.{s}" for p in ("W", "b", "V") for s in
                 (("momentum_buffer",) if kind == "sgd" else ("exp_avg", "exp_avg_sq"))]
        in_place = ["W", "b", "V", "step_count"] + state
        assert "Arrays updated in place: " + ", ".join(in_place) + "." in header
        assert re.search(r"\n    double \*step_count /\* f64\[1\] \*/", header)
        assert "Zero\n   step_count together with the state" in header
        assert re.search(r"\n    double \*W /\* f64\[6,4\] \*/", header)  # written: not const
        assert "const double *" + ("x" if kind == "sgd" else "X") + " /*" in header
    else:
        assert "_fit(" not in header and "Arrays updated in place: none." in header


@pytest.mark.skipif(shutil.which("nm") is None, reason="no nm")
@pytest.mark.parametrize("kind", list(KINDS))
def test_object_needs_no_libm_or_python(exported, kind):
    _, path, _ = exported[kind]
    undefined = subprocess.run(["nm", "-u", path + ".o"], capture_output=True, text=True,
                               check=True).stdout.split()
    undefined = {s for s in undefined if s != "U"}
    assert undefined <= {"memset", "memcpy"}, undefined
    names = [line.split()[-1] for line in subprocess.run(
        ["nm", path + ".o"], capture_output=True, text=True, check=True).stdout.splitlines()]
    assert not [n for n in names if n.startswith(("Py", "_Py"))]
    entry = json.loads(Path(path + ".json").read_text())["abi"]["entry"]
    assert entry in names and entry + "_workspace_size" in names


# ------------------------------------------------------------------ the on-disk cache

CACHE_DEFS = '''
import time

import numpy as np

import diffc
from diffc import f64, nn


@diffc.function
def small(W: f64[3, 4], x: f64[4]) -> f64:
    return nn.sum(nn.tanh(nn.dense(W, x)) * 2.0)


@diffc.function(name="small")
def other(W: f64[3, 4], x: f64[4]) -> f64:
    return nn.sum(nn.tanh(nn.dense(W, x)) * 3.0)


@diffc.function
def mlp_loss(W1: f64[128, 784], b1: f64[128], W2: f64[10, 128], b2: f64[10], x: f64[784],
             y: f64[10]) -> f64:
    h = nn.relu(nn.dense(W1, x, b1))
    return nn.cross_entropy(nn.softmax(nn.dense(W2, h, b2)), y)


def build(name):
    """The function (or the 784-128-10 train step) called name, and its arguments."""
    rng = np.random.default_rng(7)
    if name == "mlp":
        args = [rng.standard_normal(s) * 0.05 for s in ((128, 784), (128,), (10, 128), (10,))]
        step = diffc.train_step(mlp_loss, ["W1", "b1", "W2", "b2"], diffc.SGD(lr=0.01))
        return step, args + [rng.random(784), np.eye(10)[3]]
    return {"small": small, "other": other}[name], [rng.standard_normal((3, 4)),
                                                    rng.standard_normal(4)]


def run(fn, args):
    """Compile fn (timed) and call it once: its result and the arguments' sums, and the time."""
    start = time.perf_counter()
    fn.compile()
    seconds = time.perf_counter() - start
    return [fn(*args)] + [float(a.sum()) for a in args], seconds
'''
CACHE_DEFS_NS: dict = {}
exec(CACHE_DEFS, CACHE_DEFS_NS)

CACHE_SCRIPT = """
import json, sys
""" + CACHE_DEFS + """
out = {}
for name in sys.argv[1:]:
    fn, args = build(name)
    result, seconds = run(fn, args)
    out[name] = {"result": result, "seconds": seconds, "compiles": int(not fn.artifacts.cached)}
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def cache_refs():
    """name -> (in-process result, object code), compiled with the session's cache."""
    refs = {}
    for name in ("small", "other", "mlp"):
        fn, args = CACHE_DEFS_NS["build"](name)
        result, _ = CACHE_DEFS_NS["run"](fn, args)
        refs[name] = (result, fn.artifacts.object_code)
    return refs


def _cache_command(folder, names, **env):
    env = {**os.environ, "DIFFC_CACHE_DIR": str(folder), "DIFFC_CACHE": "1", **env}
    return dict(args=[sys.executable, "-c", CACHE_SCRIPT, *names], env=env,
                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(process: subprocess.Popen) -> dict:
    stdout, stderr = process.communicate(timeout=180)
    assert process.returncode == 0, stderr
    return json.loads(stdout.splitlines()[-1])


def cache_process(folder, *names, **env) -> dict:
    """Run CACHE_SCRIPT in a new process: name -> result, compile seconds, and whether it was
    compiled (1) or came from the cache (0: the passes, code generation and LLVM skipped)."""
    return _finish(subprocess.Popen(**_cache_command(folder, names, **env)))


POOL_ENTRY = pipeline.pool_key(diffc.compiler.llvm.host_target()) + ".bin"


def entries(folder) -> dict[str, bytes]:
    """The files of a cache folder but the worker pool's entry (made by a process's first
    compile, so by some tests and not others)."""
    return {p.name: p.read_bytes() for p in Path(folder).iterdir() if p.name != POOL_ENTRY}


def assert_valid(folder, name, refs, monkeypatch) -> None:
    """The entry `name` in folder reads back (checked) as the object code of refs' function."""
    monkeypatch.setenv("DIFFC_CACHE_DIR", str(folder))
    monkeypatch.delenv("DIFFC_CACHE", raising=False)
    hit = cache.load(name.removesuffix(".bin"))
    assert hit is not None and hit[0] == refs[1]


def test_cache_hit_in_second_process_skips_codegen(tmp_path, cache_refs, monkeypatch, capsys):
    folder = tmp_path / "cache"
    cold = cache_process(folder, "small", "mlp")
    warm = cache_process(folder, "small", "mlp")
    with capsys.disabled():
        print(f"\n784-128-10 train step compile: cold {cold['mlp']['seconds']:.3f} s, "
              f"from the cache {warm['mlp']['seconds']:.3f} s")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    for name in ("small", "mlp"):
        assert cold[name]["compiles"] == 1 and warm[name]["compiles"] == 0
        assert cold[name]["result"] == warm[name]["result"] == cache_refs[name][0]
    files = sorted(entries(folder))
    assert len(files) == 2 and all(re.fullmatch(r"[0-9a-f]{64}\.bin", f) for f in files)
    monkeypatch.setenv("DIFFC_CACHE_DIR", str(folder))
    objects = {cache.load(f.removesuffix(".bin"))[0] for f in files}
    assert objects == {cache_refs["small"][1], cache_refs["mlp"][1]}


def _flip_middle(data: bytes) -> bytes:
    middle = len(data) // 2
    return data[:middle] + bytes(b ^ 0xFF for b in data[middle:middle + 8]) + data[middle + 8:]


DAMAGE = {"flipped": _flip_middle, "half": lambda data: data[:len(data) // 2],
          "ten bytes": lambda data: data[:10],
          "garbage": lambda data: b"not a diffc cache entry\n" * (len(data) // 24)}


def test_cache_damaged_entry_is_rebuilt(tmp_path, cache_refs, monkeypatch):
    folder = tmp_path / "cache"
    assert cache_process(folder, "small")["small"]["compiles"] == 1
    (name, valid), = entries(folder).items()
    for damage, corrupt in DAMAGE.items():
        (folder / name).write_bytes(corrupt(valid))
        rebuilt = cache_process(folder, "small")["small"]
        assert rebuilt["compiles"] == 1, damage
        assert rebuilt["result"] == cache_refs["small"][0], damage
        assert list(entries(folder)) == [name], damage
        assert_valid(folder, name, cache_refs["small"], monkeypatch)
        hit = cache_process(folder, "small")["small"]
        assert hit["result"] == cache_refs["small"][0], damage


def test_cache_disabled_reads_and_writes_nothing(tmp_path, cache_refs):
    folder = tmp_path / "cache"
    cache_process(folder, "small")
    before = {p.name: (p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns)
              for p in folder.iterdir()}
    off = cache_process(folder, "small", "other", DIFFC_CACHE="0")
    assert off["small"]["compiles"] == 1 and off["other"]["compiles"] == 1  # entry not read
    assert off["small"]["result"] == cache_refs["small"][0]
    assert off["other"]["result"] == cache_refs["other"][0]
    after = {p.name: (p.read_bytes(), p.stat().st_ino, p.stat().st_mtime_ns)
             for p in folder.iterdir()}
    assert after == before and len(set(after) - {POOL_ENTRY}) == 1


def test_cache_key_differs_per_function(tmp_path, monkeypatch):
    folder = tmp_path / "cache"
    monkeypatch.setenv("DIFFC_CACHE_DIR", str(folder))
    monkeypatch.delenv("DIFFC_CACHE", raising=False)

    @diffc.function(name="keyed")
    def twice(x: f64[4]) -> f64:
        return nn.sum(x * 2.0)

    @diffc.function(name="keyed")
    def twice_again(x: f64[4]) -> f64:
        return nn.sum(x * 2.0)

    @diffc.function(name="keyed")
    def thrice(x: f64[4]) -> f64:
        return nn.sum(x * 3.0)

    x = np.array([1.0, 2.0, 3.0, 4.5])
    assert twice(x) == 21.0 and not twice.artifacts.cached
    first = set(entries(folder))
    assert len(first) == 1
    assert twice_again(x) == 21.0 and twice_again.artifacts.cached
    assert set(entries(folder)) == first
    assert thrice(x) == 31.5 and not thrice.artifacts.cached
    assert len(set(entries(folder))) == 2 and first < set(entries(folder))
    # the same program after a change to diffc's own source: compiled anew
    monkeypatch.setattr(diffc.compiler.llvm, "source_digest", lambda: "changed compiler")

    @diffc.function(name="keyed")
    def twice_changed(x: f64[4]) -> f64:
        return nn.sum(x * 2.0)

    assert twice_changed(x) == 21.0 and not twice_changed.artifacts.cached
    assert len(set(entries(folder))) == 3


def test_cache_key_holds_the_types_of_literals(tmp_path, monkeypatch):
    """Two programs that print alike but for a literal's type get their own code."""
    monkeypatch.setenv("DIFFC_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("DIFFC_CACHE", raising=False)

    @diffc.function(name="tenth")
    def tenth32(x: f64[3]) -> f32:
        return 0.1

    @diffc.function(name="tenth")
    def tenth64(x: f64[3]) -> f64:
        return 0.1

    x = np.zeros(3)
    assert str(tenth32.program) == str(tenth64.program)
    assert tenth32(x) == np.float32(0.1) and tenth64(x) == 0.1
    assert len(entries(tmp_path)) == 2


def test_cache_entry_for_other_types_is_rebuilt_not_loaded(tmp_path, monkeypatch):
    """An entry whose code takes or returns other types than the program (a key collision or a
    planted file) is rebuilt."""
    from diffc.compiler import llvm, pipeline
    monkeypatch.setenv("DIFFC_CACHE_DIR", str(tmp_path))
    monkeypatch.delenv("DIFFC_CACHE", raising=False)

    @diffc.function(name="planted")
    def half32(x: f32[3]) -> f32:
        return nn.sum(x) * 0.5

    @diffc.function(name="planted")
    def half64(x: f64[3]) -> f64:
        return nn.sum(x) * 0.5

    assert half32(np.ones(3, np.float32)) == 1.5
    (planted,) = entries(tmp_path).values()
    key = pipeline.cache_key(half64.program, "planted", None, llvm.host_target())
    (tmp_path / f"{key}.bin").write_bytes(planted)
    assert half64(np.full(3, 1 / 3)) == 0.5
    assert half64.artifacts.native.abi.inputs[0].dtype == f64 and not half64.artifacts.cached
    assert entries(tmp_path)[f"{key}.bin"] != planted


def test_cache_concurrent_writers_leave_one_valid_entry(tmp_path, cache_refs, monkeypatch):
    folder = tmp_path / "cache"
    processes = [subprocess.Popen(**_cache_command(folder, ["mlp"])) for _ in range(2)]
    results = [_finish(p) for p in processes]
    for r in results:
        assert r["mlp"]["result"] == cache_refs["mlp"][0]
    (name,) = entries(folder)  # one entry, no temporary files left over
    assert_valid(folder, name, cache_refs["mlp"], monkeypatch)


# ------------------------------------------------------------------ the C example

def xorshift64star(state: int = 88172645463325252):
    """problem.h's generator (train.c, fit.c): 53 random bits in [0, 1) per draw."""
    mask = (1 << 64) - 1
    while True:
        state ^= state >> 12
        state ^= (state << 25) & mask
        state ^= state >> 27
        yield (((state * 2685821657736338717) & mask) >> 11) / 9007199254740992.0


def c_example_data(n: int = 200):
    """problem.h's problem (train.c's and fit.c's start): [W1, b1, W2, b2], X, Y and the
    generator, drawn on."""
    draws = xorshift64star()
    W1 = 0.1 * np.fromiter(itertools.islice(draws, 128 * 784), float).reshape(128, 784) - 0.05
    W2 = 0.1 * np.fromiter(itertools.islice(draws, 10 * 128), float).reshape(10, 128) - 0.05
    b1, b2 = np.zeros(128), np.zeros(10)
    X = np.fromiter(itertools.islice(draws, n * 784), float).reshape(n, 784)
    Y = np.zeros((n, 10))
    for i in range(n):
        total = 0.0
        for v in X[i, :10]:
            total += v
        Y[i, int(total) % 10] = 1.0
    return [W1, b1, W2, b2], X, Y, draws


def example_step():
    return diffc.train_step(CACHE_DEFS_NS["mlp_loss"], ["W1", "b1", "W2", "b2"],
                            diffc.SGD(lr=0.01))


def c_example_losses(epochs: int = 5, n: int = 200) -> list[list[float]]:
    """The losses of train.c's run, computed with the in-process train step."""
    params, X, Y, _ = c_example_data(n)
    step = example_step()
    return [[step(*params, X[i], Y[i]) for i in range(n)] for _ in range(epochs)]


def fit_example_replay(epochs: int = 5, n: int = 200):
    """fit.c's run replayed with one in-process step call per sample: each epoch's losses in
    the order fit.c's Fisher-Yates shuffle visits the samples, and the trained W1."""
    params, X, Y, draws = c_example_data(n)
    step, perm, losses = example_step(), list(range(n)), []
    for _ in range(epochs):
        for i in range(n - 1, 0, -1):
            j = int(next(draws) * (i + 1))
            perm[i], perm[j] = perm[j], perm[i]
        losses.append([step(*params, X[k], Y[k]) for k in perm])
    return losses, params[0]


@pytest.mark.skipif(not (HAVE_CC and shutil.which("make")), reason="no cc or make")
def test_c_example_matches_python(tmp_path):
    """train.c (the step called per sample) and fit.c (the exported fit loop, its table filled
    through the header's enum) against in-process replays."""
    shutil.copytree(EXAMPLE_C, tmp_path / "c")
    build = tmp_path / "build"
    done = subprocess.run(["make", "-C", str(tmp_path / "c"), f"BUILD={build}",
                           f"PYTHON={sys.executable}", "run"], capture_output=True, text=True,
                          timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    steps = re.findall(r"^step (\d+) loss (\S+)$", done.stdout, re.M)
    epochs = re.findall(r"^epoch (\d+) mean loss (\S+)$", done.stdout, re.M)
    assert [int(k) for k, _ in steps] == list(range(5))
    assert [int(e) for e, _ in epochs] == list(range(5))
    assert re.search(r"^steps 1000$", done.stdout, re.M)  # step_count, counted natively
    python = c_example_losses()
    for (_, c_loss), py_loss in zip(steps, python[0][:5], strict=True):
        assert float(c_loss) == pytest.approx(py_loss, rel=1e-9)
    c_means = [float(m) for _, m in epochs]
    for c_mean, py_epoch in zip(c_means, python, strict=True):
        assert c_mean == pytest.approx(np.mean(py_epoch), abs=1e-6)
    assert c_means[-1] < c_means[0]

    fit_steps = [float(v) for v in re.findall(r"^fit step \d+ loss (\S+)$", done.stdout, re.M)]
    fit_means = [float(v) for v in re.findall(r"^fit epoch \d+ mean loss (\S+)$", done.stdout,
                                              re.M)]
    replay, W1 = fit_example_replay()
    assert fit_steps == pytest.approx(replay[0][:5], rel=1e-12)
    assert fit_means == pytest.approx([np.mean(e) for e in replay], rel=1e-12)
    assert fit_means[-1] < fit_means[0]
    assert re.search(r"^fit steps 1000$", done.stdout, re.M)
    w1_sum = float(re.search(r"^fit W1 sum (\S+)$", done.stdout, re.M).group(1))
    assert w1_sum == pytest.approx(W1.sum(), rel=1e-12)


# ------------------------------------------------------------------ the fit loop from C

FIT_DRIVERS = {  # name -> (loss, optimizer, batch size or None for per-sample)
    "sample_sgd": (cls_loss, lambda: diffc.SGD(lr=0.1), None),  # cross-step fused: a carry
    "sample_momentum": (cls_loss, lambda: diffc.SGD(lr=0.1, momentum=0.9), None),
    "batch_adam": (batch_loss, lambda: diffc.Adam(lr=0.01), 3),  # 7 samples: a short batch
}


def c_array(ctype: str, name: str, a: np.ndarray) -> str:
    values = ", ".join(repr(float(v)) if ctype == "double" else str(int(v)) for v in a.ravel())
    return f"static {ctype} {name}[] = {{{values}}};"


def fit_driver(entry: str, names: list[str], data: dict, perms: np.ndarray, batch: int | None,
               lr: float, state: list[str], carry: bool) -> str:
    """A C program filling the fit loop's table by the header's slot names alone, running an
    epoch per row of perms and printing the losses and the trained params (%.17g)."""
    n, steps = perms.shape[1], -(-perms.shape[1] // (batch or 1))
    ctypes_ = {n_: "double" if a.dtype == np.float64 else
               {np.int32: "int32_t", np.int64: "int64_t"}[a.dtype.type] for n_, a in data.items()}
    lines = ["#include <stdio.h>", "#include <stdlib.h>", '#include "step.h"',
             f"#define FIT(s) {entry}_fit_##s"]
    lines += [c_array(ctypes_[k], f"v_{k}", a) for k, a in data.items()]
    lines += [c_array("int64_t", "perms", perms)]
    lines += ["int main(void) {", f"    double lr = {lr!r}, step_count[1] = {{0}};",
              f"    double losses[{len(perms) * steps}];",
              "    void *table[FIT(slots)] = {0}, *staging[FIT(slots)] = {0};"]
    lines += [f"    table[FIT({k})] = v_{k};" for k in names]
    lines += ["    table[FIT(lr)] = &lr;", "    table[FIT(step_count)] = step_count;"]
    for s in state:  # zeroed optimizer state, shaped like its param
        param = s.split(".")[0]
        lines += [f"    static double {s.replace('.', '_')}[{data[param].size}];",
                  f"    table[FIT({s.replace('.', '_')})] = {s.replace('.', '_')};"]
    if carry:
        lines += [f"    static double carry[{data['W'].shape[0]}];",
                  "    table[FIT(carry0)] = carry;", "    table[FIT(next0)] = v_x;"]
    dims = ""
    if batch:
        for k in ("X", "k"):
            row = data[k][0].size
            lines += [f"    static {ctypes_[k]} stage_{k}[{batch * row}];",
                      f"    staging[FIT({k})] = stage_{k};"]
        dims = f"{batch}, "
    size = f"FIT(workspace_size)({dims[:-2]})"
    lines += [f"    void *ws = aligned_alloc(64, ({size} + 63) / 64 * 64);",
              f"    for (int e = 0; e < {len(perms)}; e++)",
              f"        {entry}_fit(table, perms + e * {n}, 0, {steps}, {batch or 1}, {n}, "
              f"losses + e * {steps}, staging, {dims}ws);",
              f"    for (int s = 0; s < {len(perms) * steps}; s++) printf(\"loss %.17g\\n\", "
              f"losses[s]);"]
    for k in ("W", "b", "V"):
        lines += [f"    for (int i = 0; i < {data[k].size}; i++)",
                  f"        printf(\"{k} %.17g\\n\", v_{k}[i]);"]
    lines += ['    printf("steps %.0f\\n", step_count[0]);', "    free(ws);", "    return 0;", "}"]
    return "\n".join(lines) + "\n"


@pytest.mark.skipif(not HAVE_CC, reason="no C compiler")
@pytest.mark.parametrize("config", list(FIT_DRIVERS))
def test_fit_loop_driven_from_c_by_the_header_alone(tmp_path, inputs, config):
    """A C program fills the table through the header's enum (params, data, lr, step count,
    optimizer state, the cross-step carry, staging for batches) and runs two shuffled epochs:
    its losses, params and step count equal, bit for bit, a replay of in-process step calls
    on the same samples."""
    fn, optimizer, batch = FIT_DRIVERS[config]
    step = diffc.train_step(fn, ["W", "b", "V"], optimizer())
    step.export(str(tmp_path / "step"))
    entry = json.loads((tmp_path / "step.json").read_text())["abi"]["entry"]
    assert bool(step.native.native.fit_rewrites) == (config == "sample_sgd")
    x_name = "X" if batch else "x"
    labels = inputs["K64"] if batch else inputs["K"]
    data = {"W": inputs["W6"], "b": inputs["b6"], "V": inputs["V"], x_name: inputs["X"],
            "k": labels}
    perms = np.stack([np.random.default_rng([5, e]).permutation(7) for e in range(2)])
    source = fit_driver(entry, list(data), data, perms, batch, step.lr, list(step.state),
                        config == "sample_sgd")
    (tmp_path / "driver.c").write_text(source)
    built = subprocess.run(["cc", "-O1", "-Wall", "-Werror", "-I", str(tmp_path), "-o",
                            str(tmp_path / "driver"), str(tmp_path / "driver.c"),
                            str(tmp_path / "step.o")], capture_output=True, text=True)
    assert built.returncode == 0, built.stderr
    ran = subprocess.run([str(tmp_path / "driver")], capture_output=True, text=True, timeout=60)
    assert ran.returncode == 0, ran.stderr
    got = {}
    for line in ran.stdout.splitlines():
        key, value = line.split()
        got.setdefault(key, []).append(float(value))
    replay = diffc.train_step(fn, ["W", "b", "V"], optimizer())
    params = [data[k].copy() for k in ("W", "b", "V")]
    losses = []
    for order in perms:
        for start in range(0, 7, batch or 1):
            rows = order[start:start + (batch or 1)]
            sample = (data[x_name][rows], labels[rows]) if batch else (
                data[x_name][rows[0]], int(labels[rows[0]]))
            losses.append(replay(*params, *sample))
    assert got["loss"] == losses
    for k, p in zip(("W", "b", "V"), params, strict=True):
        assert got[k] == list(p.ravel()), k
    assert got["steps"] == [replay.steps] == [len(losses)]


@pytest.mark.skipif(not HAVE_CC, reason="no C compiler")
def test_header_compiles_with_names_c_spells_alike(tmp_path):
    """Parameters named like the step's own inputs (lr, step_count), like a dim (B), like a C
    keyword (double) or alike once made C identifiers get distinct names in the prototype
    and the fit table's enum, so the header compiles."""
    @diffc.function(name="clashing")
    def f(w: f64[3], lr: f64[3], step_count: f64[3], double: f64, B: f64["B"],
          é: f64[3], ü: f64[3]) -> f64:
        return nn.sum(w * lr * step_count * é * ü) * double + nn.sum(B)

    diffc.train_step(f, ["w"], diffc.Adam()).export(str(tmp_path / "s"))
    (tmp_path / "m.c").write_text('#include "s.h"\nint main(void) { return 0; }\n')
    done = subprocess.run(["cc", "-c", "-Wall", "-Werror", "-o", "m.o", "m.c"],
                          capture_output=True, text=True, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    header = (tmp_path / "s.h").read_text()
    for decl in ("const double *lr ", "double lr_2", "double double_2", "const double *B_2 ",
                 "double *step_count_2 ", "const double *_ ", "const double *__2 "):
        assert decl in header, decl
