"""The test suite's shared models and helpers: the README's network in f64 and f32, the
mini-batch network of the benchmarks, He initialization, compiling a hand-built program
through the public API, tracing a body with given types, the worker pool's parallel-for,
running a function on several Python threads at once, and finding the lines an error must name."""
import ctypes
import functools
import itertools
import re
import threading
from pathlib import Path

import numpy as np

import diffc
from diffc import Array, f32, f64, i32, nn


def _mlp(dt):
    def mlp_loss(W1: Array[dt, 128, 784], b1: Array[dt, 128], W2: Array[dt, 10, 128],
                 b2: Array[dt, 10], x: Array[dt, 784], y: Array[dt, 10]) -> dt:
        h = nn.relu(nn.dense(W1, x, b1))
        return nn.cross_entropy(nn.softmax(nn.dense(W2, h, b2)), y)
    return diffc.function(mlp_loss, name="mlp_loss" if dt is f64 else "mlp_loss32")


def _batch_net(dt):
    def batch_loss(W1: dt[128, 784], b1: dt[128], W2: dt[64, 128], b2: dt[64], W3: dt[10, 64],
                   b3: dt[10], X: dt["B", 784], labels: i32["B"]) -> dt:
        h1 = nn.relu(nn.dense(W1, X, b1))
        h2 = nn.relu(nn.dense(W2, h1, b2))
        return nn.softmax_cross_entropy(nn.dense(W3, h2, b3), labels)
    return diffc.function(batch_loss, name=f"batch_loss_{dt}")


# the README's per-sample network (784 -> 128 -> 10, relu, softmax, cross-entropy)
mlp_loss, mlp_loss32 = _mlp(f64), _mlp(f32)
MLP = {f64: mlp_loss, f32: mlp_loss32}
# the mini-batch network (784 -> 128 -> 64 -> 10, integer labels)
BATCH_NETS = {dt: _batch_net(dt) for dt in (f32, f64)}


def init(rng, sizes, np_dtype):
    """He-scaled weights and small random biases for layers of the given sizes."""
    params = []
    for n_in, n_out in itertools.pairwise(sizes):
        params.append((rng.standard_normal((n_out, n_in)) * np.sqrt(2 / n_in)).astype(np_dtype))
        params.append((rng.standard_normal(n_out) * 0.1).astype(np_dtype))
    return params


def compile_program(program, signature, name, target=None):
    """A hand-built program compiled (`diffc.CompiledFunction.from_program`); calling it gives
    the list of its outputs, however many there are."""
    f = diffc.CompiledFunction.from_program(program, signature, name, target)

    def run(*args):
        out = f(*args)
        return list(out) if len(program.outputs) > 1 else [out]
    run.function = f
    return run


def traced(body, types, result, name):
    """body traced as a diffc function with the given parameter types and result type."""
    names = body.__code__.co_varnames[:body.__code__.co_argcount]
    body.__annotations__ = dict(zip(names, types, strict=True), **{"return": result})
    return diffc.function(body, name=name)


def small_batch_net(dt, hidden=16):
    def small_loss(W1: dt[hidden, 12], b1: dt[hidden], W2: dt[5, hidden], b2: dt[5], gain: dt,
                   X: dt["B", 12], labels: i32["B"]) -> dt:
        h = nn.tanh(nn.dense(W1, X, b1) * gain)
        return nn.softmax_cross_entropy(nn.dense(W2, h, b2), labels)
    return diffc.function(small_loss, name=f"small_loss_{dt}_{hidden}")


# a small batched network with a fixed scalar argument (`gain`): the multi-process tests' net
SMALL_NETS = {dt: small_batch_net(dt) for dt in (f32, f64)}
SMALL_PARAMS = ["W1", "b1", "W2", "b2"]


def pool_dispatcher():
    """The worker pool's parallel-for, `void (*)(task, ctx, parts, work)`, as a ctypes function:
    the address the parallel hook of a compiled program holds."""
    @diffc.function(name="hook_owner")
    def twice(x: f64[4]) -> f64[4]:
        return x * 2.0

    native = twice.compile().native
    hook = native.addresses[native.native.abi.parallel_hook]
    return ctypes.CFUNCTYPE(None, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                            ctypes.c_int64)(ctypes.c_void_p.from_address(hook).value)


def run_in_threads(work, count: int) -> None:
    """work(i) on `count` Python threads at once (started together); raises the first
    exception any of them raised, which a thread would otherwise lose."""
    start, errors = threading.Barrier(count), []

    def run(i):
        try:
            start.wait()
            work(i)
        except BaseException as e:  # noqa: BLE001 - re-raised in the calling thread
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]


@functools.cache
def _source_lines(path: str) -> list[str]:
    return Path(path).read_text().splitlines()


def tagged_line(path: str, tag: str) -> int:
    """The line of file `path` that ends with the comment `# <tag>` (exactly one does)."""
    hits = [i for i, text in enumerate(_source_lines(path), 1) if text.endswith(f"# {tag}")]
    assert len(hits) == 1, f"tag {tag!r} found {len(hits)} times in {path}"
    return hits[0]


def assert_names_line(error: Exception, path: str, tags, *expected: str) -> None:
    """error is a DiffcError naming file `path` at the line of one of `tags` (the user's line),
    and its message holds every text of `expected`."""
    message = str(error)
    assert isinstance(error, diffc.DiffcError), repr(error)
    lines = [tagged_line(path, t) for t in tags]
    assert any(re.search(rf"{re.escape(str(path))}:{n}(?!\d)", message) for n in lines), (
        f"no {path}:{lines} in: {message}")
    for text in expected:
        assert text in message, f"{text!r} not in: {message}"
