"""The tiny reasoner's character-level tokenizer, in Hugging Face format.

One token per character of a fixed alphabet (digits, ``+ - * / ( ) = > :``, space, newline,
ASCII letters and a little punctuation) plus four special tokens: ``<pad>`` (id 0), ``<s>``
(bos, id 1, prepended to every encoding so position 0 is an attention sink), ``</s>`` (eos,
id 2) and ``<unk>`` (id 3, any other character). Built with the `tokenizers` library and
wrapped as `PreTrainedTokenizerFast`, so `AutoTokenizer.from_pretrained` loads it offline.

Caveat: there is no chat template; prompts are plain text (see `workbench.tasks`).
"""

from __future__ import annotations

import string

from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors
from transformers import PreTrainedTokenizerFast

__all__ = ["ALPHABET", "SPECIAL_TOKENS", "build_tokenizer"]

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>")
ALPHABET = "\n " + string.digits + "+-*/()=>:.,?!" + string.ascii_letters


def build_tokenizer() -> PreTrainedTokenizerFast:
    """Build the character-level tokenizer.

    Returns:
        A `PreTrainedTokenizerFast` with bos/eos/pad/unk set, right padding, and ``<s>``
        prepended to every encoded text. Save it with `save_pretrained`.
    """
    vocab = {tok: i for i, tok in enumerate(SPECIAL_TOKENS)}
    for ch in ALPHABET:
        vocab[ch] = len(vocab)
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    tok.decoder = decoders.Fuse()
    tok.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        pad_token="<pad>",
        unk_token="<unk>",
        clean_up_tokenization_spaces=False,
        model_max_length=256,
    )
