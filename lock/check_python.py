"""Is this interpreter the one the lock is for? `make` runs this before it builds `.venv`.

`lock/requirements.txt` pins each package to one version and the hashes of its wheels for
CPython 3.11 on Linux x86_64 (`make lock` resolves it for that platform only). With any
other interpreter pip stops at the first package without such a wheel with
"ResolutionImpossible", which names neither the cause nor the fix. This names both, before
anything is deleted or installed. Standard library only: it runs under whatever `python3`
a machine has (3.6 and later).

Usage: ``python lock/check_python.py`` (exit status 0 when it fits, 2 when not).
"""

# No annotations that need a newer Python: this must run, and say its piece, under any python3.
import platform
import sys

#: What the lock was resolved for (the Makefile's `make lock`: --python-version 3.11,
#: --python-platform x86_64-manylinux_2_28).
LOCKED_VERSION = (3, 11)
LOCKED_SYSTEM = "linux"
LOCKED_MACHINES = ("x86_64", "amd64")


def problem(implementation, version, system, machine):
    """What keeps an interpreter from installing the lock, or "" when nothing does.

    Args:
        implementation: `platform.python_implementation()` ("CPython").
        version: ``sys.version_info[:2]``.
        system: `sys.platform` ("linux", "darwin", "win32").
        machine: `platform.machine()` ("x86_64", "arm64", ...).
    """
    found = f"{implementation} {version[0]}.{version[1]} on {system} {machine or 'unknown'}"
    fits_platform = system == LOCKED_SYSTEM and machine.lower() in LOCKED_MACHINES
    if fits_platform and implementation == "CPython" and tuple(version) == LOCKED_VERSION:
        return ""
    if fits_platform:
        fix = (
            "install Python 3.11 and name it: make demo PYTHON=python3.11 (make picks "
            "python3.11 by itself when it is on PATH; pyenv, conda, `uv python install 3.11` "
            "or your distribution's python3.11 package all provide one)"
        )
    else:
        fix = (
            "the lock does not cover this platform: install the package's compatible ranges "
            "instead (python3 -m venv .venv && .venv/bin/pip install -e '.[dev]'; versions "
            "not tested together, the workbench warns), as the README's 'The lock, and "
            "upgrading' says"
        )
    return (
        f"error: the lock (lock/requirements.txt) is for CPython 3.11 on Linux x86_64, and "
        f"this interpreter ({sys.executable}) is {found}.\nfix: {fix}."
    )


def main():
    message = problem(
        platform.python_implementation(),
        (sys.version_info[0], sys.version_info[1]),
        sys.platform,
        platform.machine(),
    )
    if message:
        print(message, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
