"""Hostile input at every public entry point: each rejection is a DiffcError naming the culprit,
and a rejected call leaves the params byte-identical (and the step's state and count as they
were). Cases that could crash the process (an ndarray subclass lying about its shape) run in a
subprocess."""
import math
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import diffc
from diffc import f64, i32, nn


@diffc.function
def loss(W: f64[3, 4], x: f64["B", 4], lr: f64, y: i32["B"]) -> f64:
    return nn.softmax_cross_entropy(nn.dense(W, x) * lr, y)


def fortran():
    return np.asfortranarray(np.ones((3, 4)))


def read_only():
    a = np.ones((3, 4))
    a.flags.writeable = False
    return a


ARRAYS = {  # hostile values for an f64[3, 4] array parameter, and what the error says
    "none": (lambda: None, "NoneType"), "str": (lambda: "abcd", "str"),
    "bool": (lambda: True, "bool"), "float": (lambda: 1.5, "float"),
    "nan": (lambda: math.nan, "nan"), "list": (lambda: [[1.0] * 4] * 3, "list"),
    "f32": (lambda: np.ones((3, 4), np.float32), "float32"),
    "object": (lambda: np.ones((3, 4), object), "object"),
    "complex": (lambda: np.ones((3, 4), complex), "complex"),
    "shape": (lambda: np.ones((4, 3)), "(4, 3)"), "rank0": (lambda: np.array(1.0), "()"),
    "scalar": (lambda: np.float64(1.0), "float64"), "fortran": (fortran, "contiguous"),
    "huge": (lambda: 2 ** 70, "int"),
}
SCALARS = {  # hostile values for the f64 scalar `lr`
    "none": None, "str": "0.1", "bool": True, "npbool": np.bool_(True), "complex": 1j,
    "array": np.ones(1), "object0d": np.array(0.5, object), "list": [0.5], "huge": 10 ** 400,
    "complex0d": np.array(1j),
}
LABELS = {  # hostile label arrays for y: i32[B] (C = 3 classes), two samples
    "high": np.array([0, 3], np.int32), "negative": np.array([-1, 0], np.int32),
    "max": np.array([0, 2 ** 31 - 1], np.int32), "i64": np.array([0, 1]),
    "float": np.array([0.0, 1.0]), "object": np.array([0, 1], object),
    "short": np.array([0], np.int32), "scalar": 0, "none": None,
}


def make_args():
    rng = np.random.default_rng(0)
    return [rng.standard_normal((3, 4)), rng.standard_normal((2, 4)), 0.5,
            np.array([0, 2], np.int32)]


STEP = diffc.train_step(loss, ["W"], diffc.Adam(lr=0.01))
CALLS = {
    "call": loss, "grad": diffc.grad(loss, "W"), "value_and_grad": diffc.value_and_grad(loss),
    "step": STEP,
}


def _cases():
    for entry in CALLS:
        for key, (value, found) in ARRAYS.items():
            yield entry, 0, key, value, ("W", found)
            yield entry, 1, key, value, ("x",)
        for key, value in SCALARS.items():
            yield entry, 2, key, lambda v=value: v, ("lr",)
        for key, value in LABELS.items():
            yield entry, 3, key, lambda v=value: v, ("y",)
    yield "step", 0, "read_only", read_only, ("W", "writable")
    yield "step", 1, "overlap", None, ("W", "x", "shares memory")


@pytest.mark.parametrize("entry, position, key, value, names", list(_cases()),
                         ids=lambda v: v if isinstance(v, str) else None)
def test_hostile_argument(entry, position, key, value, names):
    args = make_args()
    args[position] = args[0][:2] if key == "overlap" else value()
    params = args[0] if isinstance(args[0], np.ndarray) else None
    before = params.tobytes() if params is not None else None
    state, steps = [s.tobytes() for s in STEP.state.values()], STEP.steps
    with pytest.raises(diffc.DiffcError) as info:
        CALLS[entry](*args)
    assert isinstance(info.value, diffc.ArgumentError), info.value
    message = str(info.value)
    assert message.split(":")[0] in names[:2], message
    assert all(n in message for n in names), message
    if params is not None:
        assert params.tobytes() == before
    assert [s.tobytes() for s in STEP.state.values()] == state and STEP.steps == steps


def data():
    rng = np.random.default_rng(1)
    return rng.standard_normal((3, 4)), rng.standard_normal((5, 4)), np.array([0, 1, 2, 1, 0],
                                                                               np.int32)


FIT = [  # keyword, hostile value, what the message starts with
    *[("batch_size", v, "batch_size") for v in (0, -1, 2.5, "4", True, np.array([2]))],
    *[("epochs", v, "epochs") for v in (-1, 1.5, "1", None, True, np.float64(1.0), 10 ** 30)],
    *[("seed", v, "seed") for v in (-1, 2.5, None, "x", True, np.array([1, 2]))],
    *[("shuffle", v, "shuffle") for v in ("yes", None, np.array([1, 2]), 1.0)],
    *[("progress", v, "progress") for v in ("no", None, 0.0)],
]


@pytest.mark.parametrize("keyword, value, name", FIT, ids=lambda v: repr(v)[:20])
def test_hostile_fit_option(keyword, value, name):
    step = diffc.train_step(loss, ["W"], diffc.SGD(lr=0.1, momentum=0.9))
    W, X, Y = data()
    before = W.tobytes()
    with pytest.raises(diffc.ArgumentError) as info:
        step.fit(W, X, 0.5, Y, **{keyword: value})
    assert str(info.value).startswith(f"{name}: "), info.value
    assert W.tobytes() == before and step.steps == 0
    assert all(not s.any() for s in step.state.values())


@pytest.mark.parametrize("spoil, name", [
    (lambda a: a.__setitem__(1, a[1].astype(np.float32)), "x"),
    (lambda a: a.__setitem__(1, a[1][:, :3]), "x"),
    (lambda a: a.__setitem__(3, a[3][:4]), "x, y"),
    (lambda a: a.__setitem__(3, np.array([0, 1, 3, 1, 0], np.int32)), "y"),
    (lambda a: a.__setitem__(1, a[0]), "x"),
    (lambda a: a.__setitem__(2, np.array([0.5])), "lr"),
    (lambda a: a.__setitem__(0, read_only()), "W"),
], ids=["dtype", "shape", "count", "label", "overlap", "lr", "read_only"])
def test_hostile_fit_data(spoil, name):
    step = diffc.train_step(loss, ["W"], diffc.SGD(lr=0.1))
    args = list(data())
    args.insert(2, 0.5)
    spoil(args)
    before = args[0].tobytes()
    with pytest.raises(diffc.ArgumentError) as info:
        step.fit(*args)
    assert str(info.value).startswith(f"{name}"), info.value
    assert args[0].tobytes() == before and step.steps == 0


def test_numpy_integers_are_accepted_wherever_ints_are():
    """batch_size=np.int64(4) was refused; fit with numpy options equals fit with ints."""
    runs = []
    for kind in (int, np.int64):
        step = diffc.train_step(loss, ["W"], diffc.SGD(lr=0.1))
        W, X, Y = data()
        losses = step.fit(W, X, np.float32(0.5), Y, batch_size=kind(2), epochs=kind(2),
                          seed=kind(3), shuffle=np.bool_(True))
        runs.append((losses, W))
    assert np.array_equal(runs[0][0], runs[1][0]) and np.array_equal(runs[0][1], runs[1][1])
    assert len(runs[0][0]) == 6


@pytest.mark.parametrize("value", [None, "0.1", True, math.nan, math.inf, -1, 1j,
                                   np.array([0.1]), 10 ** 400])
def test_hostile_lr(value):
    step = diffc.train_step(loss, ["W"], diffc.SGD(lr=0.1))
    with pytest.raises(diffc.ArgumentError, match="^lr: expected a finite number >= 0"):
        step.lr = value
    assert step.lr == 0.1


@pytest.mark.parametrize("value", [np.float32(0.25), np.int64(1), 0, np.float64(2.0)])
def test_numpy_lr_is_accepted(value):
    step = diffc.train_step(loss, ["W"], diffc.SGD(lr=0.1))
    step.lr = value
    assert step.lr == float(value) and type(step.lr) is float


@pytest.mark.parametrize("make, name", [
    (lambda: diffc.SGD(lr=-1), "lr"), (lambda: diffc.SGD(lr=math.nan), "lr"),
    (lambda: diffc.SGD(lr=math.inf), "lr"), (lambda: diffc.SGD(lr=None), "lr"),
    (lambda: diffc.SGD(lr="0.1"), "lr"), (lambda: diffc.SGD(lr=True), "lr"),
    (lambda: diffc.SGD(lr=10 ** 400), "lr"), (lambda: diffc.SGD(0.1, momentum=-0.5), "momentum"),
    (lambda: diffc.SGD(0.1, weight_decay=math.nan), "weight_decay"),
    (lambda: diffc.SGD(0.1, nesterov="yes"), "nesterov"),
    (lambda: diffc.SGD(0.1, nesterov=True), "nesterov"),
    (lambda: diffc.Adam(betas=(1.0, 0.9)), "betas"), (lambda: diffc.Adam(betas=(0.9,)), "betas"),
    (lambda: diffc.Adam(betas="ab"), "betas"), (lambda: diffc.Adam(betas=(math.nan, 0.9)), "betas"),
    (lambda: diffc.Adam(betas=0.9), "betas"), (lambda: diffc.Adam(betas=(-0.1, 0.9)), "betas"),
    (lambda: diffc.Adam(eps=-1), "eps"), (lambda: diffc.Adam(eps=math.inf), "eps"),
    (lambda: diffc.Adam(lr=None), "lr"),
], ids=lambda v: None if callable(v) else v)
def test_hostile_optimizer_settings(make, name):
    with pytest.raises(diffc.ArgumentError) as info:
        make()
    assert name in str(info.value) and str(info.value).split(":")[0] in ("SGD", "Adam")


def test_numpy_optimizer_settings_are_plain_floats():
    adam = diffc.Adam(lr=np.float32(0.5), betas=np.array([0.5, 0.75]), eps=np.int64(1))
    assert adam == diffc.Adam(lr=0.5, betas=(0.5, 0.75), eps=1.0)
    assert all(type(v) is float for v in (adam.lr, *adam.betas, adam.eps))


@pytest.mark.parametrize("optimizer", [diffc.SGD, "sgd", 0.1, object(), diffc.Adam],
                         ids=repr)
def test_optimizer_must_be_an_optimizer_object(optimizer):
    with pytest.raises(diffc.ArgumentError, match="^optimizer: expected an optimizer object"):
        diffc.train_step(loss, ["W"], optimizer)


@pytest.mark.parametrize("make", [
    lambda: diffc.train_step(loss, "W"), lambda: diffc.train_step(loss, 5),
    lambda: diffc.train_step(loss, [5]), lambda: diffc.train_step(loss, ["W", "W"]),
    lambda: diffc.train_step(loss, ["nope"]), lambda: diffc.train_step(loss, ["y"]),
    lambda: diffc.train_step(loss, ["x"]), lambda: diffc.train_step(loss, []),
    lambda: diffc.train_step(loss, None), lambda: diffc.grad(loss, 5),
    lambda: diffc.grad(loss, [5]), lambda: diffc.grad(loss, ["nope"]),
    lambda: diffc.grad(loss, "y"), lambda: diffc.value_and_grad(loss, []),
    lambda: diffc.grad(loss, [None]), lambda: diffc.grad(np.sum),
    lambda: diffc.function(name=5)(loss.fn), lambda: diffc.function(5),
], ids=lambda v: None)
def test_hostile_transform_arguments(make):
    with pytest.raises(diffc.SignatureError):
        make()


@pytest.mark.parametrize("keyword, value", [
    *[("directions", v) for v in (0, -1, 1.5, "3", None, True)],
    *[("eps", v) for v in (0, -1e-6, math.nan, math.inf, "x", None)],
    *[("seed", v) for v in (-1, "x", None, 2.5)],
])
def test_hostile_check_grad_options(keyword, value):
    with pytest.raises(diffc.ArgumentError, match=f"^{keyword}: expected"):
        diffc.check_grad(loss, *make_args(), **{keyword: value})


def test_check_grad_with_numpy_options_and_hostile_arguments():
    args = make_args()
    assert diffc.check_grad(loss, *args, directions=np.int64(2), eps=np.float32(1e-6),
                            seed=np.uint8(1)) < 1e-6
    args[3] = np.array([0, 3], np.int32)
    with pytest.raises(diffc.ArgumentError, match=r"^y: labels must lie in \[0, 3\)"):
        diffc.check_grad(loss, *args)


class Tagged(np.ndarray):
    """An honest ndarray subclass."""


@pytest.mark.filterwarnings("ignore::PendingDeprecationWarning")  # np.matrix
@pytest.mark.parametrize("wrap", [np.asmatrix, lambda a: a.view(Tagged), np.ma.asarray],
                         ids=["matrix", "subclass", "masked"])
def test_honest_ndarray_subclasses_are_accepted(wrap):
    args = make_args()
    assert loss(wrap(args[0]), *args[1:]) == loss(*args)
    W = args[0].copy()
    step, plain = (diffc.train_step(loss, ["W"], diffc.SGD(lr=0.1)) for _ in "ab")
    wrapped = wrap(W)
    step(wrapped, *args[1:])
    plain(args[0], *args[1:])
    assert np.array_equal(np.asarray(wrapped), args[0])


LIARS = textwrap.dedent("""
    import numpy as np
    import diffc
    from diffc import f64, i32, nn

    @diffc.function
    def loss(W: f64[3, 4], x: f64["B", 4], lr: f64, y: i32["B"]) -> f64:
        return nn.softmax_cross_entropy(nn.dense(W, x) * lr, y)

    class Liar(np.ndarray):  # numpy's attributes, overridden with lies
        shape = property(lambda self: (3, 4))
        dtype = property(lambda self: np.dtype(np.float64))
        flags = property(lambda self: np.ones((3, 4)).flags)
        nbytes = property(lambda self: 96)

    def liar():  # 4 bytes where f64[3, 4] needs 96
        return np.ones(1, np.float32).view(Liar)

    W, x, y = np.ones((3, 4)), np.ones((2, 4)), np.zeros(2, np.int32)
    step = diffc.train_step(loss, ["W"])
    calls = {
        "call": lambda: loss(liar(), x, 0.5, y),
        "grad": lambda: diffc.grad(loss, "W")(liar(), x, 0.5, y),
        "value_and_grad": lambda: diffc.value_and_grad(loss)(W, liar(), 0.5, y),
        "step": lambda: step(liar(), x, 0.5, y),
        "fit": lambda: step.fit(W, liar(), 0.5, np.zeros(3, np.int32)),
        "fit_param": lambda: step.fit(liar(), np.ones((5, 4)), 0.5, np.zeros(5, np.int32)),
    }
    for name, call in calls.items():
        try:
            call()
            print(name, "no error")
        except Exception as e:
            print(name, type(e).__name__, str(e).split(":")[0], "float32 (1,)" in str(e))
""")


def test_ndarray_subclass_lying_about_its_shape_in_a_subprocess():
    """Checks read numpy's own shape, dtype and flags: a subclass that overrode them made the
    native code read past a 4-byte buffer (or crash)."""
    proc = subprocess.run([sys.executable, "-c", LIARS], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.splitlines() == [
        "call ArgumentError W True", "grad ArgumentError W True",
        "value_and_grad ArgumentError x True", "step ArgumentError W True",
        "fit ArgumentError x True", "fit_param ArgumentError W True"]
