"""Test-wide set-up: compiled-code caching goes to a per-session folder, never the user's, the
compiler verifies the program after every pass (DIFFC_CHECK=1), and every parallel region of more
than one part runs on the worker pool, however small (DIFFC_PARALLEL_MIN_WORK=0; set before any
compile), so that every test runs the threaded code."""
import os

import pytest

from diffc.api.threads import start_pool

os.environ["DIFFC_PARALLEL_MIN_WORK"] = "0"


@pytest.fixture(autouse=True, scope="session")
def private_cache_dir(tmp_path_factory):
    previous = os.environ.get("DIFFC_CACHE_DIR")
    os.environ["DIFFC_CACHE_DIR"] = str(tmp_path_factory.mktemp("diffc-cache"))
    os.environ["DIFFC_CHECK"] = "1"
    start_pool()  # now, not in whichever test compiles first: its cache entry goes here
    yield
    if previous is None:
        os.environ.pop("DIFFC_CACHE_DIR", None)
    else:
        os.environ["DIFFC_CACHE_DIR"] = previous
