"""Train the 784 -> 128 -> 64 -> 10 MLP data-parallel over MPI processes: `fit(..., comm=comm)`.

Every process runs this same script. Each step's batch of `--batch-size` images is split across
the processes, each computes the gradient of its part with compiled code, one all-reduce sums
them and every process applies the same update: the params stay identical on every process and
equal, up to rounding, to training in one process. Rank 0 prints.

    python examples/distributed_mlp.py                         # one process
    mpiexec -n 2 python examples/distributed_mlp.py            # two: the same losses, accuracy
    mpiexec -n 2 python examples/distributed_mlp.py --shards   # each rank keeps only its shard
    mpiexec -n 2 python examples/distributed_mlp.py --compare  # rank 0 also trains alone
    mpiexec -n 2 python examples/distributed_mlp.py path/to/mnist   # MNIST (IDX files)

Without a folder it trains on the 8x8 digits bundled with diffc (64 -> 128 -> 64 -> 10). Each
process runs its native code on its share of this machine's cores (diffc.set_num_threads), so
that P processes on one machine do not fight over the cores. Needs the `mpi` extra (mpi4py and
MPICH: pip install -e ".[mpi]"), whose mpiexec is in the virtualenv.
"""
import argparse
import hashlib
import os
import sys
import time

import numpy as np
from mnist_mlp import NAMES, he_params, load_data, make_functions  # the same network and data

import diffc


def train(args, comm, data):
    """Train with fit(comm=comm) (comm None: in this process alone); returns the params and,
    per epoch, (mean loss, test accuracy)."""
    x_train, y_train, x_test, y_test = data
    mlp_loss, mlp_logits = make_functions(x_train.shape[1])
    # seeded: the same on every rank, though fit(comm=...) starts every rank from rank 0's anyway
    params = he_params(np.random.default_rng(0), [x_train.shape[1], 128, 64, 10])
    step = diffc.train_step(mlp_loss, NAMES, diffc.SGD(args.lr, momentum=args.momentum))
    sharded = comm is not None and args.shards
    x, y = [diffc.distributed.shard(a, comm) for a in (x_train, y_train)] if sharded else \
        (x_train, y_train)
    history = []
    for epoch in range(args.epochs):  # one fit call per epoch, a new shuffle each time
        options = dict(comm=comm, sharded=sharded) if comm is not None else {}
        losses = step.fit(*params, x, y, batch_size=args.batch_size, seed=epoch, **options)
        accuracy = np.mean(mlp_logits(*params, x_test).argmax(axis=1) == y_test)
        history.append((losses.mean(), accuracy))
        if comm is not None and comm.Get_rank() == 0:
            print(f"epoch {epoch + 1:3d}  loss {losses.mean():.4f}  test accuracy "
                  f"{accuracy:.2%}", flush=True)
    return params, history


def parse_args():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mnist", nargs="?", help="folder with the MNIST IDX files "
                        "(default: the bundled 8x8 digits)")
    parser.add_argument("--epochs", type=int, default=10)
    parser.add_argument("--lr", type=float, default=0.02, help="SGD learning rate")
    parser.add_argument("--momentum", type=float, default=0.9, help="SGD momentum")
    parser.add_argument("--batch-size", type=int, default=64, help="the global batch")
    parser.add_argument("--shards", action="store_true",
                        help="each rank passes only its shard of the training data")
    parser.add_argument("--compare", action="store_true",
                        help="rank 0 also trains in one process and prints the differences")
    return parser.parse_args()


def main():
    args = parse_args()
    try:
        from mpi4py import MPI
    except ImportError:
        sys.exit('This example needs mpi4py and an MPI: pip install -e ".[mpi]"')
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    local = comm.Split_type(MPI.COMM_TYPE_SHARED).Get_size()  # processes on this machine
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    diffc.set_num_threads(max(1, cores // local))
    *data, name = load_data(args.mnist)
    if rank == 0:
        print(f"{name}: {len(data[0])} training and {len(data[2])} test images; {size} "
              f"process{'es' if size > 1 else ''}, global batch {args.batch_size}"
              f"{', sharded data' if args.shards else ''}", flush=True)
    start = time.perf_counter()
    params, history = train(args, comm, data)
    digest = hashlib.sha256(b"".join(p.tobytes() for p in params)).hexdigest()
    same = len(set(comm.allgather(digest))) == 1
    if rank != 0:
        return
    print(f"trained {args.epochs} epochs in {time.perf_counter() - start:.2f} s (compiling "
          f"included); params identical on all {size} ranks: {'yes' if same else 'NO'}")
    if args.compare:
        alone, alone_history = train(args, None, data)
        worst = max(np.linalg.norm(a - b) / np.linalg.norm(b) for a, b in zip(params, alone,
                                                                                strict=True))
        print(f"in one process: test accuracy {alone_history[-1][1]:.2%}, loss "
              f"{alone_history[-1][0]:.4f}; largest relative param difference {worst:.1e}")


if __name__ == "__main__":
    main()
