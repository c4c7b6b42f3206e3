"""Types: the two spellings of array types, their printing, dim checks and reading signatures."""
import dataclasses
import enum

import numpy as np
import pytest

import diffc
from diffc import Array, SignatureError, f32, f64, i32, i64
from diffc.core.types import ArrayType, Param, signature_of

B, N = "B", "N"  # symbolic dims


# ----------------------------------------------------------------------------- spellings

@pytest.mark.parametrize("dtype", [f32, f64, i32, i64])
def test_subscript_and_array_spellings_are_equal(dtype):
    short, long = dtype[128, 784], Array[dtype, 128, 784]
    assert short == long
    assert hash(short) == hash(long)
    assert short.dtype is dtype
    assert short.shape == (128, 784)


def test_single_dim_and_symbolic_dims():
    assert f32[5] == Array[f32, 5] == ArrayType(f32, (5,))
    t = f64[B, 3, N]
    assert t == Array[f64, B, 3, N]
    assert t.shape == (B, 3, N)
    assert t.ndim == 3
    assert t.symbols == (B, N)


@pytest.mark.parametrize("a, b", [
    (f32[128, 784], f64[128, 784]),
    (f32[128], f32[128, 1]),
    (f32[B, 3], f32[N, 3]),
    (f32[3], f32[B]),
])
def test_different_types_are_unequal(a, b):
    assert a != b
    assert len({a, b}) == 2


def test_types_are_immutable():
    t = f32[2, 3]
    with pytest.raises(dataclasses.FrozenInstanceError):
        t.shape = (3, 2)


def test_dtypes_map_to_numpy():
    assert [d.np_dtype for d in (f32, f64, i32, i64)] == [
        np.dtype(np.float32), np.dtype(np.float64), np.dtype(np.int32), np.dtype(np.int64)]
    assert [d.is_float for d in (f32, f64, i32, i64)] == [True, True, False, False]
    assert (f32.itemsize, f64.itemsize, i32.itemsize, i64.itemsize) == (4, 8, 4, 8)


# ----------------------------------------------------------------------------- printing

@pytest.mark.parametrize("t, text", [
    (f32[B, 784], "f32[B,784]"),
    (Array[f64, 128, 784], "f64[128,784]"),
    (i32[7], "i32[7]"),
    (ArrayType(f64, ()), "f64"),
])
def test_types_print_in_annotation_syntax(t, text):
    assert str(t) == text
    assert repr(t) == text


def test_dtypes_print_their_names():
    assert [repr(d) for d in (f32, f64, i32, i64)] == ["f32", "f64", "i32", "i64"]


def test_signature_prints_in_annotation_syntax():
    def f(x: f32[B, 784], lr: f64) -> f32:
        return x.sum() * lr
    assert str(signature_of(f)) == "(x: f32[B,784], lr: f64) -> f32"


# ----------------------------------------------------------------------------- bad dims

BAD_DIMS = [0, -1, -784, True, False, 1.5, 2.0, None, "1B", "a b", "", "B-1", (2,), [3],
            np.bool_(True), np.int64(0), np.float64(2.0), np.str_("1B")]


@pytest.mark.parametrize("dim", BAD_DIMS, ids=repr)
def test_bad_dim_in_subscript_is_a_signature_error(dim):
    with pytest.raises(SignatureError):
        f32[3, dim]


@pytest.mark.parametrize("dim", BAD_DIMS, ids=repr)
def test_bad_dim_in_array_spelling_is_a_signature_error(dim):
    with pytest.raises(SignatureError):
        Array[f32, dim, 3]


@pytest.mark.parametrize("dim", [0, -2, True, 1.5, "1B"], ids=repr)
def test_bad_dim_message_shows_the_dim(dim):
    with pytest.raises(SignatureError) as info:
        f64[dim]
    assert repr(dim) in str(info.value) or str(dim) in str(info.value)


class Size(enum.IntEnum):
    HIDDEN = 3


class Name(str):
    pass


@pytest.mark.parametrize("dim, plain", [(Size.HIDDEN, 3), (np.int64(3), 3), (np.uint8(3), 3),
                                        (np.str_("B"), "B"), (Name("B"), "B")], ids=repr)
def test_int_and_str_subclass_dims_become_plain(dim, plain):
    """Later stages tell static from symbolic dims by exact class: an IntEnum member taken
    as is was treated as symbolic at call time, so any size passed."""
    t = f64[dim, 2]
    assert t.shape == (plain, 2) and type(t.shape[0]) is type(plain)
    assert t == Array[f64, dim, 2] == f64[plain, 2]


def test_array_type_made_directly_is_checked_when_read_as_an_annotation():
    def f(x: ArrayType(f64, (Size.HIDDEN, np.str_("B")))) -> f64:
        return x.sum()

    t = signature_of(f).params[0].type
    assert t == f64[3, "B"] and type(t.shape[0]) is int and type(t.shape[1]) is str

    def g(x: ArrayType(f64, (0,))) -> f64:
        return x.sum()

    with pytest.raises(SignatureError, match="got 0"):
        signature_of(g)


def test_int_enum_dims_are_static_at_call_time():
    @diffc.function
    def total(x: f64[Size.HIDDEN]) -> f64:
        return x.sum()

    assert total(np.array([1.0, 2.0, 4.0])) == 7.0
    with pytest.raises(diffc.ArgumentError, match=r"x: expected f64\[3\], got float64 \(7,\)"):
        total(np.ones(7))


def test_int_enum_param_of_a_train_step_is_static():
    """A step whose param was declared with an IntEnum dim wrote past the param's end."""
    @diffc.function
    def norm(w: f64[Size.HIDDEN]) -> f64:
        return (w * w).sum()

    step = diffc.train_step(norm, ["w"], diffc.SGD(lr=0.5))
    w = np.array([1.0, 2.0, 3.0])
    assert step(w) == 14.0 and np.array_equal(w, [0.0, 0.0, 0.0])
    big = np.ones(8)
    with pytest.raises(diffc.ArgumentError, match=r"w: expected f64\[3\]"):
        step(big)
    assert np.array_equal(big, np.ones(8))


@pytest.mark.parametrize("dims", [(2 ** 60,), (2 ** 40, 2 ** 40), ("B", 2 ** 62), (2 ** 63,)],
                         ids=repr)
def test_a_type_larger_than_int64_bytes_is_a_shape_error(dims):
    with pytest.raises(diffc.ShapeError, match="2\\*\\*63 - 1 bytes"):
        f64[dims]


def test_the_largest_types_that_fit_are_accepted():
    assert f64[2 ** 60 - 1].shape == (2 ** 60 - 1,)  # 2**63 - 8 bytes
    assert f32[2 ** 61 - 1, "B"].shape == (2 ** 61 - 1, "B")


def test_an_intermediate_larger_than_int64_bytes_is_a_shape_error_at_the_users_line():
    with pytest.raises(diffc.ShapeError) as info:
        @diffc.function
        def outer(x: f64[2 ** 31, 1], y: f64[2 ** 31]) -> f64:
            return (x * y).sum()  # too_large_intermediate
    line = next(i for i, text in enumerate(open(__file__).read().splitlines(), 1)
                if text.endswith("# too_large_intermediate"))
    assert f"test_types.py:{line}:" in str(info.value)
    assert "f64[2147483648,2147483648]" in str(info.value)


@pytest.mark.parametrize("key", [(128, 784), ("f32", 3), (np.float32, 3), (f32[3], 4)], ids=repr)
def test_array_needs_a_dtype_first(key):
    with pytest.raises(SignatureError, match="dtype"):
        Array[key]


# ----------------------------------------------------------------------------- signatures

def test_signature_reads_params_in_order():
    def f(W: Array[f64, 10, 784], x: f64[B, 784], lr: f64, y: i32[B]) -> f64[B, 10]:
        return x
    sig = signature_of(f)
    assert sig.names == ("W", "x", "lr", "y")
    assert sig.params == (Param("W", f64[10, 784]), Param("x", f64[B, 784]),
                          Param("lr", ArrayType(f64, ())), Param("y", i32[B]))
    assert sig.result == f64[B, 10]
    assert sig.param("lr").type == ArrayType(f64, ())


def test_keyword_only_and_positional_only_params_are_accepted():
    def f(a: f32[2], /, b: f32[2], *, c: f32) -> f32[2]:
        return a
    assert signature_of(f).names == ("a", "b", "c")


def test_unknown_param_name_lists_the_parameters():
    def f(x: f32[2]) -> f32[2]:
        return x
    with pytest.raises(SignatureError, match="'w'.*'x'"):
        signature_of(f).param("w")


def test_string_annotations_are_evaluated():
    def f(x: "f32[B, 784]", w: "Array[f32, 784]", lr: "f64") -> "f32[B]":
        return x @ w * lr
    sig = signature_of(f)
    assert sig.params == (Param("x", f32[B, 784]), Param("w", f32[784]),
                          Param("lr", ArrayType(f64, ())))
    assert sig.result == f32[B]


def test_string_annotations_work_with_the_decorator():
    @diffc.function
    def f(x: "f64[2, 3]", c: "f64") -> "f64[3]":
        return (x * c).sum(0)
    assert str(f.signature) == "(x: f64[2,3], c: f64) -> f64[3]"
    x = np.arange(6.0).reshape(2, 3)
    (out,) = diffc.eval_program(f.program, x, 2.0)
    np.testing.assert_array_equal(out, (x * 2.0).sum(0))


def test_postponed_annotations_module():
    source = ("from __future__ import annotations\nfrom diffc import f64\n"
              "def f(x: f64[3, 2], c: f64) -> f64[2]:\n    return x.sum(0) * c\n")
    namespace = {}
    exec(compile(source, "<postponed>", "exec"), namespace)  # noqa: S102 - a module of our own
    f = namespace["f"]
    assert f.__annotations__ == {"x": "f64[3, 2]", "c": "f64", "return": "f64[2]"}
    assert str(diffc.function(f).signature) == "(x: f64[3,2], c: f64) -> f64[2]"


def test_string_annotation_naming_a_closure_variable():
    n = 4

    def f(x: "f64[n]") -> "f64[n]":
        return x * n
    assert signature_of(f).params == (Param("x", f64[4]),)


def _decorate(fn):
    return diffc.function(fn)


def _missing_annotation(x: f64[3], y) -> f64:
    return x.sum()


def _unsupported_int(x: f64[3], count: int) -> f64:
    return x.sum()


def _unsupported_ndarray(weights: np.ndarray) -> f64:
    return weights.sum()


def _unsupported_numpy_dtype(x: np.float64) -> f64:
    return x


def _star_args(x: f64[3], *rest: f64[3]) -> f64:
    return x.sum()


def _star_kwargs(x: f64[3], **extra: f64) -> f64:
    return x.sum()


def _default(x: f64[3], scale: f64 = 2.0) -> f64:
    return x.sum() * scale


def _bad_string(x: f64[3], q: "f65[3]") -> f64:  # noqa: F821 - the point of the test
    return x.sum()


@pytest.mark.parametrize("fn, param, found", [
    (_missing_annotation, "y", "no annotation"),
    (_unsupported_int, "count", "int"),
    (_unsupported_ndarray, "weights", "ndarray"),
    (_unsupported_numpy_dtype, "x", "float64"),
    (_star_args, "rest", "*args"),
    (_star_kwargs, "extra", "**kwargs"),
    (_default, "scale", "default"),
    (_bad_string, "q", "f65"),
], ids=lambda v: v.__name__ if callable(v) else None)
@pytest.mark.parametrize("read", [signature_of, _decorate], ids=["signature_of", "decorator"])
def test_bad_parameter_is_a_signature_error_naming_it(read, fn, param, found):
    with pytest.raises(SignatureError) as info:
        read(fn)
    message = str(info.value)
    assert repr(param) in message
    assert found in message


def _no_return_annotation(x: f64[3]):
    return x.sum()


def _unsupported_return(x: f64[3]) -> float:
    return x.sum()


@pytest.mark.parametrize("fn, found", [
    (_no_return_annotation, "no annotation"),
    (_unsupported_return, "float"),
], ids=["missing", "unsupported"])
@pytest.mark.parametrize("read", [signature_of, _decorate], ids=["signature_of", "decorator"])
def test_bad_return_annotation_is_a_signature_error(read, fn, found):
    with pytest.raises(SignatureError) as info:
        read(fn)
    assert "return" in str(info.value)
    assert found in str(info.value)


def test_signature_errors_are_diffc_errors():
    with pytest.raises(diffc.DiffcError):
        signature_of(_missing_annotation)
    with pytest.raises(diffc.DiffcError):
        f32[0]
