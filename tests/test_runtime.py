"""The call path: argument validation, binding, result types and function attributes."""
import ctypes
import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import diffc
from diffc import ArgumentError, f32, f64, i32, i64, nn
from diffc.runtime.abi import Native


@diffc.function
def scaled(W: f64[3, 4], x: f64[4], lr: f64, k: i32) -> f64:
    return nn.softmax_cross_entropy(nn.dense(W, x) * lr, k)


@diffc.function
def rowdot(X: f64["B", 4], Y: f64["B", 4]) -> f64["B"]:
    return (X * Y).sum(1)


@diffc.function
def sce_symbolic(z: f64["B", "C"], y: i32["B"]) -> f64:
    return nn.softmax_cross_entropy(z, y)


@diffc.function
def ce_static(z: f64["B", 5], y: i64["B"]) -> f64:
    return nn.cross_entropy(nn.softmax(z), y)


@diffc.function
def ce_sample(z: f64[5], y: i64) -> f64:
    return nn.softmax_cross_entropy(z, y)


@diffc.function
def total32(x: f32[4]) -> f32:
    return x.sum()


@diffc.function
def unused_ints(a: i64, b: i32, x: f64[2]) -> f64:
    return x.sum()


W = np.arange(12.0).reshape(3, 4) / 10
X = np.array([1.0, -2.0, 0.5, 4.0])


def scaled_ref(W, x, lr, k):
    z = (W @ x) * lr
    return np.log(np.exp(z - z.max()).sum()) + z.max() - z[k]


def expect_error(call, *fragments):
    """call() raises ArgumentError whose message holds every fragment."""
    with pytest.raises(ArgumentError) as info:
        call()
    for fragment in fragments:
        assert fragment in str(info.value), (fragment, str(info.value))


# ----------------------------------------------------------------------------- arrays

@pytest.mark.parametrize("bad, given", [
    (X.astype(np.float32), "float32"),
    (X.astype(np.int64), "int64"),
    (np.ones(5), "(5,)"),
    (np.ones(3), "(3,)"),
    (np.ones((1, 4)), "(1, 4)"),
    (np.ones((4, 1)), "(4, 1)"),
    (np.float64(1.0), "float64"),
    (np.array(1.0), "()"),
], ids=["f32", "i64", "long", "short", "rank2", "rank2t", "npscalar", "rank0"])
def test_wrong_array_dtype_shape_or_rank(bad, given):
    expect_error(lambda: scaled(W, bad, 1.0, 0), "x", "f64[4]", given)


def test_wrong_matrix_shape():
    expect_error(lambda: scaled(W.T.copy(), X, 1.0, 0), "W", "f64[3,4]", "(4, 3)")


def test_symbolic_dim_bound_two_ways_names_both_parameters():
    expect_error(lambda: rowdot(np.ones((3, 4)), np.ones((5, 4))), "Y", "X", "B", "3", "(5, 4)")
    expect_error(lambda: rowdot(np.ones((3, 4)), np.ones((3, 5))), "Y", "f64[B,4]", "(3, 5)")


def test_symbolic_dim_must_be_positive():
    expect_error(lambda: rowdot(np.ones((0, 4)), np.ones((0, 4))), "X", "B", "(0, 4)")


@pytest.mark.parametrize("w, x, name, given", [
    (W, np.ones(8)[::2], "x", "(4,)"),
    (W, np.ones((4, 2))[:, 0], "x", "(4,)"),
    (W, X[::-1], "x", "(4,)"),
    (np.asfortranarray(W), X, "W", "(3, 4)"),
], ids=["stride2", "column", "reversed", "fortran"])
def test_non_contiguous_array(w, x, name, given):
    expect_error(lambda: scaled(w, x, 1.0, 0), name, "contiguous", "float64", given)


@pytest.mark.parametrize("bad, given", [([1.0, 2.0, 3.0, 4.0], "list"), (None, "None"),
                                        ("abcd", "str"), ((1.0, 2.0, 3.0, 4.0), "tuple"),
                                        (3.0, "float")])
def test_non_array_for_an_array_parameter(bad, given):
    expect_error(lambda: scaled(W, bad, 1.0, 0), "x", "f64[4]", given)


def test_read_only_and_sliced_contiguous_inputs_are_accepted():
    x = X.copy()
    x.flags.writeable = False
    rows = np.arange(24.0).reshape(6, 4)[1:4]  # a contiguous view with an offset
    assert scaled(rows, x, 0.5, 2) == pytest.approx(scaled_ref(rows, x, 0.5, 2), rel=1e-12)


# ----------------------------------------------------------------------------- scalars

@pytest.mark.parametrize("bad, given", [("0.1", "str"), (True, "bool"), (None, "None"),
                                        (1j, "complex"), (np.ones(1), "(1,)"),
                                        (np.bool_(False), "bool")])
def test_bad_float_scalar(bad, given):
    expect_error(lambda: scaled(W, X, bad, 0), "lr", "f64", given)


@pytest.mark.parametrize("bad, given", [("1", "str"), (False, "bool"), (1.0, "1.0"),
                                        (2 ** 31, "2147483648"), (-2 ** 31 - 1, "-2147483649"),
                                        (np.int64(2 ** 40), str(2 ** 40))])
def test_bad_int_scalar(bad, given):
    expect_error(lambda: scaled(W, X, 1.0, bad), "k", "i32", given)


def test_i64_scalar_out_of_range():
    expect_error(lambda: unused_ints(2 ** 63, 0, np.ones(2)), "a", "i64", str(2 ** 63))
    expect_error(lambda: unused_ints(-2 ** 63 - 1, 0, np.ones(2)), "a", "i64")
    expect_error(lambda: unused_ints(np.uint64(2 ** 64 - 1), 0, np.ones(2)), "a", "i64")


def test_integer_scalars_at_the_limits_are_accepted():
    for a, b in [(2 ** 63 - 1, 2 ** 31 - 1), (-2 ** 63, -2 ** 31), (np.int64(5), np.int32(-5)),
                 (np.uint64(7), np.array(3, np.int32))]:
        assert unused_ints(a, b, np.array([1.0, 2.5])) == 3.5


def test_float_scalar_too_large_for_the_dtype():
    expect_error(lambda: scaled(W, X, 10 ** 400, 0), "lr", "f64")


def test_scalar_values_in_range_and_numpy_scalars_are_accepted():
    for lr, k in [(1, 2), (np.float32(0.5), 0), (np.float64(2.0), np.int64(1)),
                  (np.array(0.25), np.array(2, np.int32)), (np.int16(3), np.uint8(1))]:
        expected = scaled_ref(W, X, float(lr), int(k))
        assert scaled(W, X, lr, k) == pytest.approx(expected, rel=1e-12)


# ----------------------------------------------------------------------------- binding

def test_missing_argument():
    expect_error(lambda: scaled(W, X, 1.0), "k", "missing")
    expect_error(lambda: scaled(W, lr=1.0, k=0), "x", "missing")


def test_extra_positional_argument():
    expect_error(lambda: scaled(W, X, 1.0, 0, 5), "4", "5", "W, x, lr, k")


def test_unknown_keyword():
    expect_error(lambda: scaled(W, X, 1.0, 0, z=5), "z", "W, x, lr, k")
    expect_error(lambda: scaled(W, X, 1.0, kk=0), "kk")


def test_same_argument_twice():
    expect_error(lambda: scaled(W, X, 1.0, 0, W=W), "W", "twice")
    expect_error(lambda: scaled(W, X, 1.0, x=X), "x", "twice")


def test_keyword_calls_equal_positional_calls():
    positional = scaled(W, X, 0.5, 1)
    assert positional == pytest.approx(scaled_ref(W, X, 0.5, 1), rel=1e-12)
    assert scaled(W=W, x=X, lr=0.5, k=1) == positional
    assert scaled(k=1, lr=0.5, x=X, W=W) == positional
    assert scaled(W, X, k=1, lr=0.5) == positional
    assert scaled(W, lr=0.5, k=1, x=X) == positional


# ----------------------------------------------------------------------------- labels

Z = np.random.default_rng(0).standard_normal((3, 5))


@pytest.mark.parametrize("fn, dtype", [(sce_symbolic, np.int32), (ce_static, np.int64)],
                         ids=["softmax_cross_entropy", "cross_entropy"])
@pytest.mark.parametrize("labels, given", [([0, -1, 4], "-1"), ([0, 5, 1], "5"),
                                           ([2 ** 31 - 1, 1, 1], str(2 ** 31 - 1))])
def test_labels_out_of_range(fn, dtype, labels, given):
    expect_error(lambda: fn(Z, np.array(labels, dtype)), "y", "5", given)


def test_labels_in_range_are_accepted():
    y = np.array([4, 0, 2])
    shifted = Z - Z.max(1, keepdims=True)
    ref = -(shifted[np.arange(3), y] - np.log(np.exp(shifted).sum(1))).mean()
    assert sce_symbolic(Z, y.astype(np.int32)) == pytest.approx(ref, rel=1e-12)
    assert ce_static(Z, y) == pytest.approx(ref, rel=1e-12)


@pytest.mark.parametrize("label", [-1, 5, 2 ** 40])
def test_scalar_label_out_of_range(label):
    expect_error(lambda: ce_sample(Z[0], label), "y", "5", str(label))


@pytest.mark.parametrize("label", [np.array(3, object), np.array(3 + 0j), np.array("3")],
                         ids=["object", "complex", "str"])
def test_scalar_label_as_a_0d_array_of_another_kind(label):
    """A 0-d object array passed the check (its item is an int) and then made ctypes raise."""
    expect_error(lambda: ce_sample(Z[0], label), "y", "i64 integer", str(label.dtype))


@diffc.function
def constant_label(W: f64["C", 4], x: f64[4]) -> f64:
    return nn.softmax_cross_entropy(W @ x, 2)


@diffc.function
def constant_label_batch(Z: f64["B", "C"]) -> f64:
    return nn.cross_entropy(nn.softmax(Z.sum(0)), np.int32(4))


def sce_ref(z, label):
    return np.log(np.exp(z - z.max()).sum()) + z.max() - z[label]


@pytest.mark.parametrize("classes", [3, 5])
def test_constant_label_inside_a_symbolic_class_axis(classes):
    W = np.arange(4.0 * classes).reshape(classes, 4) / 7
    assert constant_label(W, X) == pytest.approx(sce_ref(W @ X, 2), rel=1e-12)
    g = diffc.grad(constant_label, "W")(W, X)
    p = np.exp(W @ X - (W @ X).max())
    np.testing.assert_allclose(g, np.outer(p / p.sum() - np.eye(classes)[2], X), rtol=1e-12)


@pytest.mark.parametrize("fn, args, name, classes", [
    (constant_label, (np.ones((2, 4)), X), "W", 2),
    (constant_label, (np.ones((1, 4)), X), "W", 1),
    (diffc.grad(constant_label, "W"), (np.ones((2, 4)), X), "W", 2),
    (diffc.value_and_grad(constant_label), (np.ones((2, 4)), X), "W", 2),
    (constant_label_batch, (np.ones((3, 4)),), "Z", 4),
], ids=["call", "one_class", "grad", "value_and_grad", "cross_entropy"])
def test_constant_label_outside_a_symbolic_class_axis(fn, args, name, classes):
    """A constant label indexing a symbolic class axis was never range-checked: label 2 with
    C=2 read past the logits (a wrong loss and gradient; a large one segfaults)."""
    label = 4 if name == "Z" else 2
    with pytest.raises(ArgumentError) as info:
        fn(*args)
    assert str(info.value) == (f"{name}: expected C > {label} (the constant label or index "
                               f"{label} indexes an axis of size C), got C={classes}")


@diffc.function
def constant_label_sample(w: f64[3], x: f64[1, "C"]) -> f64:
    return nn.softmax_cross_entropy((x * w.sum()).sum(0), 2)


def test_constant_label_of_a_train_step_is_checked_by_step_and_fit():
    step = diffc.train_step(constant_label_sample, ["w"], diffc.SGD(lr=0.1))
    w, before = np.ones(3), np.ones(3).tobytes()
    with pytest.raises(ArgumentError, match="^x: expected C > 2"):
        step(w, np.ones((1, 2)))
    with pytest.raises(ArgumentError, match="^x: expected C > 2"):
        step.fit(w, np.ones((5, 1, 2)))
    assert w.tobytes() == before and step.steps == 0
    losses = step.fit(w, np.ones((5, 1, 3)), shuffle=False)
    assert losses[0] == pytest.approx(np.log(3), rel=1e-12)  # equal logits: log(C)


@pytest.mark.parametrize("label", [-1, np.int64(-3), np.array(-1), 2 ** 63, np.uint64(2 ** 63)],
                         ids=repr)
def test_negative_or_huge_constant_label_is_refused_when_traced(label):
    with pytest.raises(diffc.ShapeError, match="out of range for C classes"):
        @diffc.function
        def f(z: f64["C"]) -> f64:
            return nn.softmax_cross_entropy(z, label)


@pytest.mark.parametrize("label", [5, np.array(5), np.array(7, np.int32), np.int16(-1)],
                         ids=repr)
def test_constant_label_outside_a_static_class_axis_is_refused_when_traced(label):
    """A 0-d integer array was taken as a constant label without any check."""
    with pytest.raises(diffc.ShapeError, match="out of range for 5 classes"):
        @diffc.function
        def f(z: f64[5]) -> f64:
            return nn.cross_entropy(nn.softmax(z), label)


def test_constant_labels_survive_the_json_round_trip(tmp_path):
    native = constant_label.artifacts.native
    assert native.literal_labels == ((2, "C"),)
    assert Native.from_json(json.loads(json.dumps(native.to_json()))) == native


def test_eager_labels_out_of_range_are_a_shape_error():
    with pytest.raises(diffc.ShapeError, match=r"labels must lie in \[0, 5\)"):
        nn.softmax_cross_entropy(Z, np.array([0, 5, 1]))


def test_label_dtype_mismatch():
    expect_error(lambda: sce_symbolic(Z, np.array([0, 1, 2], np.int64)), "y", "i32[B]", "int64")
    expect_error(lambda: ce_static(Z, np.array([0.0, 1.0, 2.0])), "y", "i64[B]", "float64")


@pytest.mark.parametrize("call, fix", [
    (lambda: sce_symbolic(Z, np.array([0, 1, 2])), ".astype(np.int32)"),
    (lambda: ce_static(Z, np.array([0.0, 1.0, 2.0])), ".astype(np.int64)"),
    (lambda: scaled(W.astype(np.float32), X, 1.0, 0), ".astype(np.float64)"),
    (lambda: total32(np.ones(4)), ".astype(np.float32)"),
    (lambda: total32(np.ones(4, bool)), ".astype(np.float32)"),
], ids=["int64-labels", "float-labels", "f32-weights", "f64-data", "bool-data"])
def test_numeric_dtype_slips_name_the_conversion(call, fix):
    """The dtypes numpy and scikit-learn give by default (int64 labels, float64 data) for
    another declared dtype: the message says how to convert."""
    expect_error(call, f"(convert it with {fix})")


@pytest.mark.parametrize("bad", [np.ones(4, complex), np.array(["a"] * 4), np.ones(4, object)],
                         ids=["complex", "str", "object"])
def test_non_numeric_dtypes_get_no_conversion_hint(bad):
    with pytest.raises(ArgumentError, match=r"^x: expected f32\[4\], got") as info:
        total32(bad)
    assert "astype" not in str(info.value)


def test_scalar_parameter_given_an_array_says_it_is_a_scalar():
    """Before: 'y: expected a i64 integer, got int64 (1,)' (grammar, and no word of why)."""
    expect_error(lambda: ce_sample(Z[0], np.array([2])),
                 "y: expected an i64 integer (a scalar parameter), got an array int64 (1,)")
    expect_error(lambda: scaled(W, X, np.ones(1), 0), "lr: expected an f64 number (a scalar")


def test_a_column_where_a_vector_is_expected_says_ravel():
    expect_error(lambda: sce_symbolic(Z, np.array([[0], [1], [2]], np.int32)),
                 "y: expected i32[B], got int32 (3, 1) (a column: .ravel() makes it 1-d)")


# ----------------------------------------------------------------------------- results, attributes

def test_scalar_results_are_python_floats():
    out32, out64 = total32(np.ones(4, np.float32)), ce_sample(Z[0], 2)
    assert type(out32) is float and out32 == 4.0
    assert type(out64) is float


def test_signature_attribute():
    sig = scaled.signature
    assert str(sig) == "(W: f64[3,4], x: f64[4], lr: f64, k: i32) -> f64"
    assert sig.names == ("W", "x", "lr", "k")
    assert sig.param("x").type == f64[4] and sig.param("k").type.shape == ()
    assert sig.result == f64[()] and unused_ints.signature.param("b").type == i32[()]
    assert str(rowdot.signature) == "(X: f64[B,4], Y: f64[B,4]) -> f64[B]"


def test_compile_returns_the_function():
    @diffc.function
    def twice(x: f64[2]) -> f64[2]:
        return x + x

    assert twice.compile() is twice
    assert twice.compile() is twice
    np.testing.assert_array_equal(twice(np.array([1.0, 2.5])), [2.0, 5.0])


def test_rejected_calls_leave_the_function_usable():
    expect_error(lambda: rowdot(np.ones((3, 4)), np.ones((5, 4))), "Y")
    x, y = np.arange(8.0).reshape(2, 4), np.ones((2, 4))
    np.testing.assert_array_equal(rowdot(x, y), [6.0, 22.0])


# ----------------------------------------------------------------------------- no crashes

GARBAGE = textwrap.dedent("""
    import numpy as np
    import diffc
    from diffc import nn, f64, i32

    @diffc.function
    def f(W: f64[3, 4], x: f64[4], lr: f64, k: i32) -> f64:
        return nn.softmax_cross_entropy(nn.dense(W, x) * lr, k)

    @diffc.function
    def g(z: f64["B", "C"], y: i32["B"]) -> f64:
        return nn.softmax_cross_entropy(z, y)

    W, x, z = np.ones((3, 4)), np.ones(4), np.ones((2, 5))
    y = np.zeros(2, np.int32)
    bad = [
        lambda: f(W, None, 1.0, 0), lambda: f(None, x, 1.0, 0), lambda: f(W, object(), 1.0, 0),
        lambda: f(W, b"12345678", 1.0, 0), lambda: f(W, {}, 1.0, 0), lambda: f(W, 4, 1.0, 0),
        lambda: f(W, [[1.0] * 4], 1.0, 0), lambda: f(W, np.ones(4, object), 1.0, 0),
        lambda: f(W, np.ones(4, complex), 1.0, 0), lambda: f(W, np.ones(4, np.float16), 1.0, 0),
        lambda: f(W, np.zeros(4, [("a", "f8")]), 1.0, 0), lambda: f(W, np.array(1.0), 1.0, 0),
        lambda: f(W, np.empty(0), 1.0, 0), lambda: f(W, np.ones(10 ** 6), 1.0, 0),
        lambda: f(W, np.ones(8)[::2], 1.0, 0), lambda: f(W, x[::-1], 1.0, 0),
        lambda: f(np.ones((4, 3)).T, x, 1.0, 0), lambda: f(np.ones((3, 4, 1)), x, 1.0, 0),
        lambda: f(W, x, None, 0), lambda: f(W, x, "1", 0), lambda: f(W, x, [1.0], 0),
        lambda: f(W, x, x, 0), lambda: f(W, x, 1.0, None), lambda: f(W, x, 1.0, 2 ** 100),
        lambda: f(W, x, 1.0, float("nan")), lambda: f(W, x, 1.0, -2 ** 31 - 1),
        lambda: f(W, x, 1.0, np.ones(2, np.int32)), lambda: f(W, x, 10 ** 400, 0),
        lambda: f(W, x, 1.0, 3), lambda: f(W, x, 1.0, -1), lambda: f(W, x, 1.0, 2 ** 31 - 1),
        lambda: f(W, x, 1.0), lambda: f(), lambda: f(W, x, 1.0, 0, 0),
        lambda: f(W, x, 1.0, 0, W=W), lambda: f(W, x, 1.0, 0, bogus=1),
        lambda: f(W, x, 1.0, **{"": 0}),
        lambda: g(z, np.array([0, 5], np.int32)), lambda: g(z, np.array([-1, 0], np.int32)),
        lambda: g(z, np.array([0, 2 ** 31 - 1], np.int32)), lambda: g(z, np.zeros(3, np.int32)),
        lambda: g(z, np.zeros(2, np.int64)), lambda: g(z, np.zeros(2)), lambda: g(z, 0),
        lambda: g(np.ones((0, 5)), np.zeros(0, np.int32)), lambda: g(np.ones((2, 0)), y),
        lambda: g(np.ones(5), y), lambda: g(z, y.reshape(2, 1)), lambda: g(z[:, ::2], y),
        lambda: g(z, np.zeros(4, np.int32)[::2]),
    ]
    failed = []
    for i, call in enumerate(bad):
        try:
            call()
        except diffc.ArgumentError:
            continue
        except Exception as e:
            failed.append(f"case {i}: {type(e).__name__}: {e}")
        else:
            failed.append(f"case {i}: no error")
    print("\\n".join(failed))
    raise SystemExit(1 if failed else 0)
""")


def test_garbage_arguments_raise_in_a_subprocess():
    proc = subprocess.run([sys.executable, "-c", GARBAGE], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-2000:]}"


# ----------------------------------------------------------------------------- sizes

SIZES = textwrap.dedent("""
    import numpy as np
    import diffc
    from diffc import nn, f64

    @diffc.function
    def cube(x: f64["N", 1, 1], y: f64["M", 1], z: f64["K"]) -> f64:
        return nn.relu(x * y * z).sum()

    @diffc.function
    def outer(x: f64["N", 1], y: f64["M"]) -> f64["N", "M"]:
        return x * y

    @diffc.function
    def outer_sum(x: f64["N", 1], y: f64["M"]) -> f64:
        return nn.relu(x * y).sum()

    big = 2 ** 21
    calls = {
        "cube": lambda: cube(np.ones((big, 1, 1)), np.ones((big, 1)), np.ones(2 * big)),
        "outputs": lambda: outer(np.ones((big // 2, 1)), np.ones(big // 2)),
        "workspace": lambda: outer_sum(np.ones((big // 2, 1)), np.ones(big // 2)),
    }
    for name, call in calls.items():
        try:
            call()
        except diffc.ArgumentError as e:
            print(name, "ArgumentError", e)
        except BaseException as e:
            print(name, type(e).__name__, e)
    print("small", cube(np.ones((2, 1, 1)), np.ones((3, 1)), np.full(4, 0.5)))
""")


def test_sizes_too_large_for_int64_or_memory_are_argument_errors():
    """Symbolic dims whose values overflowed int64 byte counts (a wrapped workspace size), or
    whose outputs or workspace the machine cannot hold, raised numpy's MemoryError."""
    proc = subprocess.run([sys.executable, "-c", SIZES], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    lines = dict(line.split(" ", 1) for line in proc.stdout.splitlines())
    assert lines["cube"] == ("ArgumentError N=2097152 (bound by x), M=2097152 (bound by y), "
                             "K=4194304 (bound by z): these sizes make a value of the program "
                             "larger than 2**63 - 1 bytes")
    assert lines["outputs"] == ("ArgumentError N=1048576 (bound by x), M=1048576 (bound by y): "
                                "the outputs for these sizes would take more memory than this "
                                "machine can allocate")
    assert lines["workspace"].startswith(
        "ArgumentError N=1048576 (bound by x), M=1048576 (bound by y): the workspace for these "
        "sizes would take ") and lines["workspace"].endswith("more memory than this machine "
                                                              "can allocate")
    assert lines["small"] == "12.0"


def test_static_shapes_whose_workspace_overflows_are_refused_when_compiled():
    """Each value fits in 2**63 - 1 bytes (tracing checks that), their workspace does not."""
    @diffc.function
    def table(x: f64[2 ** 28, 1], y: f64[2 ** 30]) -> f64:
        a = nn.tanh(x * y)
        return (nn.softmax(a) * nn.log_softmax(a)).sum()

    with pytest.raises(diffc.ShapeError, match="workspace for these static shapes would take "
                                               "more than 2"):
        diffc.value_and_grad(table, "x").compile()


@diffc.function
def softmax_table(x: f64["N", 1], y: f64["M"]) -> f64:
    a = nn.tanh(x * y)
    return (nn.softmax(a) * nn.log_softmax(a)).sum()


def test_workspace_size_checks_every_product_and_sum():
    """The native size function refuses dims whose values fit one by one but whose workspace
    (several N x M buffers) does not; the same dims scaled down are accepted."""
    vg = diffc.value_and_grad(softmax_table, "x")  # keeps the code
    workspace = vg.native.invoker.workspace
    slots = workspace.size((100, 1000)) // (100 * 1000 * 8)
    assert 4 < slots < 8
    n, m = 2 ** 28, 2 ** 30  # one N x M f64 buffer: 2**61 bytes; `slots` of them: > 2**63
    assert workspace.size_function(n, m) == -1
    assert slots * 2 ** 60 < workspace.size_function(n // 2, m) < 2 ** 63
    with pytest.raises(ArgumentError, match=r"^N=268435456 \(bound by x\), M=1073741824 "
                                            r"\(bound by y\): these sizes make a value"):
        workspace.size((n, m))
    assert workspace.size_function(2 ** 62, 1) == -1
    assert workspace.size_function(1, 2 ** 63 - 1) == -1


# ----------------------------------------------------------------------------- wide calls

WIDE = 1050  # unused f64 scalars: the entry takes more arguments than ctypes passes (1024)


def _wide_function():
    names = [f"a{i}" for i in range(WIDE)]
    source = (f"def wide(x: f32['N'], {', '.join(f'{n}: f64' for n in names)}, s: f32, "
              f"k: i32) -> f32:\n    return nn.softmax_cross_entropy(x * s, k)\n")
    scope = {"f32": f32, "f64": f64, "i32": i32, "nn": nn}
    exec(source, scope)  # noqa: S102 - a generated signature too long to write out
    return diffc.function(scope["wide"])


def test_calls_with_more_arguments_than_ctypes_passes():
    """A function taking more than 1024 native arguments raised ctypes.ArgumentError; it is
    called through its packed twin, each argument in its own slot as its own C type."""
    vg = diffc.value_and_grad(_wide_function(), "x")
    x = np.array([0.5, -1.0, 2.0, 0.25], np.float32)
    value, g = vg(x, *np.arange(WIDE, dtype=np.float64), np.float32(-1.5), 3)
    z = x.astype(np.float64) * -1.5
    p = np.exp(z - z.max()) / np.exp(z - z.max()).sum()
    assert value == pytest.approx(sce_ref(z, 3), rel=1e-5)
    np.testing.assert_allclose(g, (p - np.eye(4)[3]) * -1.5, rtol=1e-5)
    assert vg.artifacts.native.packed() == [vg.artifacts.native.abi.entry]
    expect_error(lambda: vg(x, *[0.0] * WIDE, 1.0, 4), "k", "[0, 4)", "4")
    expect_error(lambda: vg(x, *[0.0] * WIDE, "1", 1), "s", "f32", "str")
    assert constant_label.artifacts.native.packed() == []  # narrow: plain calls


def test_packed_twin_reads_every_argument_type_from_its_slot():
    from llvmlite import ir

    from diffc.compiler import codegen, llvm
    from diffc.core.types import f32, f64
    from diffc.core.types import i32 as int32
    from diffc.core.types import i64 as int64
    from diffc.runtime.abi import Arg
    from diffc.runtime.native import native_function

    i32, i64, double, float_ = ir.IntType(32), ir.IntType(64), ir.DoubleType(), ir.FloatType()
    kinds = [i64, double, float_, i32, codegen.PTR] * 206  # 1030 arguments
    module = ir.Module("wide")
    fn = ir.Function(module, ir.FunctionType(double, kinds), "weigh")
    b = ir.IRBuilder(fn.append_basic_block())
    total = ir.Constant(double, 0.0)
    for i, arg in enumerate(fn.args):  # sum of (i + 1) * value
        if arg.type == codegen.PTR:
            arg = b.load(arg, typ=double)
        value = (b.sitofp(arg, double) if isinstance(arg.type, ir.IntType) else
                 b.fpext(arg, double) if arg.type == float_ else arg)
        total = b.fadd(total, b.fmul(value, ir.Constant(double, i + 1.0)))
    b.ret(total)
    codegen.add_packed(module, "weigh")
    compiled = llvm.compile_module(module, llvm.host_target())
    handle, addresses = llvm.link(compiled.object_code, ["weigh", "weigh_packed"], "wide")
    cells = np.arange(206, dtype=np.float64) - 100.0
    args = {i64: Arg("a", int64, False, "dim"), double: Arg("a", f64, False, "input"),
            float_: Arg("a", f32, False, "input"), i32: Arg("a", int32, False, "input"),
            codegen.PTR: Arg("a", None, True, "workspace")}
    weigh = native_function(addresses, "weigh", ctypes.c_double, [args[k] for k in kinds])
    rng = np.random.default_rng(5)
    ints = rng.integers(-2 ** 31, 2 ** 31, 206)
    floats = rng.standard_normal(206)
    args, want = [], 0.0
    for j in range(206):
        values = [int(ints[j]) * 3 ** 10, float(floats[j]), float(np.float32(floats[j])),
                  int(ints[j]), cells.ctypes.data + 8 * j]
        args += values
        seen = values[:4] + [cells[j]]
        want += sum(v * (5 * j + k + 1) for k, v in enumerate(seen))
    assert weigh(*args) == pytest.approx(want, rel=1e-12)
    del handle  # the code stays mapped until here
