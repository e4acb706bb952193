"""Traces: generation is reproducible, the prompt/response boundary is exact."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import workbench as wb
from workbench.errors import WorkbenchError
from workbench.trace import encode_prompt

PROMPT = "What is 7 + 5? Answer briefly."


class TestTraceObject:
    def test_rejects_inconsistent_fields(self):
        with pytest.raises(WorkbenchError, match="ids but"):
            wb.Trace(ids=torch.tensor([1, 2, 3]), tokens=["a"], prompt_len=1, text="")
        with pytest.raises(WorkbenchError, match="prompt_len=0"):
            wb.Trace(ids=torch.tensor([1, 2]), tokens=["a", "b"], prompt_len=0, text="")
        with pytest.raises(WorkbenchError, match="1-D"):
            wb.Trace(
                ids=torch.ones(2, 2, dtype=torch.long), tokens=["a"] * 2, prompt_len=1, text=""
            )

    def test_round_trips_through_json(self, tmp_path):
        t = wb.Trace(
            ids=torch.tensor([5, 6, 7, 8]),
            tokens=list("abcd"),
            prompt_len=2,
            text="cd",
            prompt="ab",
        )
        back = wb.Trace.load(t.save(tmp_path / "t.json"))
        assert torch.equal(back.ids, t.ids) and back.tokens == t.tokens
        assert (back.prompt_len, back.text, back.prompt) == (2, "cd", "ab")
        assert list(back.response) == [2, 3] and back.response_len == 2

    def test_a_path_may_start_with_a_tilde(self, tmp_path, monkeypatch):
        """``~`` is the home folder for `save` and `load`, as for `wb.load_model`'s folder
        (it was read as a folder named ``~``)."""
        monkeypatch.setenv("HOME", str(tmp_path))
        t = wb.Trace(ids=torch.tensor([5, 6]), tokens=["a", "b"], prompt_len=1, text="b")
        assert t.save("~/t.json") == tmp_path / "t.json"
        assert wb.Trace.load("~/t.json").tokens == ["a", "b"]

    def test_loading_garbage_is_a_clear_error(self, tmp_path):
        (tmp_path / "bad.json").write_text("{not json")
        with pytest.raises(WorkbenchError, match="cannot read a trace"):
            wb.Trace.load(tmp_path / "bad.json")
        with pytest.raises(WorkbenchError, match="not a saved trace"):
            wb.Trace.from_dict({"ids": [1]})

    def test_a_file_whose_fields_disagree_is_named_in_the_error(self, tmp_path):
        """Ids and tokens of different lengths, or a prompt_len out of range, gave the
        record's message without the file it came from."""
        t = wb.Trace(ids=torch.tensor([5, 6, 7]), tokens=list("abc"), prompt_len=1, text="bc")
        path = t.save(tmp_path / "t.json")
        for change in ({"tokens": ["a", "b"]}, {"prompt_len": 9}):
            path.write_text(json.dumps({**json.loads(path.read_text()), **change}))
            with pytest.raises(WorkbenchError, match=r"cannot read a trace from .*t\.json"):
                wb.Trace.load(path)

    @pytest.mark.parametrize("meta", [{1: "a"}, {True: 1}, {"sampling": {None: 2}}])
    def test_meta_keys_must_be_strings(self, meta):
        """JSON keys are strings: {1: "a"} came back as {"1": "a"}, {True: 1} as {"true": 1}."""
        with pytest.raises(WorkbenchError, match="not strings"):
            wb.Trace(ids=torch.tensor([5, 6]), tokens=["a", "b"], prompt_len=1, text="b", meta=meta)

    def test_meta_that_holds_itself_is_refused(self):
        """A raw RecursionError from the key check."""
        loop: dict = {}
        loop["self"] = loop
        with pytest.raises(WorkbenchError, match=r"Trace\.meta holds itself"):
            wb.Trace(ids=torch.tensor([5, 6]), tokens=["a", "b"], prompt_len=1, text="b", meta=loop)

    @pytest.mark.parametrize(
        "field, value",
        [
            ("prompt_len", 2.7),  # was truncated to 2
            ("prompt_len", True),  # was read as 1
            ("ids", [5.5, 6.0, 7.0, 8.0]),  # was truncated to [5, 6, 7, 8]
            ("ids", [True, 6, 7, 8]),
            ("tokens", "abcd"),  # was split into characters
            ("text", None),  # loaded, then failed in repr
            ("meta", "abc"),
        ],
    )
    def test_a_field_of_the_wrong_type_is_refused_not_converted(self, tmp_path, field, value):
        """A damaged or hand-edited file is refused, never read as another trace."""
        good = wb.Trace(ids=torch.tensor([5, 6, 7, 8]), tokens=list("abcd"), prompt_len=2, text="")
        path = tmp_path / "t.json"
        path.write_text(json.dumps({**good.to_dict(), field: value}))
        with pytest.raises(WorkbenchError, match=rf"malformed field\(s\) \['{field}'\]"):
            wb.Trace.load(path)

    def test_an_id_too_large_for_int64_is_a_clear_error(self):
        d = {"ids": [2**70, 1], "tokens": ["a", "b"], "prompt_len": 1}
        with pytest.raises(WorkbenchError, match="not a saved trace"):
            wb.Trace.from_dict(d)

    def test_a_saved_trace_names_its_format_and_old_files_without_one_still_load(self, tmp_path):
        good = wb.Trace(ids=torch.tensor([5, 6, 7]), tokens=list("abc"), prompt_len=1, text="c")
        saved = json.loads(good.save(tmp_path / "t.json").read_text())
        assert saved["format"] == "workbench-trace/1"
        del saved["format"]  # a file from before the field
        assert wb.Trace.from_dict(saved).tokens == list("abc")

    @pytest.mark.parametrize(
        "changes, words",
        [
            ({"format": "workbench-trace/2"}, "has format 'workbench-trace/2'"),
            ({"logprobs": [0.1, 0.2, 0.3]}, r"unknown field\(s\) \['logprobs'\]"),
        ],
    )
    def test_a_later_format_or_an_unknown_field_is_refused_not_dropped(
        self, tmp_path, changes, words
    ):
        """A field this version does not know was read and dropped without a word."""
        good = wb.Trace(ids=torch.tensor([5, 6, 7]), tokens=list("abc"), prompt_len=1, text="c")
        path = tmp_path / "t.json"
        path.write_text(json.dumps({**good.to_dict(), **changes}))
        with pytest.raises(WorkbenchError, match=words):
            wb.Trace.load(path)

    @pytest.mark.parametrize("dtype", [torch.int32, torch.uint8, torch.int16])
    def test_ids_are_int64_whatever_integer_type_they_came_in(self, tmp_path, dtype):
        """The docstring promises int64; int32 ids stayed int32 until a save and load."""
        t = wb.Trace(ids=torch.tensor([5, 6, 7], dtype=dtype), tokens=list("abc"), prompt_len=1,
                     text="c")  # fmt: skip
        assert t.ids.dtype == torch.long
        assert torch.equal(wb.Trace.load(t.save(tmp_path / "t.json")).ids, t.ids)

    @pytest.mark.parametrize("n", [np.int64(2), torch.tensor(2)], ids=["numpy", "torch"])
    def test_an_integer_scalar_is_a_prompt_len(self, tmp_path, n):
        """A NumPy or torch integer is stored as an int (it was refused as 'outside 1..4')."""
        t = wb.Trace(ids=torch.tensor([5, 6, 7, 8]), tokens=list("abcd"), prompt_len=n, text="")
        assert type(t.prompt_len) is int and t.prompt_len == 2
        assert wb.Trace.load(t.save(tmp_path / "t.json")).prompt_len == 2

    def test_bool_ids_and_non_text_fields_are_refused(self):
        with pytest.raises(WorkbenchError, match=r"torch\.bool"):
            wb.Trace(ids=torch.ones(2, dtype=torch.bool), tokens=["a", "b"], prompt_len=1, text="")
        with pytest.raises(WorkbenchError, match=r"Trace\.text must be a string"):
            wb.Trace(ids=torch.tensor([1, 2]), tokens=["a", "b"], prompt_len=1, text=None)

    def test_saving_where_it_cannot_is_a_clear_error_and_writes_nothing(self, tmp_path):
        t = wb.Trace(ids=torch.tensor([5, 6]), tokens=["a", "b"], prompt_len=1, text="b")
        with pytest.raises(WorkbenchError, match="it is a folder"):
            t.save(tmp_path)
        (tmp_path / "a-file").write_text("x")
        with pytest.raises(WorkbenchError, match="cannot save the trace to"):
            t.save(tmp_path / "a-file" / "t.json")
        odd = wb.Trace(
            ids=torch.tensor([5, 6]), tokens=["a", "b"], prompt_len=1, text="b",
            meta={"loss": torch.tensor(0.5)},
        )  # fmt: skip
        with pytest.raises(WorkbenchError, match="meta holds a value JSON cannot store"):
            odd.save(tmp_path / "odd.json")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]

    @pytest.mark.parametrize(
        "changes, words",
        [
            ({"tokens": None}, "Trace.tokens must be a list of strings, got NoneType"),  # len()
            ({"tokens": [1, 2]}, "got a list holding 1"),  # saved a file load refused
            ({"tokens": "ab"}, "got str"),
            ({"meta": None}, "Trace.meta must be a dict"),  # to_dict: dict(None)
            ({"meta": [("a", 1)]}, "Trace.meta must be a dict"),
        ],
    )
    def test_tokens_and_meta_of_the_wrong_type_are_refused(self, changes, words):
        fields = {"ids": torch.tensor([5, 6]), "tokens": ["a", "b"], "prompt_len": 1, "text": ""}
        with pytest.raises(WorkbenchError, match=words):
            wb.Trace(**{**fields, **changes})
        t = wb.Trace(**{**fields, "tokens": ("a", "b")})  # a tuple is kept as a list
        assert t.tokens == ["a", "b"] and wb.Trace.from_dict(t.to_dict()).tokens == ["a", "b"]

    @pytest.mark.parametrize("path", [None, 3, ""])
    def test_a_path_that_is_not_a_path_is_named(self, path):
        t = wb.Trace(ids=torch.tensor([5, 6]), tokens=["a", "b"], prompt_len=1, text="b")
        with pytest.raises(WorkbenchError, match=r"Trace\.save\'s path must be a file path"):
            t.save(path)  # was "expected str, bytes or os.PathLike object"
        with pytest.raises(WorkbenchError, match=r"Trace\.load\'s path must be a file path"):
            wb.Trace.load(path)

    def test_a_file_nested_too_deeply_is_a_clear_error(self, tmp_path):
        """JSON nested deeper than Python's stack (a damaged file) failed with a raw
        RecursionError from json.loads instead of naming the file."""
        path = tmp_path / "deep.json"
        path.write_text("[" * 100_000 + "]" * 100_000)
        with pytest.raises(WorkbenchError, match=r"cannot read a trace from .*deep\.json"):
            wb.Trace.load(path)

    def test_complex_ids_are_refused(self):
        """Complex ids were accepted, their imaginary part dropped with only torch's warning."""
        ids = torch.tensor([5, 6], dtype=torch.complex64)
        with pytest.raises(WorkbenchError, match=r"complex64"):
            wb.Trace(ids=ids, tokens=["a", "b"], prompt_len=1, text="")

    def test_a_path_under_a_file_or_ending_in_a_slash_is_named(self, tmp_path):
        """A path under a file failed with the bare "File exists" (which file?), and
        ``"out/"`` wrote a file named ``out``."""
        t = wb.Trace(ids=torch.tensor([5, 6]), tokens=["a", "b"], prompt_len=1, text="b")
        (tmp_path / "a-file").write_text("x")
        with pytest.raises(WorkbenchError, match=r"a-file is a file, not a folder"):
            t.save(tmp_path / "a-file" / "sub" / "t.json")
        with pytest.raises(WorkbenchError, match="the trailing slash names a folder"):
            t.save(f"{tmp_path}/out/")
        assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


class TestGenerateArguments:
    """On the tiny reasoner (fast): arguments are normalised and checked before sampling."""

    def test_numpy_integer_settings_give_a_trace_that_saves(self, tiny, tmp_path):
        """`meta` records plain ints, so the trace saves (it held NumPy ints, and save failed
        with 'Object of type int64 is not JSON serializable')."""
        t = wb.generate(tiny, "12+7=", max_new_tokens=np.int64(4), seed=np.int64(3))
        assert type(t.meta["seed"]) is int and type(t.meta["max_new_tokens"]) is int
        back = wb.Trace.load(t.save(tmp_path / "t.json"))
        assert torch.equal(back.ids, t.ids) and back.meta == t.meta
        same = wb.generate(tiny, "12+7=", max_new_tokens=4, seed=3)
        assert torch.equal(same.ids, t.ids)

    def test_the_default_length_fits_the_models_context(self, tiny):
        """256 new tokens by default failed on the tiny models for any prompt (their context
        is 256 tokens); the default is what the context leaves, at most 256."""
        t = wb.generate(tiny, "12+7=", temperature=0)
        assert t.meta["max_new_tokens"] == tiny.cfg.n_ctx - t.prompt_len < 256
        assert len(t.ids) <= tiny.cfg.n_ctx
        with pytest.raises(WorkbenchError, match="context holds 256"):
            wb.generate(tiny, "1 " * 300, chat=False)  # a prompt that fills the context

    @pytest.mark.parametrize("max_new_tokens", [None, 3])
    def test_a_prompt_that_fills_the_context_is_named_as_such(self, tiny, max_new_tokens):
        """The fix said "lower max_new_tokens", which cannot help a prompt that fills the
        context by itself; without max_new_tokens the message named max_new_tokens=1, a
        value the caller never gave."""
        with pytest.raises(WorkbenchError, match="context holds 256") as e:
            wb.generate(tiny, "1" * 300, chat=False, max_new_tokens=max_new_tokens)
        assert "shorten the prompt: its 301 tokens leave no room" in e.value.fix
        assert "max_new_tokens=1 " not in str(e.value)

    @pytest.mark.parametrize("temperature", [1e-45, 1e-300])
    def test_a_temperature_that_overflows_the_logits_is_a_clear_error(self, tiny, temperature):
        # It failed inside torch: "probability tensor contains either inf, nan or element < 0".
        with pytest.raises(WorkbenchError, match="temperature=0 for greedy"):
            wb.generate(tiny, "12+7=", max_new_tokens=4, temperature=temperature)

    @pytest.mark.parametrize(
        "prompts, settings, words",
        [
            ([[1, 10**6]], {}, "outside the model's vocabulary"),  # was IndexError
            ([[]], {}, "prompt 0 is empty"),  # was "cannot reshape tensor of 0 elements"
            ([[1, 5]], {"max_new_tokens": -1}, "max_new_tokens must be at least 1"),
            ([[1, 5]], {"temperature": 0}, "temperature must be in"),  # transformers' error
            ([[1, 5]], {"batch_limit": 0}, "batch_limit must be at least 1"),  # range() error
            ([[1, 5]], {"temperature": 1e-45}, "greedy=True"),  # NaN probabilities in torch
        ],
    )
    @pytest.mark.parametrize("decoder", ["lean", "hf"])
    def test_bad_sample_completions_arguments_are_named(
        self, tiny, prompts, settings, words, decoder
    ):
        from workbench.trace import sample_completions

        with pytest.raises(WorkbenchError, match=words):
            sample_completions(tiny, prompts, decoder=decoder, **{"max_new_tokens": 3, **settings})

    @pytest.mark.parametrize(
        "call, words",
        [
            # a truthy string switched the chat template (or greedy decoding) on
            (lambda m: wb.generate(m, "12+7=", max_new_tokens=2, chat="no"), "chat must be"),
            (lambda m: wb.generate(m, "12+7=", max_new_tokens=2, chat=None), "chat must be"),
            (lambda m: encode_prompt(m, "12+7=", chat="no"), "chat must be True or False"),
            (lambda m: wb.Trace.from_text(m, "12+7=", "19", chat="no"), "chat must be"),
            (lambda m: wb.trace.sample_completions(m, [[1, 5]], greedy="no"), "greedy must be"),
            (lambda m: wb.trace.sample_completions(m, None), "prompt_ids must be a list"),
            (lambda m: wb.trace.eos_token_ids(None), "expected a tokenizer"),
        ],
    )
    def test_flags_and_prompt_lists_of_the_wrong_type_are_named(self, tiny, call, words):
        with pytest.raises(WorkbenchError, match=words):
            call(tiny)

    def test_chat_is_recorded_as_the_prompt_was_encoded(self, tiny, smol):
        """chat=True on a tokenizer without a template (the tiny models') encodes the raw
        prompt, and the trace said chat: True; rebuilding it as told then differed."""
        for model, template in ((tiny, False), (smol, True)):
            made = wb.generate(model, "12+7=", max_new_tokens=2, chat=True)
            pasted = wb.Trace.from_text(model, "12+7=", "19", chat=True)
            assert made.meta["chat"] is template and pasted.meta["chat"] is template
            assert wb.Trace.from_text(model, "12+7=", "19", chat=False).meta["chat"] is False

    def test_chat_template_kwargs_reach_the_template_and_the_record(self, tiny, monkeypatch):
        """Qwen3's `enable_thinking=False` had no way in (a raw TypeError from generate)."""
        template = (
            "{% for m in messages %}Q: {{ m['content'] }}\n{% endfor %}"
            "{% if enable_thinking is defined and not enable_thinking %}no think {% endif %}A:"
        )
        monkeypatch.setattr(tiny.tokenizer, "chat_template", template)
        off = {"enable_thinking": False}
        made = wb.generate(tiny, "12+7=", max_new_tokens=2, chat_template_kwargs=off)
        pasted = wb.Trace.from_text(tiny, "12+7=", "19", chat_template_kwargs=off)
        plain = wb.Trace.from_text(tiny, "12+7=", "19")
        for t in (made, pasted):
            assert "no think" in "".join(t.tokens[: t.prompt_len])
            assert t.meta["chat_template_kwargs"] == off
        assert "no think" not in "".join(plain.tokens[: plain.prompt_len])
        assert "chat_template_kwargs" not in plain.meta
        assert (
            "chat_template_kwargs"
            not in wb.Trace.from_text(
                tiny, "12+7=", "19", chat=False, chat_template_kwargs=off
            ).meta
        )  # not applied, not recorded
        for bad, words in (([1], "must be a dict"), ({"f": print}, r"\['f'\] is a")):
            with pytest.raises(WorkbenchError, match=words):
                wb.generate(tiny, "12+7=", max_new_tokens=2, chat_template_kwargs=bad)

    @pytest.mark.parametrize("value", [float("nan"), float("inf")])
    def test_a_non_finite_template_variable_is_named_before_sampling(self, tiny, value):
        """A NaN in chat_template_kwargs was refused only after the whole generation, as
        "Trace.meta['chat_template_kwargs'] ... is a NaN", a field the caller never set."""
        with pytest.raises(WorkbenchError, match=r"chat_template_kwargs\['x'\] is (nan|inf)"):
            wb.generate(tiny, "12+7=", max_new_tokens=2, chat_template_kwargs={"x": value})

    def test_a_pasted_trace_too_long_for_the_model_names_what_to_shorten(self, tiny):
        # it said "lower max_new_tokens", an argument from_text does not have
        with pytest.raises(WorkbenchError, match="context holds") as e:
            wb.Trace.from_text(tiny, "1+2=", "3 " * 400)
        assert e.value.fix == "shorten the prompt or the response"

    def test_a_numpy_bool_chat_is_recorded_as_a_bool(self, tiny, tmp_path):
        # meta recorded np.True_, and the trace failed to save
        t = wb.generate(tiny, "12+7=", max_new_tokens=2, chat=np.bool_(True))
        assert type(t.meta["chat"]) is bool
        wb.Trace.load(t.save(tmp_path / "t.json"))


@pytest.mark.slow
class TestGenerate:
    def test_same_seed_same_trace_and_global_rng_untouched(self, smol):
        torch.manual_seed(123)
        before = torch.rand(1)
        torch.manual_seed(123)
        a = wb.generate(smol, PROMPT, max_new_tokens=12, temperature=1.0, seed=7)
        after = torch.rand(1)
        b = wb.generate(smol, PROMPT, max_new_tokens=12, temperature=1.0, seed=7)
        assert torch.equal(a.ids, b.ids) and a.text == b.text
        assert torch.equal(before, after)

    def test_different_seeds_sample_different_traces(self, smol):
        traces = [
            wb.generate(smol, PROMPT, max_new_tokens=12, temperature=1.0, seed=s) for s in range(3)
        ]
        assert len({tuple(t.response_ids.tolist()) for t in traces}) > 1

    def test_boundary_is_the_chat_prompt(self, smol):
        t = wb.generate(smol, PROMPT, max_new_tokens=8, temperature=0.0)
        prompt_ids = encode_prompt(smol, PROMPT)
        assert t.ids[: t.prompt_len].tolist() == prompt_ids
        assert "".join(t.tokens[: t.prompt_len]).endswith("<|im_start|>assistant\n")
        assert PROMPT in "".join(t.tokens[: t.prompt_len])
        assert 1 <= t.response_len <= 8
        assert len(t.tokens) == len(t.ids)

    def test_stops_at_end_of_sequence(self, smol):
        t = wb.generate(smol, "Say hi.", max_new_tokens=64, temperature=0.0)
        assert t.response_len < 64
        assert t.ids[-1].item() == smol.tokenizer.eos_token_id
        assert (t.response_ids[:-1] != smol.tokenizer.eos_token_id).all()
        assert "<|im_end|>" not in t.text

    def test_raw_prompt_without_chat_template(self, smol):
        t = wb.generate(
            smol, "The capital of France is", max_new_tokens=4, temperature=0, chat=False
        )
        assert (
            t.ids[: t.prompt_len].tolist()
            == smol.tokenizer("The capital of France is")["input_ids"]
        )
        assert "assistant" not in "".join(t.tokens[: t.prompt_len])

    def test_bad_arguments(self, smol):
        with pytest.raises(WorkbenchError, match="prompt is empty"):
            wb.generate(smol, "   ", max_new_tokens=4)
        with pytest.raises(WorkbenchError, match="context holds 8192"):
            wb.generate(smol, PROMPT, max_new_tokens=10_000)
        with pytest.raises(WorkbenchError, match="max_new_tokens must be at least 1"):
            wb.generate(smol, PROMPT, max_new_tokens=0)
        with pytest.raises(WorkbenchError, match="top_p"):
            wb.generate(smol, PROMPT, max_new_tokens=4, top_p=0)


@pytest.mark.slow
class TestFromText:
    def test_response_tokens_follow_the_prompt(self, smol):
        t = wb.Trace.from_text(smol, PROMPT, "7 + 5 = 12. The answer is 12.")
        assert t.ids[: t.prompt_len].tolist() == encode_prompt(smol, PROMPT)
        assert "".join(t.response_tokens) == "7 + 5 = 12. The answer is 12."
        assert t.text == "7 + 5 = 12. The answer is 12."

    def test_matches_a_generated_trace(self, smol):
        g = wb.generate(smol, PROMPT, max_new_tokens=10, temperature=0.0)
        t = wb.Trace.from_text(smol, PROMPT, g.text)
        assert t.prompt_len == g.prompt_len
        assert t.ids[: t.prompt_len].tolist() == g.ids[: g.prompt_len].tolist()

    def test_empty_response_and_overlong_trace(self, smol):
        with pytest.raises(WorkbenchError, match="response is empty"):
            wb.Trace.from_text(smol, PROMPT, "")
        with pytest.raises(WorkbenchError, match="context holds"):
            wb.Trace.from_text(smol, PROMPT, "word " * 9000)

    def test_text_that_is_not_a_str_is_named(self, smol):
        """Both were called "empty"."""
        with pytest.raises(WorkbenchError, match="the response must be text, got list"):
            wb.Trace.from_text(smol, PROMPT, [7, 5])
        with pytest.raises(WorkbenchError, match="the prompt must be text, got NoneType"):
            wb.Trace.from_text(smol, None, "12")


class TestDegeneracy:
    def _trace(self, response: list[int]) -> wb.Trace:
        ids = torch.tensor([1, 2, *response])
        return wb.Trace(ids=ids, tokens=["x"] * len(ids), prompt_len=2, text="1-----")

    def test_a_repeated_token_is_degenerate(self):
        broken = [16, *([17] * 40)]  # "1-----...", as a cache-blind sampler wrote it
        assert wb.trace.degeneracy(broken) == {"n": 41, "distinct_share": 2 / 41, "longest_run": 40}
        with pytest.raises(WorkbenchError, match="degenerate"):
            wb.trace.check_not_degenerate(self._trace(broken))

    def test_varied_text_and_short_answers_pass(self):
        varied = [i % 9 + 10 for i in range(60)]  # 9 distinct tokens, no runs
        wb.trace.check_not_degenerate(self._trace(varied))
        wb.trace.check_not_degenerate(self._trace([5] * 10))  # too short to judge

    def test_a_long_run_inside_varied_text_is_degenerate(self):
        ids = list(range(10, 60)) + [7] * 13
        with pytest.raises(WorkbenchError, match="13 times in a row"):
            wb.trace.check_not_degenerate(self._trace(ids))

    @pytest.mark.parametrize(
        "ids, words",
        [
            ([1.5, 1.7, 2.2], "integer token ids"),  # truncated: 1.5 and 1.7 one token
            (None, "integer token ids"),
            ("abc", "integer token ids"),
            (torch.ones(2, 3, dtype=torch.long), "1-D"),
        ],
    )
    def test_degeneracy_of_what_is_not_token_ids_is_named(self, ids, words):
        with pytest.raises(WorkbenchError, match=words):
            wb.trace.degeneracy(ids)
        assert wb.trace.degeneracy(np.array([3, 3, 4]))["longest_run"] == 2

    @pytest.mark.parametrize(
        "settings, words",
        [
            ({"min_distinct": float("nan")}, "min_distinct must be a finite number"),  # off
            ({"min_tokens": "16"}, "min_tokens must be an integer"),
            ({"max_run": None}, "max_run must be an integer"),
        ],
    )
    def test_check_settings_are_checked(self, settings, words):
        varied = [i % 9 + 10 for i in range(60)]
        with pytest.raises(WorkbenchError, match=words):
            wb.trace.check_not_degenerate(self._trace(varied), **settings)
        with pytest.raises(WorkbenchError, match=r"expected a wb\.Trace"):
            wb.trace.check_not_degenerate(None)


def _small_trace(**meta):
    return wb.Trace(ids=torch.tensor([1, 2, 3]), tokens=list("abc"), prompt_len=1, text="c",
                    meta=meta)  # fmt: skip


def test_one_check_says_what_is_not_a_trace():
    """`check_trace` / `check_traces`: the one check of "is this a wb.Trace" (it was spelt
    in six places)."""
    from workbench.trace import check_trace, check_traces

    trace = _small_trace()
    assert check_trace(trace) is trace
    with pytest.raises(WorkbenchError, match=r"expected a wb\.Trace, got NoneType") as e:
        check_trace(None, "pass the trace")
    assert e.value.fix == "pass the trace"
    assert check_traces((t for t in [trace]), caller="f") == [trace]
    with pytest.raises(WorkbenchError, match=r"traces\[1\] is a str, not a wb.Trace"):
        check_traces([trace, "text"], caller="f")
    for single in (trace, None, "a", 7):
        with pytest.raises(WorkbenchError, match=r"f: traces must be a list of wb\.Trace") as e:
            check_traces(single, caller="f")
        assert "f(model, [trace])" in e.value.fix
    with pytest.raises(WorkbenchError, match="f got no traces"):
        check_traces([], caller="f")
    assert check_traces([], caller="f", allow_empty=True) == []


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), np.float64("-inf")])
def test_a_non_finite_meta_value_is_refused_naming_its_key(tmp_path, bad):
    """NaN was written as the bare word NaN, which JSON.parse (JupyterLab) cannot read."""
    with pytest.raises(WorkbenchError, match=r"Trace.meta\['loss'\] is a NaN or infinite"):
        _small_trace(loss=bad)
    with pytest.raises(WorkbenchError, match=r"Trace.meta\['stats'\]\[1\]"):
        _small_trace(stats=[0.5, bad])
    trace = _small_trace(loss=1.0)
    trace.meta["loss"] = bad  # meta is a dict: changed after construction
    target = tmp_path / "t.json"
    with pytest.raises(WorkbenchError, match=r"meta\['loss'\]") as e:
        trace.save(target)
    assert "finite" in e.value.fix and not target.exists()
    trace.meta["loss"] = None
    trace.save(target)
    assert json.loads(target.read_text())["meta"] == {"loss": None}
