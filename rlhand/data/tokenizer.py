"""Tokenizers: a character-level one built locally, or a real one from a hub id / local path."""

import string

from transformers import AutoTokenizer, PreTrainedTokenizerBase, PreTrainedTokenizerFast

from rlhand.errors import ModelLoadError

SPECIAL_TOKENS = {"pad_token": "<pad>", "eos_token": "<eos>", "bos_token": "<bos>", "unk_token": "<unk>"}
# Printable ASCII, then tab, newline and carriage return (appended, so the older ids keep their
# meaning). Any other character is an error naming the prompt's line (data/prompts.py), never a
# silently dropped one.
CHARS = [c for c in string.printable if c not in "\t\n\r\x0b\x0c"] + ["\t", "\n", "\r"]


def build_char_tokenizer() -> PreTrainedTokenizerFast:
    """One token per character of CHARS plus <pad>=0, <eos>=1, <bos>=2, <unk>=3 (102 ids)."""
    return char_tokenizer(list(SPECIAL_TOKENS.values()) + CHARS)


def char_tokenizer(tokens: list[str]) -> PreTrainedTokenizerFast:
    """One token per character, ids in the order of `tokens` (the special tokens among them), BOS first."""
    from tokenizers import Regex, Tokenizer, decoders, models, pre_tokenizers, processors

    vocab = {tok: i for i, tok in enumerate(tokens)}
    core = Tokenizer(models.WordLevel(vocab=vocab, unk_token=SPECIAL_TOKENS["unk_token"]))
    # Every character on its own, line breaks included (a plain "." would skip them).
    core.pre_tokenizer = pre_tokenizers.Split(Regex(r"[\s\S]"), behavior="isolated")
    core.decoder = decoders.Fuse()
    bos = SPECIAL_TOKENS["bos_token"]
    core.post_processor = processors.TemplateProcessing(single=f"{bos} $A", special_tokens=[(bos, vocab[bos])])
    return PreTrainedTokenizerFast(tokenizer_object=core, **SPECIAL_TOKENS)


def load_tokenizer(path: str, trust_remote_code: bool = False) -> PreTrainedTokenizerBase:
    tokenizer = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tokenizer.eos_token_id is None:
        raise ModelLoadError(f"tokenizer {path} has no eos token; rlhand needs one to end responses")
    if tokenizer.pad_token_id is None:
        # Masks are built from lengths and the first EOS, never from pad ids, so sharing is safe.
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer
