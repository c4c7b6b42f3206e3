"""The core: types, the IR, primitives and tracing.

Importing it registers every user-level primitive (`primitive.PRIMITIVES`).
"""
from . import elementwise, linalg, softmax, structural  # noqa: F401 - they register primitives

__version__ = "0.1.0"
