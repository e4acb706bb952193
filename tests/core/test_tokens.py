"""The text of each token: what it adds to the decoded sequence, on every tokenizer family."""

from __future__ import annotations

import warnings

import pytest
import torch
from tokenizers import Tokenizer, decoders, models, normalizers
from transformers import PreTrainedTokenizerFast

import workbench as wb
from workbench.trace.tokens import UTF8_MAX_BYTES, UnknownTokensWarning, token_strings

REPLACEMENT = "\ufffd"


@pytest.fixture(scope="module")
def sentencepiece():
    """A Llama-2-style tokenizer built offline: "▁" marks a space, characters outside the
    vocabulary fall back to bytes, and the decoder strips the first leading space (the
    decoder of Llama 2, Mistral and Phi-3)."""
    vocab = {"<unk>": 0, "<s>": 1, "</s>": 2}
    vocab.update({f"<0x{i:02X}>": 3 + i for i in range(256)})
    pieces = ["▁", "T", "h", "e", "c", "a", "t", "s", "▁T", "he", "at", "▁c", "▁s"]
    pieces += ["▁The", "▁cat", "▁sat"]
    for piece in pieces:
        vocab.setdefault(piece, len(vocab))
    merges = [("▁", "T"), ("h", "e"), ("a", "t"), ("▁", "c"), ("▁", "s")]
    merges += [("▁T", "he"), ("▁c", "at"), ("▁s", "at")]
    model = models.BPE(vocab=vocab, merges=merges, byte_fallback=True, unk_token="<unk>")
    tok = Tokenizer(model)
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence(
        [
            decoders.Replace("▁", " "),
            decoders.ByteFallback(),
            decoders.Fuse(),
            decoders.Strip(" ", 1, 0),
        ]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>"
    )


def test_sentencepiece_tokens_keep_the_space_before_each_word(sentencepiece):
    """Decoded one at a time, "▁cat" lost its space and the words ran together."""
    ids = sentencepiece("The cat sat 猫", add_special_tokens=False)["input_ids"]
    assert [sentencepiece.decode([i]) for i in ids][:3] == ["The", "cat", "sat"]  # the bug
    got = token_strings(sentencepiece, ids)
    assert got == ["The", " cat", " sat", " ", "", "", "猫"]
    assert "".join(got) == sentencepiece.decode(ids) == "The cat sat 猫"


def test_a_character_split_into_bytes_belongs_to_the_piece_that_completes_it(smol):
    """SmolLM2 spells " 猫" and " 🐱" in several byte-level pieces; each decoded alone is
    U+FFFD. The character now shows once, on its last piece, and the others add ""."""
    tokenizer = smol.tokenizer
    text = "The cat 猫 sat on 🐱, émigré.\n\nAnswer: 42"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    alone = [tokenizer.decode([i]) for i in ids]
    assert REPLACEMENT in "".join(alone)  # the bug
    got = token_strings(tokenizer, ids)
    assert "".join(got) == tokenizer.decode(ids) == text
    assert REPLACEMENT not in "".join(got)
    assert got.count("") == sum(REPLACEMENT in a for a in alone) - 2  # two completing pieces
    assert [g for g, a in zip(got, alone, strict=True) if REPLACEMENT not in a] == [
        a for a in alone if REPLACEMENT not in a
    ], "whole tokens read as before"


def test_a_character_cut_off_at_the_end_keeps_what_the_tokenizer_gives(smol):
    tokenizer = smol.tokenizer
    ids = tokenizer("cat 猫", add_special_tokens=False)["input_ids"][
        :-1
    ]  # the character's last piece cut off
    got = token_strings(tokenizer, ids)
    assert "".join(got) == tokenizer.decode(ids) and got[-1].endswith(REPLACEMENT)


@pytest.mark.slow
def test_a_trace_of_text_with_split_characters_spells_its_response(smol):
    response = "猫 is cat; 🐱 too. Answer: 3"
    trace = wb.Trace.from_text(smol, "Name the animal.", response)
    assert "".join(trace.response_tokens) == response
    assert REPLACEMENT not in "".join(trace.tokens)


def test_bytes_that_never_complete_a_character_cost_no_more_than_whole_tokens(smol):
    """A broken sampler's run of stray continuation bytes: each piece is held at most
    four pieces (the longest UTF-8 character), so the decode windows stay short."""
    tokenizer = smol.tokenizer
    # GPT-2's byte-to-symbol table: printable bytes stand for themselves, the others
    # take 256, 257, ... in order; 0x80, a continuation byte, is the 35th of those.
    printable = [*range(33, 127), *range(161, 173), *range(174, 256)]
    symbol = chr(256 + [b for b in range(256) if b not in printable].index(0x80))
    stray = tokenizer.convert_tokens_to_ids(symbol)
    ids = [stray] * 2000
    assert tokenizer.decode(ids[:3]) == REPLACEMENT * 3  # never a character
    calls = []
    decode = tokenizer.decode

    class Counting:
        def decode(self, window):
            calls.append(len(window))
            return decode(window)

    got = token_strings(Counting(), ids)
    assert "".join(got) == decode(ids) and max(calls) <= 2 * UTF8_MAX_BYTES


def test_text_the_tokenizer_cannot_encode_is_named_not_dropped(tiny, smol):
    """The tiny models' character tokenizer turned a tab or an accented letter into <unk>
    without a word (it decodes to nothing); the unknown token written out is not counted,
    nor a GPT-2-style tokenizer's special token typed into the text."""
    with pytest.warns(UnknownTokensWarning, match=r"2 token\(s\) of the prompt are the tokeni"):
        wb.Trace.from_text(tiny, "12+7=\tcafé", "19", chat=False)
    with pytest.warns(UnknownTokensWarning, match=r"1 token\(s\) of the response"):
        wb.Trace.from_text(tiny, "12+7=", "19 <unk>\r", chat=False)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wb.Trace.from_text(tiny, "12+7=", "19 <unk>", chat=False)
        wb.Trace.from_text(smol, "What is café? \t", "It is a café <|endoftext|>")


@pytest.mark.parametrize(
    "ids, words",
    [
        ([1.7], "integer token ids"),  # was truncated to 1, another token's text
        ([-1], "negative token id"),  # a raw OverflowError
        ("abc", "integer token ids"),  # a raw ValueError
        ([[1, 2]], "integer token ids"),
    ],
)
def test_ids_that_are_not_token_ids_are_named(sentencepiece, ids, words):
    """`token_strings` (public, `wb.trace.token_strings`) read anything `int()` takes."""
    with pytest.raises(wb.WorkbenchError, match=words):
        token_strings(sentencepiece, ids)
    with pytest.raises(wb.WorkbenchError, match="1-D"):
        token_strings(sentencepiece, torch.tensor([[1, 2]]))  # a raw ValueError
    assert token_strings(sentencepiece, torch.tensor([1, 2])) == ["<s>", "</s>"]
