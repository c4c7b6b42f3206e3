"""`diffc.distributed`: helpers for data-parallel training over MPI (`fit(..., comm=comm)`,
run by api/distributed.py), importable by this name; mpi4py is imported only when used."""
from .api.distributed import shard

__all__ = ["shard"]
