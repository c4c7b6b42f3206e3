"""The benchmark's timing by turns (benchmarks/run.py `turns`): which passes run, in what order,
and what is reported."""
import importlib.util
from pathlib import Path

import pytest

RUN = Path(__file__).resolve().parent.parent / "benchmarks" / "run.py"


@pytest.fixture
def run_module(monkeypatch):
    spec = importlib.util.spec_from_file_location("benchmark_run", RUN)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    monkeypatch.setattr(module, "SETTLE_SECONDS", 0.0)
    return module


def scripted(name, times, log):
    """A run that logs its name and reports the next of `times` as its seconds, with losses
    naming the pass."""
    passes = iter(range(len(times)))

    def run():
        i = next(passes)
        log.append(name)
        return [f"{name}{i}"], times[i]
    return run


def test_turns_take_rounds_of_turns_each_lasting_seconds(run_module):
    log = []
    fast = scripted("fast", [0.1, 0.05, 0.1, 0.1, 0.3, 0.2, 0.1, 0.1], log)  # turns of 0.25 s
    slow = scripted("slow", [0.5, 0.4], log)  # one pass per turn
    results = run_module.turns({"fast": fast, "slow": slow}, rounds=2, seconds=0.25)
    assert log == ["fast"] * 3 + ["slow"] + ["fast"] * 2 + ["slow"]
    assert results == {"fast": (["fast0"], 0.05), "slow": (["slow0"], 0.4)}


def test_turns_leave_out_a_run_that_raises_import_error(run_module):
    log = []

    def missing():
        log.append("missing")
        raise ImportError("no such peer")
    present = scripted("present", [0.3, 0.2, 0.4], log)
    results = run_module.turns({"missing": missing, "present": present}, rounds=3, seconds=0.1)
    assert log == ["missing", "present", "present", "present"]
    assert results == {"present": (["present0"], 0.2)}
