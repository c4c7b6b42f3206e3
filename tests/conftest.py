"""Test-wide set-up: compiled-code caching goes to a per-session folder, never the user's, and
the compiler verifies the program after every pass (DIFFC_CHECK=1)."""
import os

import pytest


@pytest.fixture(autouse=True, scope="session")
def private_cache_dir(tmp_path_factory):
    previous = os.environ.get("DIFFC_CACHE_DIR")
    os.environ["DIFFC_CACHE_DIR"] = str(tmp_path_factory.mktemp("diffc-cache"))
    os.environ["DIFFC_CHECK"] = "1"
    yield
    if previous is None:
        os.environ.pop("DIFFC_CACHE_DIR", None)
    else:
        os.environ["DIFFC_CACHE_DIR"] = previous
