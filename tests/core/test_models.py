"""The model zoo: embedded models load offline, bad names and folders fail clearly."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from toy_architectures import LLAMA3_ROPE  # tests/toy_architectures.py

import workbench as wb
from workbench.errors import WorkbenchError
from workbench.models import (
    cache_dir,
    context_of,
    list_models,
    model_name,
    model_path,
    sampler,
)
from workbench.models.cache import check_manifest as _check_manifest


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


class TestNames:
    def test_unknown_name_names_the_embedded_models(self):
        with pytest.raises(WorkbenchError, match="unknown model 'gpt-17'") as e:
            wb.load_model("gpt-17")
        assert "smollm2-135m" in str(e.value) and "tiny-reasoner" in str(e.value)

    def test_hub_name_is_refused_fast_unless_allowed(self, monkeypatch):
        monkeypatch.delenv("WORKBENCH_ALLOW_HUB", raising=False)
        t0 = time.perf_counter()
        with pytest.raises(WorkbenchError, match="allow_hub=True"):
            wb.load_model("HuggingFaceTB/SmolLM2-135M")
        assert time.perf_counter() - t0 < 2.0

    def test_allowed_hub_name_while_offline_fails_fast(self, monkeypatch):
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        t0 = time.perf_counter()
        with pytest.raises(WorkbenchError, match="hub is not reachable"):
            wb.load_model("HuggingFaceTB/SmolLM2-135M", allow_hub=True)
        assert time.perf_counter() - t0 < 2.0

    def test_a_hanging_name_lookup_still_fails_fast(self, monkeypatch):
        import socket

        def slow_resolver(*args, **kwargs):  # a resolver that holds the lookup
            time.sleep(20)
            raise OSError("timed out")

        monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
        monkeypatch.setattr(socket, "getaddrinfo", slow_resolver)
        t0 = time.perf_counter()
        with pytest.raises(WorkbenchError, match="hub is not reachable"):
            wb.load_model("HuggingFaceTB/SmolLM2-135M", allow_hub=True)
        assert time.perf_counter() - t0 < 3.0

    @pytest.mark.parametrize("value", ["1", "ON", "yes", "True"])
    def test_every_offline_spelling_skips_the_network(self, monkeypatch, value):
        import socket

        def resolver(*args, **kwargs):
            raise AssertionError("the network was tried although HF_HUB_OFFLINE is set")

        monkeypatch.setenv("HF_HUB_OFFLINE", value)
        monkeypatch.setattr(socket, "getaddrinfo", resolver)
        with pytest.raises(WorkbenchError, match="hub is not reachable"):
            wb.load_model("HuggingFaceTB/SmolLM2-135M", allow_hub=True)

    def test_a_hub_name_that_cannot_be_fetched_is_not_called_an_invalid_config(self, monkeypatch):
        """A mistyped, gated or unreachable hub name was reported as "the model config
        (config.json) of org/model is invalid", with a fix to correct config.json."""
        import socket

        from workbench import models

        def resolver(*args, **kwargs):  # HF_HUB_OFFLINE (conftest) already keeps it offline
            raise OSError("no network in the tests")

        monkeypatch.setattr(socket, "getaddrinfo", resolver)
        monkeypatch.setattr(models, "_hub_reachable", lambda timeout=1.5: True)
        with pytest.raises(WorkbenchError, match="could not get 'nobody/no-such-model'") as e:
            wb.load_model("nobody/no-such-model", allow_hub=True)
        assert "is invalid" not in e.value.problem and "config.json" not in e.value.fix
        assert "check the name" in e.value.fix

    @pytest.mark.parametrize("value", ["1", "on", " TRUE ", "yes"])
    def test_env_variable_allows_the_hub(self, monkeypatch, value):
        # "on" read as "no" (only 1/true/yes did), while HF_HUB_OFFLINE=on read as yes.
        monkeypatch.setenv("WORKBENCH_ALLOW_HUB", value)
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        with pytest.raises(WorkbenchError, match="not reachable"):
            wb.load_model("HuggingFaceTB/SmolLM2-135M")

    def test_an_env_switch_that_is_neither_on_nor_off_is_named(self, monkeypatch):
        monkeypatch.setenv("WORKBENCH_ALLOW_HUB", "y")
        with pytest.raises(WorkbenchError, match="WORKBENCH_ALLOW_HUB='y' is neither") as e:
            wb.load_model("HuggingFaceTB/SmolLM2-135M")
        assert "set WORKBENCH_ALLOW_HUB to 1 (on) or 0 (off)" in e.value.fix
        monkeypatch.setenv("WORKBENCH_ALLOW_HUB", "off")
        with pytest.raises(WorkbenchError, match="allow_hub=True"):
            wb.load_model("HuggingFaceTB/SmolLM2-135M")

    @pytest.mark.parametrize("name", ["x" * 300, "~no-such-user-xyz/model"])
    def test_a_name_that_cannot_be_a_path_is_an_unknown_name(self, name):
        # Too long for the file system, or a home folder that does not exist: not a raw
        # OSError / RuntimeError from the path lookup.
        with pytest.raises(WorkbenchError, match="unknown model"):
            wb.load_model(name)

    def test_a_trailing_slash_is_a_mistyped_name_not_a_hub_name(self):
        with pytest.raises(WorkbenchError, match="unknown model 'tiny-reasoner/'") as e:
            wb.load_model("tiny-reasoner/")
        assert "allow_hub" not in e.value.problem

    def test_cuda_without_cuda_is_a_clear_error(self):
        if torch.cuda.is_available():
            pytest.skip("this machine has CUDA")
        with pytest.raises(WorkbenchError, match="CUDA is not available"):
            wb.load_model("smollm2-135m", device="cuda")

    def test_a_cuda_index_beyond_the_gpus_is_a_clear_error_before_loading(self, monkeypatch):
        # As on a one-GPU machine: "cuda:1" failed in hf_model.to() after the whole load.
        monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
        monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
        with pytest.raises(WorkbenchError, match=r"has 1 CUDA device\(s\)"):
            wb.load_model("smollm2-135m", device="cuda:1")

    def test_mps_without_mps_is_a_clear_error_before_loading(self):
        if torch.backends.mps.is_available():
            pytest.skip("this machine has MPS")
        with pytest.raises(WorkbenchError, match=r"MPS .* is not available"):
            wb.load_model("smollm2-135m", device="mps")


class TestFolders:
    def test_a_folder_named_like_an_embedded_model(self, tmp_path, monkeypatch):
        """A Path loads the folder (it silently loaded the embedded model); the same name
        as a string still means the embedded model, with a warning naming the way out."""
        import shutil

        from workbench.models import model_name, model_path

        shutil.copytree(model_path("tiny-reasoner"), tmp_path / "tiny-reasoner")
        monkeypatch.chdir(tmp_path)
        folder = wb.load_model(Path("tiny-reasoner"), device="cpu")
        assert model_name(folder) != "tiny-reasoner"
        assert Path(model_name(folder)).resolve() == (tmp_path / "tiny-reasoner").resolve()
        with pytest.warns(UserWarning, match=r"pass './tiny-reasoner' or a Path"):
            embedded = wb.load_model("tiny-reasoner", device="cpu")
        assert model_name(embedded) == "tiny-reasoner"

    def test_folder_without_config(self, tmp_path):
        with pytest.raises(WorkbenchError, match=r"no config\.json"):
            wb.load_model(tmp_path)

    def test_pickle_weights_are_never_loaded(self, tmp_path):
        (tmp_path / "config.json").write_text("{}")
        (tmp_path / "pytorch_model.bin").write_bytes(b"not read")
        with pytest.raises(WorkbenchError, match=r"pickle files are never loaded"):
            wb.load_model(tmp_path)

    def test_a_file_is_not_a_folder(self, tmp_path):
        f = tmp_path / "model.safetensors"
        f.write_bytes(b"x")
        with pytest.raises(WorkbenchError, match="is a file, not a checkpoint folder"):
            wb.load_model(f)

    def test_an_encoder_loaded_as_a_causal_lm_is_refused(self, tmp_path):
        """A BERT checkpoint loads as ``BertLMHeadModel`` without ``is_decoder`` (transformers
        only warns): its attention reads future tokens. It loaded, generated and was
        analysed as if causal; now the load-time probe names it."""
        from transformers import BertConfig, BertForMaskedLM

        from workbench.tiny.tokenizer import build_tokenizer

        tok = build_tokenizer()
        config = BertConfig(
            vocab_size=len(tok),
            hidden_size=32,
            num_hidden_layers=2,
            num_attention_heads=4,
            intermediate_size=64,
        )
        torch.manual_seed(0)
        BertForMaskedLM(config).save_pretrained(tmp_path)
        tok.save_pretrained(tmp_path)
        with pytest.raises(WorkbenchError, match="not a causal language model") as e:
            wb.load_model(tmp_path, device="cpu")
        assert "decoder-only" in e.value.fix

    def test_a_checkpoint_that_needs_custom_code_says_so(self, tmp_path):
        """The fix named the custom code the workbench never runs (it said to check that
        the folder holds config.json, *.safetensors and tokenizer files, which it did)."""
        folder = tmp_path / "custom"
        shutil.copytree(model_path("tiny-reasoner"), folder)
        config = json.loads((folder / "config.json").read_text())
        config.update(
            model_type="my-own-llm",
            architectures=["MyOwnLLM"],
            auto_map={"AutoModelForCausalLM": "modeling_my.MyOwnLLM"},
        )
        (folder / "config.json").write_text(json.dumps(config))
        with pytest.raises(WorkbenchError, match=r"custom code \(auto_map\)") as e:
            wb.load_model(folder, device="cpu")
        assert "architecture transformers ships" in e.value.fix

    @pytest.mark.parametrize(
        "edit, problem, fix",
        [
            # bitsandbytes and GPTQ asked to pip-install their library (and the fix said to
            # check the files); FP8 loaded without a word.
            ({"quantization_config": {"quant_method": "bitsandbytes", "load_in_4bit": True}},
             r"is quantized \(bitsandbytes\)", "unquantized"),
            ({"quantization_config": {"quant_method": "fp8", "activation_scheme": "dynamic"}},
             r"is quantized \(fp8\)", "unquantized"),
            # transformers' "Unrecognized configuration class ... AutoModelForCausalLM"
            ({"model_type": "t5"}, "'t5' checkpoint has no causal language model",
             "decoder-only causal LM"),
            ({"model_type": "qwen2_vl"}, "'qwen2_vl' checkpoint has no causal language model",
             "decoder-only causal LM"),
            ({"model_type": "frobnicator"}, "'frobnicator' is unknown to transformers 5",
             "upgrade of the lock"),
            ({"model_type": None}, "names no model_type", "restore config.json"),
        ],
        ids=["bitsandbytes", "fp8", "t5", "qwen2-vl", "unknown", "no-type"],
    )  # fmt: skip
    def test_a_config_the_workbench_cannot_load_is_named_before_loading(
        self, tmp_path, monkeypatch, edit, problem, fix
    ):
        import transformers

        folder = tmp_path / "edited"
        shutil.copytree(model_path("tiny-reasoner"), folder)
        config = json.loads((folder / "config.json").read_text())
        config.update(edit)
        (folder / "config.json").write_text(json.dumps(config))
        monkeypatch.setattr(
            transformers.AutoModelForCausalLM, "from_pretrained",
            lambda *a, **k: pytest.fail("loaded the weights"),
        )  # fmt: skip
        with pytest.raises(WorkbenchError, match=problem) as e:
            wb.load_model(folder, device="cpu")
        assert fix in e.value.fix

    def test_a_config_that_fails_its_own_checks_is_named_not_the_tokenizer(
        self, tmp_path, monkeypatch
    ):
        """transformers' check that the hidden size splits into the heads ran while the
        tokenizer loaded, and was reported as "could not load the tokenizer", with a fix
        about tokenizer files."""
        import transformers

        folder = tmp_path / "edited"
        shutil.copytree(model_path("tiny-reasoner"), folder)
        config = json.loads((folder / "config.json").read_text())
        config["num_attention_heads"] = 7  # hidden size 128
        (folder / "config.json").write_text(json.dumps(config))
        for cls in (transformers.AutoTokenizer, transformers.AutoModelForCausalLM):
            monkeypatch.setattr(
                cls, "from_pretrained", lambda *a, **k: pytest.fail("loaded past the config")
            )
        with pytest.raises(WorkbenchError, match=r"config \(config\.json\) of .* invalid") as e:
            wb.load_model(folder, device="cpu")
        assert "not a multiple of the number of attention heads (7)" in e.value.problem
        assert "tokenizer" not in str(e.value)
        assert "correct config.json" in e.value.fix

    def test_a_vocab_size_that_does_not_fit_the_embedding_names_both(self, tmp_path):
        """transformers said only "You set `ignore_mismatched_sizes` to `False`, thus
        raising an error", with a fix to check that the folder holds its files."""
        folder = tmp_path / "edited"
        shutil.copytree(model_path("tiny-reasoner"), folder)
        config = json.loads((folder / "config.json").read_text())
        rows = config["vocab_size"]
        for vocab in (10, rows + 50):
            config["vocab_size"] = vocab
            (folder / "config.json").write_text(json.dumps(config))
            with pytest.raises(WorkbenchError, match=f"gives vocab_size {vocab}, but") as e:
                wb.load_model(folder, device="cpu")
            assert f"has shape [{rows}, {config['hidden_size']}]" in e.value.problem
            assert "ignore_mismatched_sizes" not in str(e.value)
            assert f"set vocab_size to {rows} in config.json" in e.value.fix

    def test_weights_of_other_shapes_than_the_config_gives_are_named(self, tmp_path):
        folder = tmp_path / "edited"
        shutil.copytree(model_path("tiny-reasoner"), folder)
        config = json.loads((folder / "config.json").read_text())
        real, config["intermediate_size"] = config["intermediate_size"], 100
        (folder / "config.json").write_text(json.dumps(config))
        with pytest.raises(WorkbenchError, match=r"do not have the shapes its config\.json") as e:
            wb.load_model(folder, device="cpu")
        assert f"[{real}, {config['hidden_size']}] in the weights" in e.value.problem
        assert "intermediate_size" in e.value.fix

    def test_a_folder_without_tokenizer_files_says_so_before_the_weights(
        self, tmp_path, monkeypatch
    ):
        """It said "Couldn't instantiate the backend tokenizer from one of: " (the message's
        first line only), after loading the weights."""
        import transformers

        folder = tmp_path / "no-tokenizer"
        shutil.copytree(model_path("tiny-reasoner"), folder)
        for name in ("tokenizer.json", "tokenizer_config.json"):
            (folder / name).unlink()
        monkeypatch.setattr(
            transformers.AutoModelForCausalLM, "from_pretrained",
            lambda *a, **k: pytest.fail("loaded the weights"),
        )  # fmt: skip
        with pytest.raises(WorkbenchError, match="could not load the tokenizer from") as e:
            wb.load_model(folder, device="cpu")
        assert "tokenizer.save_pretrained(folder)" in e.value.fix

    @pytest.mark.parametrize("kind", ["encoder-decoder", "reward-model"])
    def test_a_checkpoint_without_a_language_model_head_says_so(self, tmp_path, kind):
        """A BART checkpoint loaded as BartForCausalLM (its decoder alone) and a reward
        model (LlamaForSequenceClassification) were called "incomplete", with a fix to save
        the model again, or said to hold weights their config has no place for."""
        import transformers

        from workbench.tiny.tokenizer import build_tokenizer

        tok = build_tokenizer()
        size = dict(vocab_size=len(tok), pad_token_id=0, bos_token_id=1, eos_token_id=2)
        if kind == "encoder-decoder":
            config = transformers.BartConfig(
                **size, d_model=32, encoder_layers=1, decoder_layers=1, encoder_ffn_dim=64,
                decoder_ffn_dim=64, encoder_attention_heads=4, decoder_attention_heads=4,
            )  # fmt: skip
            model, problem = transformers.BartForConditionalGeneration, "an encoder-decoder model"
        else:
            config = transformers.LlamaConfig(
                **size, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                num_attention_heads=4, num_labels=1,
            )  # fmt: skip
            model, problem = transformers.LlamaForSequenceClassification, "no language model head"
        torch.manual_seed(0)
        model(config).save_pretrained(tmp_path)
        tok.save_pretrained(tmp_path)
        with pytest.raises(WorkbenchError, match=problem) as e:
            wb.load_model(tmp_path, device="cpu")
        assert "save the model again" not in e.value.fix and "causal LM" in e.value.fix

    @pytest.mark.slow
    def test_local_folder_loads_like_the_embedded_model(self, smol):
        folder = model_path("smollm2-135m")
        bridge = wb.load_model(folder, device="cpu")
        ids = torch.tensor([[1, 504, 3458, 314]])
        with torch.no_grad():
            assert torch.allclose(bridge(ids), smol(ids), atol=1e-5)


class TestCache:
    def test_cache_dir_follows_the_environment(self, monkeypatch, tmp_path):
        monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path / "c"))
        assert cache_dir() == tmp_path / "c"

    def test_manifest_mismatch_is_reported_with_the_fix(self, tmp_path):
        (tmp_path / "model.safetensors").write_bytes(b"12345")
        (tmp_path / "workbench-manifest.json").write_text(
            json.dumps({"conversion_version": 1, "files": {"model.safetensors": 10}})
        )
        with pytest.raises(WorkbenchError, match="corrupt or partly written") as e:
            _check_manifest(tmp_path)
        assert "rebuild=True" in str(e.value)

    @pytest.mark.parametrize("files", [[], ["model.safetensors"]])
    def test_a_manifest_whose_files_are_not_sizes_is_corrupt(self, tmp_path, files):
        (tmp_path / "workbench-manifest.json").write_text(
            json.dumps({"conversion_version": 1, "files": files})
        )
        with pytest.raises(WorkbenchError, match=r"manifest .* is corrupt"):
            _check_manifest(tmp_path)
        assert not wb.models.manifest_ok(tmp_path)  # so list_models still lists

    def test_a_cache_that_cannot_be_created_is_named_before_converting(self, tmp_path, monkeypatch):
        from workbench.models import cache

        in_the_way = tmp_path / "cache"
        in_the_way.write_text("a file, not a folder")
        monkeypatch.setenv("WORKBENCH_CACHE", str(in_the_way))
        monkeypatch.setattr(cache, "smollm_source", lambda: tmp_path / "fake.gguf")

        def convert(dest, gguf):
            raise AssertionError("the conversion started")

        monkeypatch.setattr(cache, "convert_smollm", convert)
        with pytest.raises(WorkbenchError, match="cannot create the model cache") as e:
            model_path("smollm2-135m")
        assert "WORKBENCH_CACHE" in e.value.fix
        assert in_the_way.read_text() == "a file, not a folder"

    def test_a_cache_that_cannot_be_read_fails_no_other_model(self, tmp_path, monkeypatch):
        """An unreadable cache folder (another user's, mode 700) failed every load, of the
        tiny models and local folders too, with a raw PermissionError from listing the
        embedded models; the default model's load names the cache and the fix."""
        import errno

        from workbench.models import cache

        locked = tmp_path / "locked"
        real_stat = os.stat

        def stat(path, *args, **kwargs):  # what a folder without read permission answers
            if str(path).startswith(str(locked)):
                raise PermissionError(errno.EACCES, "Permission denied", str(path))
            return real_stat(path, *args, **kwargs)

        monkeypatch.setattr(os, "stat", stat)
        monkeypatch.setenv("WORKBENCH_CACHE", str(locked / "cache"))
        monkeypatch.setattr(cache, "smollm_source", lambda: tmp_path / "fake.gguf")
        monkeypatch.setattr(cache, "convert_smollm", lambda dest, gguf: pytest.fail("converted"))
        assert not {m.name: m.cached for m in list_models()}["smollm2-135m"]
        assert model_name(wb.load_model("tiny-reasoner", device="cpu")) == "tiny-reasoner"
        with pytest.raises(WorkbenchError, match=r"model cache folder .* Permission denied") as e:
            model_path("smollm2-135m")
        assert "WORKBENCH_CACHE" in e.value.fix

    def test_missing_manifest_means_incomplete(self, tmp_path):
        with pytest.raises(WorkbenchError, match="incomplete"):
            _check_manifest(tmp_path)

    @pytest.mark.slow
    def test_corrupt_weights_with_intact_sizes_fail_clearly(self, smol, tmp_path, monkeypatch):
        real = model_path("smollm2-135m")
        monkeypatch.setenv("WORKBENCH_CACHE", str(tmp_path))
        fake = tmp_path / "models" / "smollm2-135m-instruct"
        shutil.copytree(real, fake, ignore=shutil.ignore_patterns("model.safetensors"))
        size = (real / "model.safetensors").stat().st_size
        with open(fake / "model.safetensors", "wb") as f:
            f.truncate(size)  # right size, all zero bytes: no valid safetensors header
        assert {m.name: m.cached for m in list_models()}["smollm2-135m"]
        with pytest.raises(WorkbenchError, match="could not load") as e:
            wb.load_model("smollm2-135m", device="cpu")
        assert "rebuild=True" in str(e.value)

    @pytest.mark.slow
    def test_interrupted_conversion_leaves_nothing_and_rerun_is_identical(self, smol, tmp_path):
        """Kill a conversion half-way (SIGKILL), then convert again: same bytes as before."""
        env = {**os.environ, "WORKBENCH_CACHE": str(tmp_path)}
        code = "from workbench.models import model_path; model_path('smollm2-135m')"
        proc = subprocess.Popen(
            [sys.executable, "-c", code],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            start_new_session=True,
        )
        models = tmp_path / "models"
        deadline = time.time() + 120
        while time.time() < deadline and not (
            models.exists() and any(p.name.startswith(".tmp-") for p in models.iterdir())
        ):
            time.sleep(0.2)
        time.sleep(2.0)  # well inside the conversion, before the final rename
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        final = models / "smollm2-135m-instruct"
        assert not final.exists(), "an interrupted conversion must not leave a loadable folder"

        subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
        _check_manifest(final)
        leftovers = [p.name for p in models.iterdir() if p.name.startswith(".tmp-")]
        assert leftovers == [] or all((models / n).is_dir() for n in leftovers)
        real = model_path("smollm2-135m")
        assert _sha256(final / "model.safetensors") == _sha256(real / "model.safetensors")


class TestListing:
    def test_lists_the_embedded_models(self):
        names = [m.name for m in list_models()]
        assert names[0] == wb.DEFAULT_MODEL == "smollm2-135m"
        assert names[1:] == ["tiny-reasoner", "tiny-searcher"]

    def test_the_default_model_is_available_offline(self):
        assert {m.name: m.available for m in list_models()}["smollm2-135m"]

    def test_each_tiny_model_has_one_home(self):
        from workbench.tiny import CHECKPOINT_DIR, CHECKPOINTS, SEARCHER_DIR

        assert CHECKPOINTS == {"tiny-reasoner": CHECKPOINT_DIR, "tiny-searcher": SEARCHER_DIR}
        for name, folder in CHECKPOINTS.items():
            assert model_path(name) == folder
            assert {m.name: m.path for m in list_models()}[name] == folder
            assert {m.name: m.available for m in list_models()}[name]


class TestModelName:
    """The name a bridge was loaded under lives in a weak registry, not on the bridge."""

    def test_loaded_bridges_are_named(self, tiny):
        assert model_name(tiny) == "tiny-reasoner"
        assert not hasattr(tiny, "workbench_name")
        assert model_name(sampler(tiny)) is None  # the plain model is not the bridge

    def test_traces_record_the_name(self, tiny):
        prompt = "Add: 12+34\n"
        from_text = wb.Trace.from_text(tiny, prompt, "2+4=6\n", chat=False)
        sampled = wb.generate(tiny, prompt, max_new_tokens=2, temperature=0.0, chat=False)
        assert from_text.meta["model"] == sampled.meta["model"] == "tiny-reasoner"

    def test_other_objects_have_no_name(self):
        assert model_name(object()) is None
        assert model_name(1) is None  # not weak-referenceable

    def test_the_registry_does_not_keep_bridges_alive(self):
        import gc
        import weakref

        from workbench.models import bridge_model
        from workbench.models.bridge import _NAMES
        from workbench.tiny import load

        hf_model, tokenizer = load()
        bridge = bridge_model(hf_model, tokenizer, name="named-here")
        assert model_name(bridge) == "named-here"
        gc.collect()  # earlier tests' unreachable bridges leave the registry first
        ref, before = weakref.ref(bridge), len(_NAMES)
        del bridge
        gc.collect()
        assert ref() is None and len(_NAMES) == before - 1


class TestTokenizer:
    """The bridge encodes with the checkpoint's own tokenizer, the one the plain model
    samples and trains with; TransformerLens's ``to_tokens`` keeps its BOS convention."""

    def test_prompts_encode_as_the_checkpoints_tokenizer_does(self, smol):
        from transformers import AutoTokenizer

        own = AutoTokenizer.from_pretrained(model_path("smollm2-135m"))
        prompt = "Tom has 3 boxes of 12 pens."
        trace = wb.Trace.from_text(smol, prompt, " 29 are left.", chat=False)
        assert trace.ids[: trace.prompt_len].tolist() == own(prompt)["input_ids"]
        assert trace.tokens[0] == "Tom"  # no BOS that SmolLM2's tokenizer does not add
        bos = own.convert_tokens_to_ids(own.bos_token)
        assert smol.to_tokens(prompt)[0, 0] == bos  # TransformerLens's convention, kept
        assert smol.to_tokens(prompt, prepend_bos=False)[0].tolist() == own(prompt)["input_ids"]

    def test_the_callers_tokenizer_is_the_bridges_with_its_edits(self):
        from workbench.models import bridge_model
        from workbench.tiny import load

        hf_model, tokenizer = load()
        tokenizer.chat_template = "{% for m in messages %}Q: {{ m['content'] }}\n{% endfor %}A:"
        bridge = bridge_model(hf_model, tokenizer)
        assert bridge.tokenizer is tokenizer
        trace = wb.Trace.from_text(bridge, "12+7=", "19")
        assert "".join(trace.tokens[: trace.prompt_len]) == "Q: 12+7=\nA:"  # the edit applies

    def test_a_tokenizer_whose_folder_is_gone_still_bridges(self, tmp_path):
        from transformers import AutoTokenizer

        from workbench.models import bridge_model
        from workbench.tiny import load

        hf_model, _ = load()
        shutil.copytree(model_path("tiny-reasoner"), tmp_path / "gone")
        tokenizer = AutoTokenizer.from_pretrained(tmp_path / "gone")
        shutil.rmtree(tmp_path / "gone")  # TransformerLens used to reload it from here
        assert bridge_model(hf_model, tokenizer).tokenizer is tokenizer

    def test_a_tokenizer_without_eos_gets_none_and_samples_to_the_cap(self):
        from workbench.models import bridge_model
        from workbench.tiny import load

        hf_model, tokenizer = load()
        tokenizer.eos_token = None
        hf_model.generation_config.eos_token_id = None
        bridge = bridge_model(hf_model, tokenizer)
        assert bridge.tokenizer.eos_token is None  # not "<|endoftext|>", read as <unk>
        trace = wb.generate(bridge, "12+7=", max_new_tokens=12, seed=3, chat=False)
        assert trace.response_len == 12

    def test_a_bridge_is_not_bridged_again(self, tiny):
        """It failed with a raw AttributeError (no .logits) in the load-time probe."""
        from workbench.models import bridge_model

        with pytest.raises(WorkbenchError, match="bridged already") as e:
            bridge_model(tiny, tiny.tokenizer)
        assert "sampler(bridge)" in e.value.fix

    def test_sampling_under_live_hooks_is_refused(self, tiny):
        from workbench.models import live_hooks

        trace = wb.Trace.from_text(tiny, "12+7=", "12+7=19", chat=False)
        with wb.intervene(tiny, wb.ResidAblation([2], layers=0)):
            assert live_hooks(tiny)
            with pytest.raises(WorkbenchError, match="would ignore them"):
                wb.generate(tiny, "12+7=", max_new_tokens=4, chat=False)
            # decoding under the hooks is what greedy_continue is for
            hooked = wb.ablation.greedy_continue(tiny, trace.ids[:3], max_new_tokens=4)
        assert not live_hooks(tiny)
        ablated = wb.ablation.greedy_continue(
            tiny, trace.ids[:3], interventions=[wb.ResidAblation([2], layers=0)], max_new_tokens=4
        )
        assert torch.equal(hooked, ablated)


@pytest.mark.slow
class TestParity:
    """The bridge computes what the Hugging Face model computes (same eager attention)."""

    PROMPTS = (
        "The capital of France is",
        "Question: what is 12 + 35? Answer step by step.",
        "def fibonacci(n):\n    if n < 2:\n        return n",
    )

    def test_next_token_logprobs_match_hugging_face(self, smol):
        from transformers import AutoModelForCausalLM

        hf = AutoModelForCausalLM.from_pretrained(
            model_path("smollm2-135m"), attn_implementation="eager", use_safetensors=True
        ).eval()
        for prompt in self.PROMPTS:
            ids = smol.tokenizer(prompt, return_tensors="pt")["input_ids"]
            with torch.no_grad():
                ours = torch.log_softmax(smol(ids), -1)
                ref = torch.log_softmax(hf(ids).logits, -1)
            assert ours.shape == ref.shape == (1, ids.shape[1], 49152)
            assert (ours - ref).abs().max().item() < 1e-4, prompt

    def test_attention_patterns_are_hooked(self, smol):
        ids = smol.tokenizer("One two three four", return_tensors="pt")["input_ids"]
        _, cache = smol.run_with_cache(ids, names_filter=lambda n: n.endswith("hook_pattern"))
        pattern = cache["pattern", 0]
        assert pattern.shape == (1, 9, ids.shape[1], ids.shape[1])
        assert torch.allclose(pattern.sum(-1), torch.ones(1, 9, ids.shape[1]), atol=1e-5)
        assert torch.all(pattern.triu(1) == 0)


@pytest.mark.parametrize(
    "call, words",
    [
        # allow_hub="no" is truthy: it allowed the download the caller had refused
        (lambda: wb.load_model("org/model", allow_hub="no"), "allow_hub must be True or False"),
        (lambda: wb.models.load_hf("org/model", allow_hub=None), "allow_hub must be"),
        (lambda: wb.load_model("tiny-reasoner", rebuild="no"), "rebuild must be True or False"),
        (lambda: wb.models.model_path("tiny-reasoner", rebuild="yes"), "rebuild must be"),
        (lambda: wb.models.model_path(["tiny-reasoner"]), "unknown model"),  # unhashable
        (lambda: wb.models.model_device(None), "expected a model with weights"),
        (lambda: wb.models.model_device(torch.nn.ReLU()), "expected a model with weights"),
        (lambda: wb.models.bridge_model(None, None), "needs a Hugging Face causal LM"),
        # a path where the tokenizer goes: "TransformerLens cannot wrap" the architecture
        (lambda: wb.models.bridge_model(torch.nn.Linear(2, 2), "tok/"), "LM and its tokenizer"),
    ],
)
def test_flags_and_models_of_the_wrong_type_are_named_before_loading(call, words):
    with pytest.raises(WorkbenchError, match=words):
        call()


YARN = dict(rope_type="yarn", rope_theta=1e6, factor=4.0, original_max_position_embeddings=32768)


@pytest.mark.parametrize(
    "config, settings, context",
    [
        # Qwen's recipe: 32,768 pretrained positions, stretched fourfold by YaRN
        ("Qwen2Config", dict(max_position_embeddings=32768, rope_parameters=YARN), 131072),
        # a YaRN config whose max_position_embeddings already states more
        ("Qwen2Config", dict(max_position_embeddings=200_000, rope_parameters=YARN), 200_000),
        # dynamic NTK stretches the configured length itself
        (
            "LlamaConfig",
            dict(
                max_position_embeddings=4096,
                rope_parameters=dict(rope_type="dynamic", factor=2.0, rope_theta=1e4),
            ),
            8192,
        ),
        # Llama 3.1 and Phi-3's longrope state the stretched length already
        (
            "LlamaConfig",
            dict(
                max_position_embeddings=131072,
                rope_parameters=dict(LLAMA3_ROPE, original_max_position_embeddings=8192),
            ),
            131072,
        ),
        # linear scaling: Gemma 3 states its stretched length; per-type rotary parameters
        ("Gemma3TextConfig", dict(max_position_embeddings=131072), 131072),
        ("Qwen2Config", dict(max_position_embeddings=4096), 4096),
        ("GPT2Config", dict(n_positions=1024), 1024),  # n_positions, under another name
    ],
)
def test_the_context_is_the_configured_length_stretched_by_yarn_or_dynamic_rope(
    config, settings, context
):
    import transformers

    assert context_of(getattr(transformers, config)(**settings)) == context


def test_a_yarn_model_samples_and_is_analysed_beyond_its_pretrained_length(make_toy, tiny):
    """A YaRN checkpoint was held to its pretrained max_position_embeddings: the bridge
    (TransformerLens reads that field alone) refused its traces beyond it, and so did the
    plain model's sampler. Both now take the stretched context, and no more."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from workbench.trace.sampling import sample_completions
    from workbench.trace.tokens import encode_prompt

    rope = dict(YARN, original_max_position_embeddings=64)
    model = make_toy(Qwen2Config, Qwen2ForCausalLM, max_position_embeddings=64,
                     rope_parameters=rope)  # fmt: skip
    assert model.cfg.n_ctx == 256
    ids = encode_prompt(model, "12+7=", chat=False)

    def trace(n: int) -> wb.Trace:
        ids = torch.randint(4, 60, (n,), generator=torch.Generator().manual_seed(0))
        tokens = wb.trace.token_strings(model.tokenizer, ids)
        return wb.Trace(ids=ids, tokens=tokens, prompt_len=10, text="")

    assert wb.analyze(model, trace(200)).waad.shape[-1] == 200
    plain = sampler(model)
    out = sample_completions(plain, [ids], max_new_tokens=100, greedy=True,
                             tokenizer=model.tokenizer)  # fmt: skip
    assert len(out[0]) <= 100  # refused before
    with pytest.raises(WorkbenchError, match="context holds 256") as e:
        sample_completions(plain, [ids], max_new_tokens=256, tokenizer=model.tokenizer)
    assert "max_position_embeddings stretched by its RoPE scaling" in str(e.value)
    with pytest.raises(WorkbenchError, match="context holds 256"):
        wb.analyze(model, trace(300))
