"""The documentation runs: every code block of docs/*.md and README.md is executed, and the API
reference has an entry for every public name.

A document's blocks run in order in a scratch folder holding a copy of the repository's
examples, benchmarks and pyproject.toml and a `.venv/bin/python` that is this Python (so the
README's commands run exactly as written):
- ```python blocks run in one namespace per document; a ```text block right after one is its
  expected output, compared exactly;
- ```c blocks preceded by `<!-- file: NAME -->` are written to NAME (a sh block builds them);
- ```sh blocks run line by line in bash (`python` is this Python), each must exit 0. Three
  kinds of command are checked instead of run: creating the virtualenv and `pip install` (the
  extras named must exist), the test suite (this is it) and the benchmarks (minutes long: their
  options must be those `benchmarks/run.py --help` lists).
A fence without a language is a figure (a diagram, a file tree), not code. No other language is
allowed, so no code block escapes. The reference's `### diffc.NAME` headings
must name exactly the public names of `diffc`, `diffc.nn` and `diffc.datasets`, and its
`#### Class.member` headings every public member of the compiled-function classes.
"""
import contextlib
import io
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest

import diffc
import diffc.datasets

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = sorted((ROOT / "docs").glob("*.md")) + [ROOT / "README.md"]
LANGUAGES = {"python", "text", "sh", "c", ""}  # "": a figure
FENCE = re.compile(r"^```(\w*)\n(.*?)^```\n", re.M | re.S)
INTERNAL = {"api", "compiler", "core", "passes", "runtime", "transforms"}  # the layers
CLASSES = ("CompiledFunction", "Function", "GradFunction", "TrainStep")


def blocks(path: Path) -> list[tuple[str, str, int, str | None]]:
    """(language, code, line, file name from a preceding `<!-- file: NAME -->`) per block."""
    text = path.read_text()
    found = []
    for m in FENCE.finditer(text):
        before = text[:m.start()].rstrip().splitlines()
        named = re.fullmatch(r"<!-- file: (\S+) -->", before[-1]) if before else None
        found.append((m.group(1), m.group(2), text.count("\n", 0, m.start()) + 1,
                      named.group(1) if named else None))
    return found


@pytest.fixture
def workspace(tmp_path, monkeypatch):
    """A scratch folder like a clone after the README's set-up: examples, benchmarks,
    pyproject.toml and a .venv/bin/python (and `python` on PATH) that run this Python (and
    .venv/bin/mpiexec, this virtualenv's, where the mpi extra is installed)."""
    for folder in ("examples", "benchmarks"):
        shutil.copytree(ROOT / folder, tmp_path / folder,
                        ignore=shutil.ignore_patterns("out", "build", "__pycache__"))
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    (tmp_path / ".venv" / "bin").mkdir(parents=True)
    tools = {name: sys.executable for name in ("python", "python3")}
    if (Path(sys.executable).parent / "mpiexec").exists():  # the mpi extra's
        tools["mpiexec"] = Path(sys.executable).parent / "mpiexec"
    for name, target in tools.items():
        wrapper = tmp_path / ".venv" / "bin" / name
        wrapper.write_text(f'#!/bin/sh\nexec "{target}" "$@"\n')
        wrapper.chmod(0o755)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PATH", f"{tmp_path / '.venv' / 'bin'}{os.pathsep}{os.environ['PATH']}")
    return tmp_path


def checked_not_run(command: str) -> bool:
    """Check a command the test does not run (see the module docstring); False to run it."""
    pyproject = (ROOT / "pyproject.toml").read_text()  # (tomllib is Python 3.11+)
    extras = re.search(r"^\[project\.optional-dependencies\]\n(.*?)\n\n", pyproject, re.M | re.S)
    extras = re.findall(r"^(\w+) = ", extras.group(1), re.M)
    if command.startswith("python3 -m venv "):
        return True
    if command.startswith(".venv/bin/pip install "):
        extra = re.fullmatch(r'\.venv/bin/pip install -q -e "\.\[(\w+)\]"', command)
        assert extra and extra.group(1) in extras, command
        return True
    if command == ".venv/bin/python -m pytest -q":
        return True
    if command.startswith(".venv/bin/python benchmarks/run.py"):
        usage = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "run.py"), "--help"],
                               capture_output=True, text=True, timeout=60)
        assert usage.returncode == 0, usage.stderr
        flags = re.findall(r"--[\w-]+", command)
        assert all(f in usage.stdout for f in flags), (command, usage.stdout)
        return True
    return False


def run_sh(code: str, where: str) -> None:
    for line in code.splitlines():
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        commands = [c for c in line.split(" && ") if not checked_not_run(c)]
        if commands:
            done = subprocess.run(["bash", "-c", " && ".join(commands)], capture_output=True,
                                  text=True, timeout=600)
            assert done.returncode == 0, f"{where}: {line}\n{done.stdout}\n{done.stderr}"


@pytest.mark.parametrize("path", DOCUMENTS, ids=[p.name for p in DOCUMENTS])
def test_every_code_block_runs(path, workspace):
    found = blocks(path)
    builds = any(lang == "c" or (lang == "sh" and re.search(r"\b(cc|make) ", code))
                 for lang, code, *_ in found)
    if builds and not (shutil.which("cc") and shutil.which("make")):
        pytest.skip("no C compiler or make for the C programs")
    namespace = {"__name__": f"docs_{path.stem}"}
    output = None
    for lang, code, line, name in found:
        where = f"{path.name}:{line}"
        assert lang in LANGUAGES, f"{where}: a ```{lang} block (use one of {sorted(LANGUAGES)})"
        if lang == "python":
            buffer = io.StringIO()
            with contextlib.redirect_stdout(buffer):
                exec(compile("\n" * line + code, str(path), "exec"), namespace)
            output = buffer.getvalue()
        elif lang == "text":
            assert output is not None, f"{where}: a ```text block must follow a python block"
            assert output.rstrip() == code.rstrip(), f"{where}: the output differs:\n{output}"
        elif lang == "":
            pass  # a figure
        elif lang == "c":
            assert name, f"{where}: a ```c block needs <!-- file: NAME.c --> before it"
            (workspace / name).write_text(code)
        else:
            run_sh(code, where)
        if lang != "python":
            output = None


def reference_headings() -> tuple[set[str], set[str]]:
    """The names of the API reference's `### ` and `#### ` headings (the first `code` span)."""
    text = (ROOT / "docs" / "api.md").read_text()
    names = {level: set(re.findall(rf"^{level} `([\w.]+)", text, re.M))
             for level in ("###", "####")}
    return names["###"], names["####"]


def public_names() -> set[str]:
    names = {f"diffc.{n}" for n in dir(diffc) if not n.startswith("_") and n not in INTERNAL}
    names |= {f"diffc.nn.{n}" for n in dir(diffc.nn) if not n.startswith("_")}
    names |= {f"diffc.datasets.{n}" for n, v in vars(diffc.datasets).items()
              if not n.startswith("_") and isinstance(v, types.FunctionType)
              and v.__module__ == "diffc.datasets"}
    names |= {f"diffc.distributed.{n}" for n in diffc.distributed.__all__}
    return names | {"diffc.__version__"}


def test_api_reference_names_every_public_name():
    documented, _ = reference_headings()
    missing, unknown = public_names() - documented, documented - public_names()
    assert not missing, f"no ### `NAME` heading in docs/api.md for {sorted(missing)}"
    assert not unknown, f"docs/api.md has headings for names that are not public: {unknown}"


def test_api_reference_names_every_member_of_the_compiled_classes():
    _, members = reference_headings()
    for cls in CLASSES:
        public = {n for n in dir(getattr(diffc, cls)) if not n.startswith("_")}
        ancestors = [c.__name__ for c in getattr(diffc, cls).__mro__]
        missing = {n for n in public if not any(f"{a}.{n}" in members for a in ancestors)}
        assert not missing, f"docs/api.md has no #### `{cls}.NAME` (or an ancestor's) for {missing}"
    assert {m.split(".")[0] for m in members} <= set(CLASSES), members
