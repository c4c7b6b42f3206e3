"""`step.fit(..., comm=comm)`: synchronous data-parallel training over MPI processes.

Input: a `TrainStep` of a batched function, fit's arguments on every rank of an mpi4py
communicator, and whether each rank passes the whole data set or only its shard. Output: the
loss of every step (the global batch's mean loss, float64, the same on every rank); the params
trained in place, identical on every rank and equal up to rounding to a single-process `fit`
over the same data with the same batch size, seed and options.
How: step s's global batch is the rows single-process fit takes (the same seeded permutation on
every rank). Whole data: rank r takes the r-th of P contiguous parts of them (np.array_split's
cut); sharded: the rows that lie in its shard. Each rank runs the step's function compiled as
its weighted gradient (transforms/parallel.py) straight into one buffer, one all-reduce sums
the buffers, and every rank runs the optimizer's update compiled alone (optim.update_program):
runtime/distributed.py. Before any step every rank checks its arguments as fit does, then one
allgather compares the ranks' setups; a refused argument or a difference is the same
ArgumentError on every rank. Params and optimizer state are then broadcast from rank 0. During
the steps, a callback that raises on some rank makes every rank raise after it (an agreement
after each callback); any other failure of a rank ends the job (MPI_Abort), since the others
would otherwise wait forever in the all-reduce.
"""
from __future__ import annotations

import hashlib
import json
import time
import weakref

import numpy as np

from ..core.errors import ArgumentError
from ..core.types import Param, Signature
from ..passes import dce
from ..runtime.call import describe
from ..runtime.distributed import ParallelLoop, abort, agree, split
from ..transforms.optim import update_program
from ..transforms.parallel import weighted_grad_program
from .function import CompiledFunction

_PARTS = weakref.WeakKeyDictionary()  # train step -> its compiled (gradient, update) programs


def shard(X, comm):
    """This rank's part of X for `fit(..., comm=comm, sharded=True)`: X's rows cut into
    comm.Get_size() contiguous parts as np.array_split cuts them (a view, not a copy). The parts
    in rank order are X again, so a sharded fit trains like a single-process fit on X."""
    _check_comm(comm)
    if not isinstance(X, np.ndarray) or X.ndim < 1:
        raise ArgumentError(f"X: expected a numpy array with a leading sample axis, got "
                            f"{describe(X)}")
    lo, hi = split(len(X), comm.Get_size(), comm.Get_rank())
    return X[lo:hi]


def fit_distributed(step, comm, sharded, args, kwargs, options: dict, progress_bar) -> np.ndarray:
    """TrainStep.fit with `comm` (see there); `progress_bar` is fit's bar class, shown on rank
    0 only."""
    _check_comm(comm)
    setup = error = None
    try:
        setup = _Setup(step, comm, sharded, args, kwargs, options)
    except Exception as e:  # refused here: refused on every rank, after the gather
        error = e
    except BaseException as e:  # a Ctrl-C: the others would wait in the gather
        if comm.Get_size() > 1:
            abort(comm, e)
        raise
    owns = agree(comm, setup and setup.shared, setup and setup.own, error)  # or raises
    setup.place(owns, comm)
    total = options["epochs"] * setup.per_epoch
    bar = progress_bar(total, setup.batch) if options["progress"] and comm.Get_rank() == 0 \
        else None
    losses = np.zeros(total)
    with step._lock:
        try:
            for a in setup.params + step._state:  # every rank starts where rank 0 is
                comm.Bcast(a, root=0)
            _train(step, setup, comm, options, losses, bar)
        except _Agreed as e:  # every rank raises: the callback's own error where it raised
            raise e.error from None
        except BaseException as e:
            if comm.Get_size() > 1:
                abort(comm, e)
            raise
        finally:
            step.fit_losses = losses[:setup.done]
            if bar is not None:
                bar.close()
    return step.fit_losses


def _train(step, setup, comm, options: dict, losses: np.ndarray, bar) -> None:
    """The steps, the callback and the progress bar; epoch e visits the samples in fit's
    permutation drawn from (seed, e), the same on every rank."""
    callback, per_epoch, batch = options["callback"], setup.per_epoch, setup.batch
    every = setup.every or (None if callback is None else per_epoch)
    begin, shown = time.perf_counter(), 0.0
    for epoch in range(options["epochs"]):
        order = (np.random.default_rng([options["seed"], epoch]).permutation(setup.n)
                 if options["shuffle"] else np.arange(setup.n)).astype(np.int64)
        for s in range(per_epoch):
            rows = order[s * batch:(s + 1) * batch]
            losses[setup.done] = loss = setup.loop.step(setup.mine(rows), len(rows), step._lr)
            setup.done = done = setup.done + 1  # steps complete in order
            if bar is not None and (time.perf_counter() - begin - shown > 0.1 or
                                    done == len(losses)):
                shown = time.perf_counter() - begin
                bar.update(done, loss, shown)
            if every is not None and done % every == 0:
                _call_back(comm, callback, done - 1, epoch, loss)


class _Agreed(Exception):
    """A callback error every rank knows of: it propagates without ending the job."""

    def __init__(self, error: BaseException):
        self.error = error


def _call_back(comm, callback, step: int, epoch: int, loss: float) -> None:
    """Run the callback, then agree (one allgather) whether it raised on any rank."""
    try:
        callback(step, epoch, loss)
        error = None
    except Exception as e:
        error = e
    failed = comm.allgather(None if error is None else f"{type(error).__name__}: {error}")
    if any(f is not None for f in failed):
        where = "; ".join(f"rank {r}: {f}" for r, f in enumerate(failed) if f is not None)
        raise _Agreed(error or RuntimeError(f"fit(comm=...): the callback raised on another "
                                            f"rank ({where})"[:2000]))


class _Setup:
    """One rank's checked fit(comm=...) call: its arguments checked as single-process fit
    checks them, its step loop built and checked, what the ranks must agree on (`shared`) and
    what is its own (`own`: its number of samples and a hash of a sample of its data); then,
    from every rank's `own`, where its rows lie."""

    def __init__(self, step, comm, sharded, args, kwargs, options: dict):
        if not isinstance(sharded, bool | np.bool_):
            raise ArgumentError(f"sharded: expected True or False, got {describe(sharded)}")
        if step.function is None:
            raise ArgumentError(f"fit(comm=...): {step.name} was loaded from an export, which "
                                f"has no program to split into gradient and update; build "
                                f"the step with diffc.train_step")
        symbol = step.record.options["batch_symbol"]
        if symbol is None:
            raise ArgumentError(f"comm: {step.name} takes one sample per step (its data has no "
                                f"symbolic batch dim), so there is no batch to split across "
                                f"processes; declare the data with a leading batch dim (e.g. "
                                f"x: f32['B', 784]) to train data-parallel")
        _, values, n, _, _, self.every = step._fit_checks(args, kwargs, **options)
        self.sharded, self.rows, self.batch_size = bool(sharded), n, options["batch_size"]
        self.drop_last = options["drop_last"]
        names, data = step.signature.names, step.record.options["data"]
        param_indices = [names.index(p) for p in step.params]
        self.params = [values[i] for i in param_indices]
        grad, update = _parts(step, param_indices)
        batch = min(32 if self.batch_size is None else self.batch_size, n)
        self.loop = ParallelLoop(comm, grad, update, values, data, param_indices, step._state,
                                 symbol, batch if self.sharded else -(-batch // comm.Get_size()))
        self.loop.check()
        sample = np.linspace(0, n - 1, min(n, 64)).astype(np.int64)
        self.own = (n, _digest(*(values[i][sample].tobytes() for i in data)))
        self.shared = _shared(step, values, data, param_indices, self.sharded, options)
        if not self.sharded:
            self.shared["the number of samples (every rank passes the whole data set, "
                        "without sharded=True)"] = n
            self.shared["the data (a hash of 64 of its rows; shards need sharded=True)"] = \
                self.own[1]

    def place(self, owns: list, comm) -> None:
        """The global data set (from every rank's `own`), the batch and this rank's place.
        Shards that are all alike are refused (on every rank: every rank sees them)."""
        rows = [n for n, _ in owns]
        self.rank, self.size = comm.Get_rank(), comm.Get_size()
        if self.sharded and self.size > 1 and len({digest for _, digest in owns}) == 1:
            raise ArgumentError(f"sharded: True, but every rank passed the same data ({rows[0]} "
                                f"samples, the same rows): pass each rank its own shard "
                                f"(diffc.distributed.shard(X, comm)), or the whole data set "
                                f"without sharded=True")
        self.n = sum(rows) if self.sharded else self.rows
        self.offset = sum(rows[:self.rank]) if self.sharded else 0
        self.batch = min(32 if self.batch_size is None else self.batch_size, self.n)
        self.per_epoch = self.n // self.batch if self.drop_last else -(-self.n // self.batch)
        self.done = 0  # the steps completed

    def mine(self, rows: np.ndarray) -> np.ndarray:
        """This rank's part of a global batch (`rows` of the data set), as indices into its
        data: the rows of its shard, or the rank-th of `size` contiguous parts of them."""
        if self.sharded:
            return rows[(rows >= self.offset) & (rows < self.offset + self.rows)] - self.offset
        lo, hi = split(len(rows), self.size, self.rank)
        return rows[lo:hi]


def _shared(step, values: list, data: list[int], params: list[int], sharded: bool,
            options: dict) -> dict:
    """What every rank's fit(comm=...) call must have in common, by what an error calls it:
    the step (optimizer, signature, program, lr), fit's options and the fixed arguments'
    values."""
    fixed = [i for i in range(len(values)) if i not in data and i not in params]
    return {
        "the optimizer": step.record.options["optimizer"],
        "the step's signature": str(step.record.entry),
        "the step's program": _digest(step.ir, json.dumps(step.record.options, sort_keys=True,
                                                          default=str)),
        "lr": step.lr, "sharded": sharded,
        **{k: options[k] for k in ("batch_size", "epochs", "shuffle", "seed", "drop_last")},
        "the callback (given, callback_every)": (options["callback"] is not None,
                                                 options["callback_every"]),
        "the fixed arguments": _digest(*(np.ascontiguousarray(values[i]).tobytes()
                                         for i in fixed))}


def _parts(step, params: list[int]) -> tuple:
    """The step's weighted gradient and update programs, compiled (once per step). The
    gradient takes the step's arguments and the weight; the update the params, a gradient
    (`d<name>`) per param, then lr and the state, as the step's entry does."""
    parts = _PARTS.get(step)
    if parts is None:
        f, sig = step.function, step.function.signature
        types = [sig.params[i].type for i in params]
        grad = weighted_grad_program(f.program, params, types[0].dtype)
        grad_sig = Signature(sig.params + (Param("weight", grad.inputs[-1].type),), sig.result)
        grads = tuple(Param(f"d{sig.params[i].name}", t) for i, t in zip(params, types,
                                                                            strict=True))
        update_sig = Signature(tuple(sig.params[i] for i in params) + grads +
                               step.record.entry.params[len(sig.params):], sig.result)
        parts = _PARTS[step] = (
            CompiledFunction.from_program(dce(grad), grad_sig, f"parallel_grad_{f.name}").native,
            CompiledFunction.from_program(update_program(types, step.optimizer), update_sig,
                                          f"parallel_update_{f.name}").native)
    return parts


def _digest(*parts) -> str:
    """A short hash of strings and bytes (to compare setups across ranks)."""
    h = hashlib.sha256()
    for p in parts:
        h.update(p.encode() if isinstance(p, str) else p)
        h.update(b"\0")
    return h.hexdigest()[:12]


def _check_comm(comm) -> None:
    """comm must be an mpi4py intra-communicator (mpi4py is imported only now)."""
    try:
        from mpi4py import MPI
    except ImportError:
        raise ArgumentError(f"comm: training over MPI needs mpi4py (pip install "
                            f"'diffc[mpi]'), got {describe(comm)}") from None
    if not isinstance(comm, MPI.Intracomm) or comm == MPI.COMM_NULL:
        raise ArgumentError(f"comm: expected an mpi4py communicator such as MPI.COMM_WORLD, "
                            f"got {describe(comm)}")
