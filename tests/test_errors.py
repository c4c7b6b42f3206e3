"""Errors about user code: the right type, naming the user's file:line, expected and found."""
import numpy as np
import pytest
from models import assert_names_line

import diffc
from diffc import DTypeError, ShapeError, SignatureError, TraceError, f32, f64, i32, nn

B, N = "B", "N"  # symbolic dims


def check(error: Exception, tags: tuple[str, ...], *expected: str) -> None:
    """error is a DiffcError naming this file at the line of one of tags, and all of expected."""
    assert_names_line(error, __file__, tags, *expected)


WEIGHTS = np.ones((2, 3))
ROW = np.ones(3)


# ----------------------------------------------------------------------------- shape mistakes

def add_shapes(x: f64[2, 3], y: f64[2]) -> f64[2, 3]:
    return x + y  # add_shapes


def symbolic_shapes(x: f64[B, 3], y: f64[N, 3]) -> f64[B, 3]:
    return x * y  # symbolic_shapes


def matmul_inner(a: f64[2, 3], b: f64[4, 5]) -> f64[2, 5]:
    return a @ b  # matmul_inner


def matvec_inner(a: f64[2, 3], v: f64[2]) -> f64[2]:
    return a @ v  # matvec_inner


def dense_bias(W: f64[2, 3], x: f64[3], b: f64[3]) -> f64[2]:
    h = nn.relu(x)
    return nn.dense(W, h, b)  # dense_bias


def dense_input(W: f64[2, 3], x: f64[B, 4]) -> f64[B, 2]:
    return nn.dense(W, x)  # dense_input


def sum_axis(x: f64[2, 3]) -> f64:
    return x.sum(2)  # sum_axis


def returns_shape(x: f64[2, 3]) -> f64[3]:
    return x.sum(1)  # returns_shape


# ----------------------------------------------------------------------------- dtype mistakes

def mixed_floats(x: f32[3], y: f64[3]) -> f32[3]:
    return x + y  # mixed_floats


def integer_arithmetic(k: i32[3]) -> f64[3]:
    return k * 2  # integer_arithmetic


def mixed_matmul(a: f32[2, 3], v: f64[3]) -> f32[2]:
    return a @ v  # mixed_matmul


def returns_dtype(x: f32[3]) -> f64[3]:
    return x * 2.0  # returns_dtype


# ----------------------------------------------------------------------------- untraceable code

def if_value(x: f64[3]) -> f64[3]:
    if x.sum() > 0:  # if_value
        return x
    return -x


def bool_value(x: f64[3]) -> f64[3]:
    flag = bool(x)  # bool_value
    return x * flag


def len_value(x: f64[B]) -> f64:
    return x.sum() / len(x)  # len_value


def for_value(x: f64[B]) -> f64:
    total = 0.0
    for v in x:  # for_value
        total = total + v
    return total


def float_value(x: f64[3]) -> f64:
    return float(x.sum())  # float_value


def index_value(x: f64[3]) -> f64:
    return x[3]  # index_value


def unknown_attribute(x: f64[3]) -> f64[3]:
    return x.cumsum()  # unknown_attribute


def traced_exponent(x: f64[3]) -> f64[3]:
    return (-2) ** x  # traced_exponent


def traced_power(x: f64[3], y: f64) -> f64[3]:
    return x ** y  # traced_power


def numpy_ufunc(x: f64[3]) -> f64[3]:
    return np.arctan(x)  # numpy_ufunc


def numpy_function(x: f64[3]) -> f64[3]:
    return np.sort(x)  # numpy_function


def floor_division(x: f64[3]) -> f64[3]:
    return x // 2.0  # floor_division


def modulo(x: f64[3]) -> f64[3]:
    return 2.0 % x  # modulo


def rounded(x: f64[3]) -> f64:
    return round(x.sum(), 2)  # rounded


def bitwise(x: f64[3]) -> f64[3]:
    return x & 1  # bitwise


def shifted(x: f64[3]) -> f64[3]:
    return x << 1  # shifted


def captured_array(x: f64[2, 3]) -> f64[2, 3]:
    return x + WEIGHTS  # captured_array


def captured_row(x: f64[2, 3]) -> f64[2, 3]:
    return x * ROW  # captured_row


CASES = [
    (add_shapes, ShapeError, ["f64[2,3]", "f64[2]"]),
    (symbolic_shapes, ShapeError, ["f64[B,3]", "f64[N,3]"]),
    (matmul_inner, ShapeError, ["f64[2,3]", "f64[4,5]"]),
    (matvec_inner, ShapeError, ["f64[2,3]", "f64[2]"]),
    (dense_bias, ShapeError, ["(2,)", "f64[3]"]),
    (dense_input, ShapeError, ["f64[2,3]", "f64[B,4]"]),
    (sum_axis, ShapeError, ["axis 2", "f64[2,3]"]),
    (returns_shape, ShapeError, ["f64[2]", "f64[3]"]),
    (mixed_floats, DTypeError, ["f32", "f64"]),
    (integer_arithmetic, DTypeError, ["floating", "i32[3]"]),
    (mixed_matmul, DTypeError, ["f32", "f64"]),
    (returns_dtype, DTypeError, ["f32[3]", "f64[3]"]),
    (if_value, TraceError, ["comparison", "control flow"]),
    (bool_value, TraceError, ["truth testing", "control flow"]),
    (len_value, TraceError, ["len()", "f64[B]", "x.shape[0]"]),
    (for_value, TraceError, ["iteration", "f64[B]", "static number of steps"]),
    (float_value, TraceError, ["float()", "control flow"]),
    (index_value, ShapeError, ["index 3", "f64[3]"]),
    (unknown_attribute, TraceError, ["'cumsum'", ".sum"]),
    (traced_exponent, TraceError, ["positive constant base", "-2"]),
    (traced_power, TraceError, ["constant", "f64 array"]),
    (numpy_ufunc, TraceError, ["arctan", "diffc.nn"]),
    (numpy_function, TraceError, ["sort", "diffc.nn"]),
    (floor_division, TraceError, ["'//'", "not supported", "diffc.nn"]),
    (modulo, TraceError, ["'%'", "not supported"]),
    (rounded, TraceError, ["round()", "not supported"]),
    (bitwise, DTypeError, ["'&'", "combines masks", "got 1"]),
    (shifted, TraceError, ["shift", "not supported", "on masks"]),
    (captured_array, TraceError, ["numpy array (2, 3)", "parameter"]),
    (captured_row, TraceError, ["numpy array (3,)", "parameter"]),
]


@pytest.mark.parametrize("body, error, expected", CASES,
                         ids=lambda v: v.__name__ if callable(v) else None)
def test_mistake_in_traced_code(body, error, expected):
    with pytest.raises(error) as info:
        diffc.function(body)
    check(info.value, (body.__name__,), *expected)


def test_returning_a_numpy_array_is_a_trace_error():
    with pytest.raises(TraceError) as info:
        @diffc.function
        def f(x: f64[3]) -> f64[3]:  # returns_array_def
            return np.zeros(3)  # returns_array
    check(info.value, ("returns_array_def", "returns_array"), "f64[3]", "numpy array")


def test_returning_none_is_a_trace_error():
    with pytest.raises(TraceError) as info:
        @diffc.function
        def f(x: f64[3]) -> f64:  # returns_none_def
            x.sum()
            return None  # returns_none
    check(info.value, ("returns_none_def", "returns_none"), "f64", "None")


def test_inlined_call_with_wrong_argument():
    @diffc.function
    def inner(v: f64[N], c: f64) -> f64[N]:
        return v * c

    with pytest.raises(ShapeError) as info:
        @diffc.function
        def outer(m: f64[2, 3], c: f64) -> f64[2, 3]:
            return inner(m, c)  # inlined_call
    check(info.value, ("inlined_call",), "'v'", "f64[N]", "f64[2,3]")


# ----------------------------------------------------------------------------- eager mistakes

def test_eager_nn_mistakes_name_the_calling_line():
    W, x = np.ones((2, 3)), np.ones(3)
    with pytest.raises(ShapeError) as info:
        nn.dense(W, x, np.ones(3))  # eager_dense
    check(info.value, ("eager_dense",), "(2,)", "f64[3]")
    with pytest.raises(ShapeError) as info:
        nn.cross_entropy(nn.softmax(x), 7)  # eager_label
    check(info.value, ("eager_label",), "7", "3 classes")
    with pytest.raises(DTypeError) as info:
        nn.relu(np.ones(3, np.int32))  # eager_dtype
    check(info.value, ("eager_dtype",), "floating", "i32[3]")


# ----------------------------------------------------------------------------- signatures

def sig_missing(x: f64[3], y) -> f64:  # sig_missing
    return x.sum()


def sig_unsupported(x: f64[3], n: int) -> f64:  # sig_unsupported
    return x.sum()


def sig_star_args(x: f64[3], *xs: f64[3]) -> f64:  # sig_star_args
    return x.sum()


def sig_star_kwargs(x: f64[3], **kw: f64[3]) -> f64:  # sig_star_kwargs
    return x.sum()


def sig_default(x: f64[3], c: f64 = 1.0) -> f64:  # sig_default
    return x.sum() * c


def sig_no_return(x: f64[3]):  # sig_no_return
    return x.sum()


def sig_bad_return(x: f64[3]) -> np.ndarray:  # sig_bad_return
    return x.sum()


@pytest.mark.parametrize("body, expected", [
    (sig_missing, ["'y'", "no annotation", "f64"]),
    (sig_unsupported, ["'n'", "int", "f64"]),
    (sig_star_args, ["'xs'", "*args"]),
    (sig_star_kwargs, ["'kw'", "**kwargs"]),
    (sig_default, ["'c'", "default"]),
    (sig_no_return, ["return", "no annotation", "f64"]),
    (sig_bad_return, ["return", "ndarray", "f64"]),
], ids=lambda v: v.__name__ if callable(v) else None)
def test_bad_signature(body, expected):
    with pytest.raises(SignatureError) as info:
        diffc.function(body)
    check(info.value, (body.__name__,), *expected)


# ----------------------------------------------------------------------------- hierarchy

@pytest.mark.parametrize("error", [diffc.SignatureError, diffc.ShapeError, diffc.DTypeError,
                                   diffc.TraceError, diffc.ArgumentError],
                         ids=lambda v: v.__name__)
def test_every_error_is_a_diffc_error(error):
    assert issubclass(error, diffc.DiffcError)
    assert error is not diffc.DiffcError
