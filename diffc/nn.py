"""`diffc.nn`: the user's operations (defined in `transforms/nn.py`), importable by this name."""
from .transforms.nn import *  # noqa: F403 - this module is that one's public face
from .transforms.nn import __all__  # noqa: F401
