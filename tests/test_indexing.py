"""Indexing traced arrays (core/indexing.py) and their sizes (core/sizes.py): numpy's basic
indexing against numpy, the call-time checks of index arrays and of constant indices into
symbolic dims (before native code runs, also in fit), sizes as numbers, and the refusals, each
at the user's line, naming the alternative."""
import subprocess
import sys

import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from models import assert_names_line, compile_program, traced

import diffc
from diffc import ArgumentError, DTypeError, ShapeError, SignatureError, TraceError, nn
from diffc.compiler.pipeline import optimize
from diffc.core.ir import eval_program
from diffc.core.types import Param, Signature, f32, f64, i32, i64

B = "B"


# ----------------------------------------------------------------------------- basic indexing

_BOUNDS = st.one_of(st.none(), st.integers(-6, 6))
_ENTRY = st.one_of(st.integers(-4, 3), st.none(), st.just(Ellipsis),
                   st.builds(slice, _BOUNDS, _BOUNDS, st.sampled_from([None, 1, 2, 3, -1, -2])))


@settings(max_examples=100, deadline=None, derandomize=True, database=None)
@given(index=st.lists(_ENTRY, max_size=4))
def test_basic_indexing_is_numpys(index):
    """Random basic indices of a static f64[4,5,3]: numpy's result (as traced and evaluated),
    or the error numpy's would be (an empty result: a ShapeError, dims are >= 1)."""
    x = np.arange(60.0).reshape(4, 5, 3)
    index = tuple(index)
    try:
        want = x[index]
    except IndexError:
        want = None
    if want is None or want.size == 0:
        with pytest.raises(ShapeError):
            traced(lambda a: a[index], [f64[4, 5, 3]], f64[()], "index")
        return
    f = traced(lambda a: a[index], [f64[4, 5, 3]], f64[want.shape], "index")
    (got,) = eval_program(f.program, x)
    np.testing.assert_array_equal(got, want)


@settings(max_examples=40, deadline=None, derandomize=True, database=None)
@given(index=st.lists(_ENTRY, min_size=1, max_size=4))
def test_basic_indexing_compiled_in_a_fused_kernel(index):
    x = np.arange(60.0).reshape(4, 5, 3)
    index = tuple(index)
    try:
        want = x[index] * 2.0
    except IndexError:
        want = np.zeros(0)
    assume(want.size > 0 and want.ndim > 0)
    f = traced(lambda a: a[index] * 2.0, [f64[4, 5, 3]], f64[want.shape], "fused_index")
    np.testing.assert_array_equal(f(x), want)


# ----------------------------------------------------------------------------- call-time checks

@diffc.function
def embed(E: f64[5, 2], tokens: i32[B, 3]) -> f64:
    return nn.sum(nn.take(E, tokens[:, 1:]) ** 2)


@diffc.function
def two_index_sources(E: f64[5, 2], a: i64[2], b: i64[3]) -> f64:
    return nn.sum(nn.take(E, nn.concatenate([a, b[::-1]])))


@diffc.function
def row_of_batch(x: f64[B, 3]) -> f64[3]:
    return x[2] - x[-3]


def test_indices_are_checked_before_the_call():
    """Index inputs are checked whole, through the slices, reshapes and concatenations that
    move them (also the entries a slice leaves out), and inside fused kernels."""
    E = np.ones((5, 2))
    tokens = np.array([[0, 1, 4], [0, 2, 3]], np.int32)
    assert embed(E, tokens) == pytest.approx(8.0)
    assert [e.prim.name for e in optimize(embed.program).eqns] == ["slice", "fused",
                                                                    "reduce_sum"]
    for bad in ((1, 2, 5), (0, 0, 7)):
        tokens[bad[:2]] = bad[2]
        with pytest.raises(ArgumentError, match=r"^tokens: labels must lie in \[0, 5\)"):
            embed(E, tokens)
        tokens[bad[:2]] = 0
    with pytest.raises(ArgumentError, match=r"^b: labels must lie in \[0, 5\)"):
        two_index_sources(E, np.array([0, 4]), np.array([1, -1, 2]))
    with pytest.raises(ArgumentError, match=r"^a: labels must lie in \[0, 5\)"):
        two_index_sources(E, np.array([5, 4]), np.array([1, 1, 0]))


def test_constant_indices_into_a_symbolic_dim_are_checked_at_call_time():
    x = np.arange(9.0).reshape(3, 3)
    np.testing.assert_array_equal(row_of_batch(x), x[2] - x[0])
    with pytest.raises(ArgumentError, match=r"^x: expected B > 2 \(the constant label or "
                                            r"index 2 indexes an axis of size B\), got B=2"):
        row_of_batch(x[:2].copy())


def test_fit_refuses_a_constant_index_into_the_batch_dim():
    step = diffc.train_step(traced(lambda w, x: nn.sum(x[1] * w), [f64[3], f64[B, 3]], f64,
                                   "batch_row"), ["w"])
    with pytest.raises(SignatureError, match="constant label or index indexes the batch dim B"):
        step.fit(np.ones(3), np.ones((4, 3)))


OUT_OF_RANGE = """
import numpy as np
import diffc
from diffc import f64, i32, nn

def loss(E: f64[50, 4], W: f64[3, 4], tokens: i32["B", 6], y: i32["B"]) -> f64:
    return nn.softmax_cross_entropy(nn.dense(W, nn.mean(nn.take(E, tokens), axis=1)), y)

step = diffc.train_step(diffc.function(loss), ["E", "W"], optimizer=diffc.SGD(lr=0.1))
E, W = np.ones((50, 4)), np.ones((3, 4))
tokens, y = np.zeros((64, 6), np.int32), np.zeros(64, np.int32)
tokens[40, 3] = 10 ** 9
for call in (lambda: step(E, W, tokens[32:48], y[32:48]),
             lambda: step.fit(E, W, tokens, y, batch_size=8)):
    try:
        call()
    except diffc.ArgumentError as e:
        assert str(e).startswith("tokens: labels must lie in [0, 50)"), e
    else:
        raise AssertionError("no ArgumentError")
assert (E == 1).all() and (W == 1).all() and step.steps == 0
print("ok")
"""


def test_out_of_range_indices_write_nothing_in_a_subprocess():
    """A scatter-add at index 1e9 (the gradient of take) would write far outside E: the call
    and fit are refused before native code runs, and nothing is written."""
    proc = subprocess.run([sys.executable, "-c", OUT_OF_RANGE], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "ok", proc.stderr

# ----------------------------------------------------------------------------- sizes

def test_shape_gives_ints_and_sizes():
    seen = []

    def body(x):
        seen.append((x.shape, x.shape == (B, 3), x.shape[0] == x.shape[0], len(x.T), x.ndim))
        return x

    traced(body, [f32[B, 3]], f32[B, 3], "shapes")
    ((shape, same, reflexive, length, ndim),) = seen
    assert shape[1] == 3 and type(shape[1]) is int and str(shape[0]) == "B"
    assert same and reflexive and length == 3 and ndim == 2


def test_sizes_take_the_dtype_of_the_arrays_they_meet():
    def body(x):
        return nn.sum(x) / x.shape[0] + (x.shape[0] - 1) * x[0, 0]

    f = traced(body, [f32[B, 2]], f32, "sizes_f32")
    assert {e.params["dtype"] for e in f.program.eqns if e.prim.name == "dim_size"} == {f32}
    x = np.arange(8, dtype=np.float32).reshape(4, 2)
    assert f(x) == pytest.approx(x.sum() / 4 + 3 * x[0, 0], rel=1e-6)
    size_only = traced(lambda x: (x.shape[0] * 2.0) ** 0.5, [f32[B]], f32, "size_result")
    assert size_only(np.ones(8, np.float32)) == pytest.approx(4.0)

# ----------------------------------------------------------------------------- refusals

def slice_of_symbolic(x: f64[B]) -> f64:
    return nn.sum(x[1:])  # slice_of_symbolic


def index_out_of_range(x: f64[4, 3]) -> f64[3]:
    return x[-5]  # index_out_of_range


def empty_slice(x: f64[4]) -> f64:
    return nn.sum(x[3:1])  # empty_slice


def too_many_indices(x: f64[4]) -> f64:
    return x[0, 0]  # too_many_indices


def assignment(x: f64[3]) -> f64[3]:
    x[0] = 1.0  # assignment
    return x


def builtin_max(x: f64[3]) -> f64[3]:
    return max(0, x)  # builtin_max


def if_on_a_size(x: f64[B]) -> f64:
    if x.shape[0] > 2:  # if_on_a_size
        return nn.sum(x)
    return x[0]


def range_of_a_size(x: f64[B]) -> f64:
    return sum(x[i] for i in range(x.shape[0]))  # range_of_a_size


def list_index(x: f64[4]) -> f64[2]:
    return x[[0, 2]]  # list_index


def traced_slice_bound(x: f64[4], k: i32) -> f64:
    return nn.sum(x[:k])  # traced_slice_bound


def float_index_array(x: f64[4], k: f64[2]) -> f64[2]:
    return x[k]  # float_index_array


def two_arrays(x: f64[4, 3], k: i32[2]) -> f64[2]:
    return x[k, k]  # two_arrays


def reshape_unprovable(x: f64[B, 4]) -> f64:
    return nn.sum(x.reshape("N", 4))  # reshape_unprovable


def reshape_product(x: f64[B, 4]) -> f64:
    return nn.sum(x.reshape(-1))  # reshape_product


def concatenate_symbolic(x: f64[B, 2]) -> f64:
    return nn.sum(nn.concatenate([x, x]))  # concatenate_symbolic


def squeeze_wide(x: f64[3, 2]) -> f64:
    return nn.sum(nn.squeeze(x, 1))  # squeeze_wide


def broadcast_wrong(x: f64[3]) -> f64:
    return nn.sum(nn.broadcast_to(x, (3, 2)))  # broadcast_wrong


def transpose_repeated(x: f64[3, 2]) -> f64:
    return nn.sum(x.transpose(0, 0))  # transpose_repeated


def concatenate_dtypes(x: f64[3], y: f32[3]) -> f64:
    return nn.sum(nn.concatenate([x, y]))  # concatenate_dtypes


REFUSALS = [
    (slice_of_symbolic, ShapeError, ["x[1:]", "symbolic axis B", "take(x, idx, axis)"]),
    (index_out_of_range, ShapeError, ["index -5", "f64[4,3]"]),
    (empty_slice, ShapeError, ["x[3:1]", "dims >= 1"]),
    (too_many_indices, ShapeError, ["too many indices", "f64[4]"]),
    (assignment, TraceError, ["assignment", "nn.where"]),
    (builtin_max, TraceError, ["nn.relu", "nn.maximum"]),
    (if_on_a_size, TraceError, ["comparison", "size B", "nn.sum(x) / x.shape[0]"]),
    (range_of_a_size, TraceError, ["size B", "Python int"]),
    (list_index, TraceError, ["x[[0, 2]]", "i32/i64 parameter"]),
    (traced_slice_bound, TraceError, ["slice bounds", "i32 array"]),
    (float_index_array, DTypeError, ["indices", "f64[2]"]),
    (two_arrays, TraceError, ["one index array", "take(x, idx, axis)"]),
    (reshape_unprovable, ShapeError, ["f64[B,4]", "(N, 4)", "provably equal"]),
    (reshape_product, ShapeError, ["-1 would be B*4"]),
    (concatenate_symbolic, ShapeError, ["B + B", "static axis"]),
    (squeeze_wide, ShapeError, ["axis 1", "f64[3,2]"]),
    (broadcast_wrong, ShapeError, ["f64[3]", "(3, 2)"]),
    (transpose_repeated, ShapeError, ["repeated axis"]),
    (concatenate_dtypes, DTypeError, ["f64[3]", "f32[3]"]),
]


@pytest.mark.parametrize("body, error, expected", REFUSALS,
                         ids=[r[0].__name__ for r in REFUSALS])
def test_refusal_names_the_line_and_the_alternative(body, error, expected):
    with pytest.raises(error) as info:
        diffc.function(body)
    assert_names_line(info.value, __file__, (body.__name__,), *expected)


def test_hand_built_gather_is_checked_like_a_call():
    """compile_program: a program made by hand gets the same index checks as a traced one."""
    f = traced(lambda E, i: nn.take(E, i, axis=1), [f64[2, 4], i64[3]], f64[2, 3], "hand")
    run = compile_program(f.program, Signature((Param("E", f64[2, 4]), Param("i", i64[3])),
                                               f64[2, 3]), "hand_gather")
    E = np.arange(8.0).reshape(2, 4)
    np.testing.assert_array_equal(run(E, np.array([3, 0, 3]))[0], E[:, [3, 0, 3]])
    with pytest.raises(ArgumentError, match=r"^i: labels must lie in \[0, 4\)"):
        run(E, np.array([0, 4, 1]))


def test_indices_computed_by_argmax_must_fit_the_axis_they_index():
    """argmax's indices lie in [0, size of its axis): they may index an axis at least that
    long (the same dim, or a static size no smaller); otherwise no call-time check could catch
    an index out of range, so compiling refuses (before, it compiled and read out of bounds)."""
    @diffc.function
    def fits(z: f64["B", 5], table: f64[5, 3]) -> f64:
        return nn.sum(nn.take(table, nn.argmax(z, axis=1)))

    @diffc.function
    def too_long(z: f64["B", 7], table: f64[5, 3]) -> f64:
        return nn.sum(nn.take(table, nn.argmax(z, axis=1)))

    @diffc.function
    def other_symbol(z: f64["B", "K"], table: f64["C", 3]) -> f64:
        return nn.sum(nn.take(table, nn.argmax(z, axis=1)))

    z = np.random.default_rng(0).standard_normal((4, 5))
    table = np.arange(15.0).reshape(5, 3)
    assert fits(z, table) == table[z.argmax(1)].sum()
    for f, bound in ((too_long, r"\[0, 7\)"), (other_symbol, r"\[0, K\)")):
        with pytest.raises(diffc.ShapeError, match=rf"gather indexes an axis of size \w+ with "
                                                   rf"indices computed by argmax, which lie in "
                                                   rf"{bound}"):
            f.compile()
