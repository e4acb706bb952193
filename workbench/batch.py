"""Run a parameterised notebook over a grid of settings with papermill.

    workbench batch notebooks/05_batch.ipynb --grid model=tiny-reasoner,smollm2-135m \\
        --grid window=5,10 --out runs/grid

Each grid point runs the notebook once (its cell tagged ``parameters`` receives the values)
and writes ``DIR/<run-id>.ipynb``. Notebooks report key numbers with `record`, which the
runner collects into ``DIR/index.csv``: one row per run with its parameters, output notebook,
status, error, recorded numbers and provenance (package versions and git commit, as JSON;
see `workbench.provenance`). Its cells read as they are (``ok``, ``10``, ``0.5``, ``true``,
``[1, 2]``) and keep their types: each value is written as JSON, except text, written plain
unless it would read back as something else (the text ``10`` is written ``"10"``); an empty
cell is a value that run did not record. The index lists every run in the folder: this
batch's runs, in grid order, then those of earlier batches into the same folder with other
grids, as they were.

Nothing is lost: each output notebook is executed under a temporary name and renamed only
when papermill is done (a failed run keeps its notebook, with the failing cell, for
debugging); the index is rewritten atomically after every run, so an interrupted batch is
resumed by running the same command again, which skips runs that already succeeded (and
returns their rows as read back from the index, with the same types as fresh ones).
A failing run does not stop the batch. Ctrl-C does, at once: the running notebooks'
kernels get a Ctrl-C of their own (an RL run saves a checkpoint) and are killed if still
running 20 seconds later (or at a second Ctrl-C); a run stopped so leaves no row and no
notebook, and is run again by the same command (even with ``rerun_failed=False``). A
batch killed outright (``kill -9``) leaves its runs' temporary ``.tmp-*`` notebooks, which
the next batch into the folder removes. One batch at a time writes into a folder
(``DIR/.batch.lock``); a second is refused while the first runs.

A notebook that takes an ``out_dir`` parameter gets ``DIR/<run-id>/`` in it (unless the grid
sets it), so the files each run writes stay with that run. Notebooks run with their own
folder as the working directory, in the kernel only: the batch process never changes its
own, so relative paths given to `run_batch` mean what they meant when it was called. That
holds for an ``out_dir`` the grid sets too (``--grid out_dir=runs/exp``): like ``DIR``, it
is a folder the batch writes to, so a relative one is made absolute from where the batch
runs, not from the notebook's folder (other parameters, such as a ``prompts_file`` the
notebook reads, reach it as they are).
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import itertools
import json
import math
import os
import time
from collections.abc import Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, no_type_check

from . import _validate
from ._io import (
    as_path,
    atomic_write_text,
    check_folder,
    exclusive,
    make_folder,
    non_finite,
    remove_leftovers,
)
from .errors import WorkbenchError
from .provenance import provenance

__all__ = [
    "RECORD_MIME",
    "RUN_FOLDER_PARAMETER",
    "BatchResult",
    "parse_grid",
    "record",
    "recorded",
    "run_batch",
]

RECORD_MIME = "application/vnd.workbench.record+json"
#: The parameter `run_batch` fills with each run's own folder (``out/<run_id>``).
RUN_FOLDER_PARAMETER = "out_dir"
#: The index columns `run_batch` writes about each run; `record` refuses them as keys (a
#: recorded ``status`` replaced the run's, so a run that succeeded counted as failed).
RUNNER_COLUMNS = ("run_id", "notebook", "status", "error", "seconds", "provenance")


def record(**values: Any) -> dict[str, Any]:
    """Record key numbers from inside a notebook, for the batch index.

    Call it in a notebook cell, e.g. ``wb.record(n_anchors=12, mean_waad=3.4)``. It displays
    nothing visible: the values travel in the cell's output under a private MIME type that
    `recorded` (and the batch runner) read back. Values must be JSON-serialisable, and
    numbers finite: NaN and infinities would be written into the notebook as the
    non-standard ``NaN``, which JupyterLab cannot open.

    Args:
        **values: one index column per keyword, ``name=value``: a JSON value (numbers,
            strings, booleans, None, lists and dicts of them; NumPy and torch scalars and
            arrays become plain numbers and lists, other numbers floats) whose numbers are
            finite. The names
            of the columns `run_batch` writes itself (`RUNNER_COLUMNS`: ``run_id``,
            ``notebook``, ``status``, ``error``, ``seconds``, ``provenance``) are refused.
            A later call with the same name overrides the earlier value.

    Returns:
        The recorded values.

    Raises:
        WorkbenchError: a value is not JSON-serialisable or holds NaN or an infinity, or
            a name is one of `RUNNER_COLUMNS` (naming its key).
    """
    taken = [key for key in values if key in RUNNER_COLUMNS]
    if taken:
        raise WorkbenchError(
            f"record({taken[0]}=...) would replace the batch index's own {taken[0]!r} "
            f"column (run_batch writes {', '.join(RUNNER_COLUMNS)})",
            f"record it under another name, e.g. record(my_{taken[0]}=...)",
        )
    payload: dict[str, Any] = {}
    for key, value in values.items():
        try:
            plain = json.loads(json.dumps(value, default=_plain))
        except (TypeError, ValueError) as e:
            raise WorkbenchError(
                f"record({key}=...) needs a JSON-serialisable value: {e}",
                "pass numbers, strings or lists",
            ) from e
        # After _plain: NumPy and torch NaNs have become floats too.
        where = non_finite(plain, key)
        if where is not None:
            at = "" if where == key else f" (at {where})"
            raise WorkbenchError(
                f"record({key}=...) holds a NaN or infinite number{at}, which the notebook's "
                "JSON cannot store (JupyterLab could not open it)",
                "record a finite number, or None for a value that does not exist",
            )
        payload[key] = plain
    with contextlib.suppress(ImportError):
        from IPython import get_ipython
        from IPython.display import display

        if get_ipython() is not None:
            display({RECORD_MIME: payload, "text/plain": ""}, raw=True)
    return payload


def _plain(value: Any) -> Any:
    """A value JSON cannot store as the plain value it stands for: NumPy and torch scalars
    and arrays by their ``tolist()`` (``np.int64(12)`` stays the int 12; it was recorded
    as 12.0, and ``np.True_`` as 1.0), anything else as a float (a Decimal, a Fraction)."""
    tolist = getattr(value, "tolist", None)
    if callable(tolist) and type(value).__module__.split(".")[0] in ("numpy", "torch"):
        return tolist()
    return float(value)


@no_type_check  # checks its arguments itself, with messages that name the fix
def recorded(notebook: str | os.PathLike | Any) -> dict[str, Any]:
    """The values a notebook recorded with `record` (later calls override earlier ones).

    Args:
        notebook: a path to an executed notebook, or an `nbformat` notebook node.
    """
    import nbformat

    nb = notebook
    if isinstance(notebook, str | os.PathLike):
        try:
            nb = nbformat.read(os.fspath(notebook), as_version=4)
        except Exception as e:  # missing, a folder, not JSON: raw errors of nbformat
            raise WorkbenchError(
                f"cannot read a notebook from {notebook}: {type(e).__name__}: "
                f"{(str(e).splitlines() or [''])[0][:200]}",
                "pass the path of an executed .ipynb file (or an nbformat notebook)",
            ) from None
    if not isinstance(getattr(nb, "cells", None), list):
        raise WorkbenchError(
            f"expected a notebook, got {type(notebook).__name__}",
            "pass the path of an executed .ipynb file (or an nbformat notebook)",
        )
    values: dict[str, Any] = {}
    for cell in nb.cells:
        for out in cell.get("outputs", []):
            data = out.get("data", {})
            if RECORD_MIME in data:
                values.update(data[RECORD_MIME])
    return values


def _coerce(text: str, spec: str) -> Any:
    """'10' -> 10, '0.5' -> 0.5, 'true' -> True, 'none' -> None, '[1,2]' -> [1, 2],
    '"10"' -> '10' (a JSON string: text that would otherwise read as something else).

    A value that starts as JSON (``[``, ``{`` or ``"``) must be JSON: one that was not
    (``['none','coupled']``, with Python's quotes, or ``[1,2`` unclosed) reached the
    notebook as the text itself, whose loop then ran over its characters."""
    low = text.strip().lower()
    if low in {"true", "false"}:
        return low == "true"
    if low in {"none", "null"}:
        return None
    for cast in (int, float):
        try:
            number = cast(text)
        except ValueError:
            continue
        if not math.isfinite(number):  # 'nan', 'inf', '1e999'
            raise WorkbenchError(
                f"bad grid spec {spec!r}: the value {text.strip()!r} is not a finite number, "
                "which the batch's index (JSON) cannot store",
                f'give a finite number, or the text in double quotes: "{text.strip()}"',
            )
        return number
    if text.strip().startswith(("[", "{", '"')):
        try:
            return json.loads(text)
        except ValueError as e:
            raise WorkbenchError(
                f"bad grid spec {spec!r}: the value {text.strip()!r} is not JSON ({e})",
                "write lists, objects and quoted text as JSON, strings in double quotes: "
                'e.g. \'strategies=["none","coupled"]\' (quoted for the shell)',
            ) from None
    return text


@no_type_check  # checks its arguments itself, with messages that name the fix
def parse_grid(specs: Iterable[str]) -> list[dict[str, Any]]:
    """Expand ``key=v1,v2`` specs into the list of parameter dicts of their product.

    Values are coerced (ints, floats, booleans, ``none``, JSON lists in brackets, JSON
    strings in double quotes: ``"10"`` is the text 10). Commas inside brackets and JSON
    strings belong to the value: ``seeds=[0,1],[2,3]`` is two values and
    ``strategies=["none","coupled"]`` one. Use ``;`` instead of ``,`` to separate values
    that themselves hold commas outside brackets (``label=a,b;c``). A value that starts
    with ``[``, ``{`` or ``"`` must be JSON, and brackets must pair up (``x=[1,2`` and
    ``x=1]`` are refused, not run with that text). Spaces around each value are dropped
    (``x=a, b`` is ``a`` and ``b``; a JSON string keeps them: ``x=" a"``). ``nan`` and
    ``inf`` are refused (the index is JSON); ``"nan"`` is the text.

    An empty list of specs is refused, as `run_batch` refuses an empty grid: it is most
    likely a mistake (a list filtered to nothing, a command line without ``--grid``),
    and reading it as one run with the defaults (the product of no axes) would run
    something nobody asked for. To run the notebook once with its defaults, pass
    ``[{}]`` to `run_batch`.
    """
    if isinstance(specs, str) or not isinstance(specs, Iterable):
        # one string was read spec by character ("bad grid spec 'x'"), None failed raw
        raise WorkbenchError(
            f"grid specs must be a list of 'key=v1,v2' strings, got {specs!r}",
            "pass a list, e.g. ['window=5,10'] (or a list of parameter dicts to run_batch)",
        )
    axes: dict[str, list[Any]] = {}
    for spec in specs:
        if not isinstance(spec, str):
            raise WorkbenchError(
                f"bad grid spec {spec!r}: not a string",
                "write each spec as 'key=v1,v2', or pass a list of parameter dicts",
            )
        key, sep, values = spec.partition("=")
        key = key.strip()
        if not sep or not key.isidentifier() or not values.strip():
            raise WorkbenchError(
                f"bad grid spec {spec!r}",
                "write it as key=v1,v2 (a Python identifier, '=', then values)",
            )
        if key in axes:
            raise WorkbenchError(f"grid key {key!r} is given twice", "give each key once")
        # ';' separates when there is one outside JSON strings and JSON values, else ','
        parts = _split_values(values, spec, ";")
        if len(parts) == 1:
            parts = _split_values(values, spec, ",")
        if any(not part.strip() for part in parts):
            # 'x=1,,2' or a trailing ';' ran a grid point with the empty string
            raise WorkbenchError(
                f"bad grid spec {spec!r}: it has an empty value",
                "separate the values with single commas (or semicolons), none empty",
            )
        # Spaces around a value are the command line's, not the value's: 'model=a, b' ran
        # the model ' b' (numbers were read without them already); "' b'" keeps them.
        axes[key] = [_coerce(v.strip(), spec) for v in parts]
        _refuse_repeats(key, axes[key], spec)
    if not axes:
        raise WorkbenchError("the grid is empty: there is no run to make", _EMPTY_GRID_FIX)
    keys = list(axes)
    return [dict(zip(keys, combo, strict=True)) for combo in itertools.product(*axes.values())]


def _refuse_repeats(key: str, values: list[Any], spec: str) -> None:
    """Refuse a value given twice for `key`: its grid points had the same run id, so two
    workers wrote the same notebook and the index held the row twice, the batch reporting
    both runs as successes. Values count as the same when their JSON is (as the run id's
    digest reads them): ``1`` and ``1.0`` reach the notebook as different values."""
    seen: set[str] = set()
    for value in values:
        text = json.dumps(value, sort_keys=True)
        if text in seen:
            raise WorkbenchError(
                f"bad grid spec {spec!r}: the value {value!r} of {key!r} is given twice",
                "give each value of a key once",
            )
        seen.add(text)


def _split_values(values: str, spec: str, sep: str) -> list[str]:
    """`values` split at each `sep` outside brackets and JSON strings: ``[1,2],[3]`` is two
    values, and ``["none","coupled"]`` one (split at every comma, it was the two values
    ``["none"`` and ``"coupled"]``, and a list could not be given as one value); with
    ``;``, ``label="a;b";c`` is two (it was split inside the quotes).

    A bracket left open or closed without opening it is refused: ``x=1],[2]`` ran a run
    with the text ``1]``, and ``x=a[1,2`` one with ``a[1,2``. A ``"`` counts as a quote
    inside brackets and at the start of a value (the text ``5"`` is as it is). With
    ``;`` a value that does not start as JSON is taken as it is, brackets and all
    (``label=a],b;c``)."""
    whole = sep == ","  # every bracket counts, not only those of values that start as JSON
    parts, depth, start, quoted, escaped = [], 0, 0, False, False
    for i, c in enumerate(values):
        if quoted:  # inside a JSON string: up to its closing quote, \" escaped
            if escaped:
                escaped = False
            elif c == "\\":
                escaped = True
            elif c == '"':
                quoted = False
        elif c == '"' and (depth or not values[start:i].strip()):  # at the value's head
            quoted = True
        elif c in "[{" and (whole or depth or not values[start:i].strip()):
            depth += 1
        elif c in "]}" and depth == 0 and whole:
            raise WorkbenchError(
                f"bad grid spec {spec!r}: {c!r} closes a bracket that was not opened",
                _UNBALANCED_FIX,
            )
        elif c in "]}" and depth:
            depth -= 1
        elif c == sep and depth == 0:
            parts.append(values[start:i])
            start = i + 1
    if depth or quoted:
        raise WorkbenchError(
            f"bad grid spec {spec!r}: a {'quote' if quoted else 'bracket'} is not closed",
            _UNBALANCED_FIX,
        )
    return [*parts, values[start:]]


_UNBALANCED_FIX = (
    "close each bracket and quote (a list is one value: x=[1,2],[3]), or give text that "
    "holds them as a JSON string: label=\"a]\" (or separate the values with ';', each "
    "taken as it is)"
)

_EMPTY_GRID_FIX = (
    "give at least one grid point: a spec such as 'window=5,10' (--grid on the command "
    "line), or the list [{}] to run the notebook once with its defaults"
)


_RUN_ID_BYTES = 255 - len(".tmp-_12345678.ipynb")


def _run_id(params: Mapping[str, Any]) -> str:
    if not params:
        return "run"
    readable = "_".join(f"{k}-{v}" for k, v in params.items())
    readable = "".join(c if c.isalnum() or c in "-_." else "-" for c in readable)[:80]
    # 80 letters of 4 bytes each (𠀀) made a file name over the 255 bytes a file system
    # takes: the run failed with a traceback. 235 leaves room for ".tmp-", "_<digest>"
    # and ".ipynb", and keeps every id that fitted before as it was (a rerun finds it).
    while len(readable.encode()) > _RUN_ID_BYTES:
        readable = readable[:-1]
    digest = hashlib.sha1(json.dumps(params, sort_keys=True).encode()).hexdigest()[:8]
    return f"{readable}_{digest}"


@dataclass
class BatchResult:
    """The outcome of `run_batch`: this grid's rows of the index, where it was written, and
    the run ids of the rows read back from an earlier batch rather than run now
    (``skipped``: runs that had succeeded, and with ``rerun_failed=False`` failed ones)."""

    rows: list[dict[str, Any]]
    index_path: Path
    skipped: list[str] = field(default_factory=list)

    def __repr__(self) -> str:
        """A summary (runs, how many succeeded and failed, the index): the dataclass's own
        repr printed every row, 7k characters for 50 runs. The rows are in ``rows`` and
        `to_frame`."""
        try:
            ok = sum(1 for r in self.rows if r.get("status") == "ok")
            runs = len(self.rows)
            return (
                f"BatchResult({runs} run{'s' * (runs != 1)}, {ok} ok, {runs - ok} failed, "
                f"index={str(self.index_path)!r})"
            )
        except Exception:
            return f"<BatchResult at {id(self):#x}>"

    @property
    def ok(self) -> bool:
        """True when every run succeeded."""
        return all(r["status"] == "ok" for r in self.rows)

    def to_frame(self):
        """The index as a pandas DataFrame."""
        import pandas as pd

        return pd.DataFrame(self.rows)


#: Columns that always hold text, written and read as they are (an ok run's error is '').
_TEXT_COLUMNS = frozenset({"run_id", "notebook", "status", "error"})
_MISSING = object()


def _decode(cell: str) -> Any:
    """A cell of the index as its value: JSON, else the plain text; '' is no value."""
    if cell == "":
        return _MISSING
    try:
        return json.loads(cell)
    except ValueError:
        pass
    # Indexes written before values were JSON hold Python's True/False.
    return {"True": True, "False": False}.get(cell, cell)


def _encode(value: Any) -> str:
    """The cell `_decode` reads back as `value`: plain text when it would, else JSON."""
    if isinstance(value, str):
        decoded = _decode(value)
        if isinstance(decoded, str) and decoded == value:
            return value
    return json.dumps(value, default=str)


def _read_index(path: Path) -> dict[str, dict[str, Any]]:
    """The rows of ``index.csv`` by run id, in file order, each value with its type."""
    if path.exists() and not path.is_file():  # found only when the index was written
        raise WorkbenchError(
            f"{path} is not a file, so the batch index cannot be written there",
            "pass an output folder of its own, or move that index.csv away",
        )
    if not path.is_file():
        return {}
    try:
        return _index_rows(path)
    except (UnicodeDecodeError, csv.Error) as e:
        raise WorkbenchError(
            f"{path} is not a batch index ({type(e).__name__}: {e})",
            "pass an output folder of its own, or move that index.csv away",
        ) from None


def _index_rows(path: Path) -> dict[str, dict[str, Any]]:
    with open(path, newline="", encoding="utf-8") as f:
        reader = csv.DictReader(f)
        if reader.fieldnames is not None and "run_id" not in reader.fieldnames:
            raise WorkbenchError(
                f"{path} is not a batch index (it has no run_id column)",
                "pass an output folder of its own, or move that index.csv away",
            )
        rows: dict[str, dict[str, Any]] = {}
        for cells in reader:
            row: dict[str, Any] = {}
            for key, cell in cells.items():
                if key is None or cell is None:  # a line with more or fewer cells
                    continue
                value = cell if key in _TEXT_COLUMNS else _decode(cell)
                if value is not _MISSING:
                    row[key] = value
            if "run_id" in row:
                rows[row["run_id"]] = row
    return rows


def _write_index(path: Path, rows: list[dict[str, Any]]) -> None:
    fields: list[str] = []
    for row in rows:
        for k in row:
            if k not in fields:
                fields.append(k)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields)
    writer.writeheader()
    for row in rows:
        writer.writerow(
            {
                k: v if k in _TEXT_COLUMNS and isinstance(v, str) else _encode(v)
                for k, v in row.items()
            }
        )
    atomic_write_text(path, buf.getvalue())


def _kernel_name(notebook: Path) -> str:
    import nbformat

    nb = nbformat.read(str(notebook), as_version=4)
    # Notebooks written by hand (or nbformat) may carry no kernelspec: use this venv's python3.
    return nb.metadata.get("kernelspec", {}).get("name") or "python3"


@contextlib.contextmanager
def _papermill_cwd() -> Iterator[None]:
    """Hold papermill's local-file directory at the current one for the whole batch.

    Every ``execute_notebook`` saves the module-wide directory of papermill's local file
    handler, sets it to ``os.getcwd()`` and restores what it saved, and every write it makes
    does ``os.chdir`` there and back. Runs on several threads interleave those saves and
    restores, so one run could restore a directory another had saved (left over from an
    earlier batch, before the caller changed directory) while that other run was still
    writing: the whole process then moved to the old directory for each write, under the
    other threads. Set once here, every run saves and restores the same directory.
    """
    from papermill.iorw import local_file_io_cwd

    with local_file_io_cwd(os.getcwd()):
        yield


def _error_text(e: BaseException) -> str:
    """The index's one-line ``error`` of a failed run: the notebook's exception as
    ``Name: message`` (papermill's ``ename`` and ``evalue``), else the last line of `e`. The
    last line of papermill's traceback alone was only ``Fix: ...`` for a `WorkbenchError`,
    whose problem comes first."""
    ename, evalue = getattr(e, "ename", None), getattr(e, "evalue", None)
    if isinstance(ename, str) and ename and isinstance(evalue, str):
        text = f"{ename}: {evalue}" if evalue.strip() else ename
    else:
        text = (str(e).strip().splitlines() or [type(e).__name__])[-1]
    return " ".join(text.split())[:300]


class _Flight:
    """A run in flight: the kernels its papermill started, and whether the batch is
    stopping it (Ctrl-C). The batch thread signals the kernels; the run's own thread
    then reports it as `_INTERRUPTED` rather than as a run that failed."""

    def __init__(self) -> None:
        self.kernels: list[Any] = []
        self.stopped = False
        self.signalled = False
        self._sent: set[tuple[int, int]] = set()

    def manager_class(self, env: Mapping[str, str]) -> type:
        """A kernel manager class (for papermill) that adds each kernel it makes here and
        starts it with `env` added to this process's environment."""
        from jupyter_client.manager import AsyncKernelManager

        kernels = self.kernels

        class BatchKernelManager(AsyncKernelManager):
            def __init__(self, *args: Any, **kwargs: Any) -> None:
                super().__init__(*args, **kwargs)
                ipc = _ipc_prefix()
                if ipc is not None:
                    self.transport, self.ip = "ipc", ipc
                kernels.append(self)

            async def _async_pre_start_kernel(self, **kw: Any) -> Any:
                kw["env"] = {**kw.get("env", os.environ), **env}
                return await super()._async_pre_start_kernel(**kw)

        return BatchKernelManager

    def signal(self, signum: int) -> None:
        """Send `signum` (once) to each kernel started so far, and its process group."""
        for km in list(self.kernels):
            provisioner = getattr(km, "provisioner", None)
            process = getattr(provisioner, "process", None)
            if process is None or (id(km), signum) in self._sent:
                continue
            self._sent.add((id(km), signum))
            self.signalled = True
            # OSError: it has just ended; ValueError: a signal Windows cannot send
            with contextlib.suppress(OSError, ValueError):
                pgid = getattr(provisioner, "pgid", None)
                if pgid and hasattr(os, "killpg"):
                    os.killpg(pgid, signum)
                else:
                    process.send_signal(signum)


def _busy_batch(out: Path) -> Any:
    def busy(holder: str) -> WorkbenchError:
        return WorkbenchError(
            f"another batch is running into {out} ({holder}): two batches writing one "
            "index would drop each other's rows",
            "wait for it to end, or run the grids as one batch (workers=N runs them in "
            "parallel), or write into another out folder",
        )

    return busy


#: The runs in flight, by output notebook (`_execute` adds and removes them).
_FLIGHTS: dict[Path, _Flight] = {}
#: What `_execute` returns for a run the batch stopped: it has no row and no notebook.
_INTERRUPTED = "interrupted"
#: Seconds a run stopped by Ctrl-C has to end after its kernel's own Ctrl-C (an RL run
#: saves its checkpoint) before the kernel is killed.
_STOP_GRACE_S = 20.0


def _ipc_prefix() -> str | None:
    """Where a batch kernel's sockets go when they are local socket files (POSIX): an
    absolute path in Jupyter's runtime folder, or None for TCP on localhost.

    Over TCP, every kernel printed ipykernel's warning that its traffic was unencrypted,
    once per run, into the batch's terminal. The path is absolute because the kernel runs
    in the notebook's folder and the client here. TCP stays where socket files cannot be
    made: another OS, an unwritable runtime folder, or a path beyond a socket name's
    length (about 107 bytes).
    """
    if os.name != "posix":
        return None
    from jupyter_core.paths import jupyter_runtime_dir

    prefix = os.path.join(jupyter_runtime_dir(), f"wb-batch-{os.urandom(4).hex()}-ipc")
    try:
        os.makedirs(os.path.dirname(prefix), exist_ok=True)
    except OSError:
        return None
    # "-N" follows (a socket number, 1 to 5); a socket name holds 107 bytes
    return prefix if len(prefix.encode()) <= 100 else None


def _kernel_env(workers: int) -> dict[str, str]:
    """What each kernel of a batch adds to its environment, where it is not set already:
    ``WORKBENCH_PROGRESS=off`` (no progress bars in the saved notebooks), and with more
    than one worker ``OMP_NUM_THREADS``, this machine's cores shared out among them.

    Every kernel's torch would otherwise start one OpenMP thread per core. On two cores,
    two quickstart runs took 130 s with ``workers=2`` against 58 s one after the other.
    """
    from ._progress import ENV

    # Nobody watches a batch's kernels (the batch shows its own bar): their bars were
    # saved in the notebooks frozen at their first update.
    env = {} if ENV in os.environ else {ENV: "off"}
    if workers == 1 or "OMP_NUM_THREADS" in os.environ:
        return env
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return {**env, "OMP_NUM_THREADS": str(max(1, (cores or 1) // workers))}


def _execute(
    notebook: Path, out: Path, params: dict[str, Any], timeout: float | None, env: dict[str, str]
) -> dict:
    import papermill as pm

    tmp = out.with_name(f".tmp-{out.name}")
    t0 = time.time()
    status, error = "ok", ""
    flight = _FLIGHTS[out] = _Flight()
    try:
        pm.execute_notebook(
            str(notebook),
            str(tmp),
            parameters=params,
            kernel_name=_kernel_name(notebook),
            language="python",
            progress_bar=False,
            execution_timeout=timeout,
            # The kernel starts in the notebook's folder. papermill's own cwd= would chdir
            # the whole process for the run, under the other workers and the index writes.
            resources={"metadata": {"path": str(notebook.parent)}},
            kernel_manager_class=flight.manager_class(env),
        )
    except Exception as e:  # a failing cell fails this run only, never the batch
        status = "failed"
        error = _error_text(e)
    finally:
        _FLIGHTS.pop(out, None)
    if flight.stopped and (status != "ok" or flight.signalled):
        # Stopped by the batch's Ctrl-C, not failed: no notebook and no row, so that
        # running the batch again runs it again (even with rerun_failed=False). A run
        # that ends "ok" after its kernel's Ctrl-C counts too: code may catch it and go
        # on (wb.rl.train returns the interrupted run), so its results may be partial.
        tmp.unlink(missing_ok=True)
        return {"status": _INTERRUPTED}
    values: dict[str, Any] = {}
    if tmp.exists():
        with contextlib.suppress(Exception):
            values = recorded(tmp)
        os.replace(tmp, out)
    row = {"status": status, "error": error, "seconds": round(time.time() - t0, 2)}
    # the runner's own columns stand (a kernel with an older workbench could record them)
    return {**row, **{k: v for k, v in values.items() if k not in RUNNER_COLUMNS}}


@no_type_check  # checks its arguments itself, with messages that name the fix
def run_batch(
    notebook: str | os.PathLike,
    grid: list[dict[str, Any]] | Iterable[str],
    out: str | os.PathLike,
    *,
    workers: int = 1,
    timeout: float | None = None,
    rerun_failed: bool = True,
    progress: bool = True,
) -> BatchResult:
    """Execute `notebook` once per grid point and write ``out/index.csv``.

    Args:
        notebook: a notebook with one cell tagged ``parameters``.
        grid: parameter dicts, or ``key=v1,v2`` specs (see `parse_grid`); not empty
            (an empty grid is refused rather than running nothing: ``[{}]`` runs the
            notebook once with its defaults).
        out: output folder (created); holds one executed notebook per run and the index.
            A notebook whose parameters include ``out_dir`` (`RUN_FOLDER_PARAMETER`) gets
            ``out/<run_id>`` there, unless the grid sets it, so that each run's own files
            land beside its notebook. Notebooks run with their own folder as the working
            directory (relative paths in parameters are read from there). One batch at a
            time writes into a folder: another batch into it is refused while this one
            runs (its ``.batch.lock``). A folder holds one notebook's runs: a batch of
            another notebook is refused where a grid point is one of those runs (run ids
            are made of the parameters alone).
        workers: runs executed in parallel (each in its own kernel). With more than one,
            each kernel gets ``OMP_NUM_THREADS`` = cores // workers (at least 1) unless
            the environment sets it: torch's default of a thread per core in every kernel
            made two parallel runs on two cores 2.2x slower than running them in turn.
        timeout: whole seconds allowed per cell (None: no limit).
        rerun_failed: run again the runs that failed last time (those that succeeded are
            always skipped; those stopped by Ctrl-C always run again).
        progress: show a ``tqdm.auto`` progress bar (in a notebook or a terminal; none
            where stderr is not a terminal, as in a log file).

    Returns:
        A `BatchResult` with one row per grid point, in grid order, holding ``run_id``, the
        parameters, ``notebook`` (the output), ``status`` (``ok`` / ``failed``), ``error``,
        ``seconds``, the recorded values and ``provenance`` (the `workbench.provenance` dict
        of the batch process that ran it; a JSON column in the index). Rows of skipped runs
        are read back from the index with the same types (their ids are in ``skipped``).
        The index holds these rows, then the rows of earlier runs into `out` that this grid
        does not include. An ``out_dir`` the grid sets to a relative path is passed to the
        notebook made absolute from the current directory (as `out` is), not left to be
        read from the notebook's folder; its row keeps the value as given.

    Raises:
        KeyboardInterrupt: Ctrl-C, once the running notebooks are stopped (their kernels
            get a Ctrl-C, then are killed after 20 seconds or a second Ctrl-C) and the
            index holds every run that ended before.
    """
    from ._progress import progress_bar

    here = Path.cwd()  # relative paths of this call mean what they do now
    notebook = as_path(
        notebook, "run_batch's notebook", "file", "notebooks/05_batch.ipynb"
    ).absolute()
    out = as_path(out, "run_batch's out", "folder", "runs/batch").absolute()
    if not notebook.is_file():
        raise WorkbenchError(f"no notebook at {notebook}", "pass the path of an .ipynb file")
    known = _check_parameters_cell(notebook)
    points = [dict(p) for p in grid] if _is_dicts(grid) else parse_grid(grid)  # type: ignore[arg-type]
    if not points:  # [] is a list of no dicts: it ran nothing and reported success
        raise WorkbenchError("the grid is empty: there is no run to make", _EMPTY_GRID_FIX)
    unknown = sorted({k for p in points for k in p} - known)
    if unknown:
        # papermill would inject them as new variables the notebook never reads, and the
        # run would "succeed" with its defaults.
        raise WorkbenchError(
            f"{notebook.name} has no parameter(s) {unknown}",
            f"use the names its 'parameters' cell assigns: {sorted(known)}",
        )
    for p in points:
        try:
            json.dumps(p)
        except (TypeError, ValueError) as e:  # a raw TypeError from the run ids before
            raise WorkbenchError(
                f"grid point {p!r} holds a value that is not plain JSON ({e})",
                "pass plain Python values (int(v), float(v), lists, strings), as papermill "
                "writes them into the notebook's code",
            ) from None
        try:
            json.dumps(p, ensure_ascii=False).encode()
        except UnicodeEncodeError:
            # A byte the terminal could not decode (a Latin-1 'é' on the command line)
            # came as a lone surrogate: papermill wrote an empty notebook and the index
            # write failed with a traceback, after the run.
            raise WorkbenchError(
                f"grid point {p!r} holds text that is not valid Unicode (a byte that is "
                "not UTF-8, as a terminal in another encoding passes it)",
                "type the value in UTF-8 (set the terminal's encoding to UTF-8), or write "
                "it with plain ASCII letters",
            ) from None
    seen: set[str] = set()
    for p in points:
        # a point given twice (parse_grid refuses a repeated value; a list of dicts can
        # still repeat one) ran twice under one run id, into one notebook and two rows
        run_id = _run_id(p)
        if run_id in seen:
            raise WorkbenchError(
                f"grid point {p!r} is given twice", "give each parameter dict once"
            )
        seen.add(run_id)
    if RUN_FOLDER_PARAMETER in known:
        for p in points:
            folder = _grid_folder(here, p.get(RUN_FOLDER_PARAMETER))
            if folder is not None:
                # A file there (or an unwritable folder) failed every run at its end, after
                # all its work: 05_batch writes its tables last.
                check_folder(folder, f"the grid's {RUN_FOLDER_PARAMETER} folder")
    _validate.integer("workers", workers, minimum=1, example=2)
    # papermill (nbclient) takes whole seconds: 2.5, NaN or a string failed every run, each
    # with the same traitlets error, while the batch itself "succeeded".
    if timeout is not None:
        seconds = _validate.number("timeout", timeout, low=0, low_open=True, example=600)
        if not seconds.is_integer():
            raise WorkbenchError(
                f"timeout={timeout!r}: papermill counts whole seconds per cell",
                f"pass timeout={math.ceil(seconds)} (or None for no limit)",
            )
        timeout = int(seconds)
    out = make_folder(out, "the batch folder")
    with exclusive(out / ".batch.lock", busy=_busy_batch(out)):
        # Left by a batch killed outright: its runs' temporary notebooks and index writes
        # (only the batch's own names: other programs may write into the same folder).
        remove_leftovers(out, ".tmp-*.ipynb", ".tmp-index.csv-*")
        index_path = out / "index.csv"
        previous = _read_index(index_path)

        rows: dict[str, dict[str, Any]] = {}
        todo: list[tuple[str, dict[str, Any]]] = []
        for params in points:
            run_id = _run_id(params)
            nb_out = out / f"{run_id}.ipynb"
            old = previous.get(run_id)
            if old and nb_out.is_file():
                _refuse_another_notebooks_run(nb_out, notebook)
            if old and nb_out.is_file() and (old["status"] == "ok" or not rerun_failed):
                rows[run_id] = old
            else:
                todo.append((run_id, params))

        def base(run_id: str, params: dict[str, Any]) -> dict[str, Any]:
            return {"run_id": run_id, **params, "notebook": f"{run_id}.ipynb"}

        grid_ids = [_run_id(p) for p in points]

        def ordered() -> list[dict[str, Any]]:
            return [rows[r] for r in grid_ids if r in rows]

        def index_rows() -> list[dict[str, Any]]:
            # This grid's runs (a run still to be redone keeps its previous row until it is),
            # then every earlier run into this folder that the grid does not include.
            done = {**previous, **rows}
            in_grid = set(grid_ids)
            return [done[r] for r in grid_ids if r in done] + [
                row for r, row in previous.items() if r not in in_grid
            ]

        prov = provenance()
        bar = progress_bar(
            total=len(points), initial=len(points) - len(todo), desc="batch", progress=progress
        )

        def injected(run_id: str, params: dict[str, Any]) -> dict[str, Any]:
            # Each run's own files go to its folder under `out`, not to one shared default
            # beside the notebook that every grid point overwrote.
            if RUN_FOLDER_PARAMETER not in known:
                return params
            if RUN_FOLDER_PARAMETER not in params:
                return {RUN_FOLDER_PARAMETER: str(out / run_id), **params}
            folder = _grid_folder(here, params[RUN_FOLDER_PARAMETER])
            if folder is not None:
                return {**params, RUN_FOLDER_PARAMETER: str(folder)}
            return params

        env = _kernel_env(workers)
        with _papermill_cwd(), ThreadPoolExecutor(max_workers=workers) as pool:
            futures = {
                pool.submit(
                    _execute,
                    notebook,
                    out / f"{run_id}.ipynb",
                    injected(run_id, params),
                    timeout,
                    env,
                ): (
                    run_id,
                    params,
                )
                for run_id, params in todo
            }
            indexed: set[Any] = set()

            def index(fut: Any) -> None:
                indexed.add(fut)
                run_id, params = futures[fut]
                result = fut.result()
                if result["status"] == _INTERRUPTED:
                    return
                rows[run_id] = {**base(run_id, params), **result, "provenance": prov}
                _write_index(index_path, index_rows())
                bar.set_postfix_str(f"{run_id[:30]}: {rows[run_id]['status']}")
                bar.update()

            try:
                for fut in as_completed(futures):
                    index(fut)
            except KeyboardInterrupt:
                # Ctrl-C stops the batch now: the pool's exit waited for the runs in flight to
                # end (an RL run: hours), then dropped their rows, so they ran again next time.
                for f in futures:
                    f.cancel()
                _stop_runs(
                    [f for f in futures if not f.cancelled()], [out / f"{r}.ipynb" for r, _ in todo]
                )
                for fut in futures:
                    if fut.done() and not fut.cancelled() and fut not in indexed:
                        index(fut)  # ended before it could be stopped: it counts
                if index_rows():  # an index of no rows has no run_id column to read back
                    _write_index(index_path, index_rows())
                _say_stopped([r for r in grid_ids if r not in rows], len(grid_ids), index_path)
                raise
            finally:
                bar.close()
        _write_index(index_path, index_rows())
        skipped = [r for r in grid_ids if r not in {run_id for run_id, _ in todo}]
        return BatchResult(rows=ordered(), index_path=index_path, skipped=skipped)


def _refuse_another_notebooks_run(nb_out: Path, notebook: Path) -> None:
    """Refuse a run in the folder with this run's id that another notebook made (as its
    papermill metadata says; by file name, so that a moved notebook still resumes).

    Run ids are made of the parameters alone: `workbench batch 01.ipynb --grid seed=0,1`
    and then `03.ipynb` with the same grid into the same folder skipped every run as done
    and returned the first notebook's results as the second's."""
    try:
        with open(nb_out, encoding="utf-8") as f:
            source = json.load(f)["metadata"]["papermill"]["input_path"]
    except Exception:  # not papermill's (written by hand, or cut short): nothing to say
        return
    if isinstance(source, str) and Path(source).name != notebook.name:
        raise WorkbenchError(
            f"{nb_out.parent} holds the run {nb_out.stem} of another notebook, "
            f"{Path(source).name}: this batch of {notebook.name} would take it for its own",
            "write this batch into another --out folder: one folder per notebook",
        )


def _grid_folder(here: Path, given: Any) -> Path | None:
    """The folder an ``out_dir`` the grid sets means (None where it is no path): absolute
    from `here`, where the batch runs. A relative one was read by the kernel from the
    notebook's folder: `--grid out_dir=runs/exp` from the repository wrote the runs into
    notebooks/runs/exp, where Experiment("runs/exp") found none."""
    if not isinstance(given, str) or not given.strip():
        return None
    return here / Path(given).expanduser()


def _say_stopped(left: list[str], total: int, index_path: Path) -> None:
    """Say, after a Ctrl-C, which runs the batch has not done and how to do them: it only
    said it was interrupted, and an experiment read from the folder then held the runs
    done so far as if they were the whole grid."""
    import sys

    if not left:
        return
    names = ", ".join(left[:3]) + (f" and {len(left) - 3} more" if len(left) > 3 else "")
    print(
        f"batch: stopped with {len(left)} of {total} run(s) not done ({names}): run the same "
        f"batch again to run them (index: {index_path})",
        file=sys.stderr,
        flush=True,
    )


def _stop_runs(running: list[Any], outs: list[Path]) -> None:
    """Stop the runs in flight after a Ctrl-C: their kernels get a Ctrl-C of their own
    (code such as an RL run stops cleanly), then, after `_STOP_GRACE_S` or a second
    Ctrl-C, are killed; returns once every run's thread has ended."""
    import signal
    import sys
    from concurrent.futures import wait

    if not all(f.done() for f in running):
        print(
            "batch: stopping the running notebook(s); Ctrl-C again to kill them now",
            file=sys.stderr,
            flush=True,
        )
    kill = getattr(signal, "SIGKILL", signal.SIGTERM)
    signum, deadline = signal.SIGINT, time.monotonic() + _STOP_GRACE_S
    while not all(f.done() for f in running):
        try:
            if time.monotonic() > deadline:
                signum = kill
            # Read each round: a run that started meanwhile is stopped too.
            for flight in [f for f in (_FLIGHTS.get(o) for o in outs) if f is not None]:
                flight.stopped = True
                flight.signal(signum)
            wait(running, timeout=0.2)
        except KeyboardInterrupt:
            signum = kill


def _is_dicts(grid: Any) -> bool:
    return isinstance(grid, list) and all(isinstance(g, Mapping) for g in grid)


def _check_parameters_cell(notebook: Path) -> set[str]:
    """The names the notebook's one ``parameters`` cell assigns (refused unless exactly one)."""
    import ast

    import nbformat

    try:
        nb = nbformat.read(str(notebook), as_version=4)
    except Exception as e:
        raise WorkbenchError(f"cannot read notebook {notebook}: {e}", "pass a valid .ipynb") from e
    tagged = [c for c in nb.cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    if len(tagged) != 1:
        raise WorkbenchError(
            f"{notebook} has {len(tagged)} cells tagged 'parameters'; a batch needs exactly one",
            "tag the cell that holds the defaults with 'parameters' (JupyterLab: property "
            "inspector > cell tags)",
        )
    try:
        tree = ast.parse(tagged[0].source)
    except SyntaxError as e:
        raise WorkbenchError(
            f"the 'parameters' cell of {notebook} is not valid Python ({e.msg}, line {e.lineno})",
            "fix the cell: it should hold plain assignments such as window = 10",
        ) from None
    names: set[str] = set()
    for node in ast.walk(tree):
        targets = (
            node.targets if isinstance(node, ast.Assign)
            else [node.target] if isinstance(node, ast.AnnAssign | ast.AugAssign) else []
        )  # fmt: skip
        for t in targets:
            names |= {n.id for n in ast.walk(t) if isinstance(n, ast.Name)}
    return names
