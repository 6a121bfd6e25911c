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


def stop_token_ids(tokenizer: PreTrainedTokenizerBase, model_folder: str | None = None) -> tuple[int, ...]:
    """The ids a response ends at: the tokenizer's EOS, then every other EOS id the model's
    generation_config.json lists (Qwen2.5-Instruct: <|im_end|> and <|endoftext|>), as transformers'
    generate and vLLM stop at all of them."""
    ids = [tokenizer.eos_token_id]
    if model_folder:
        from transformers import GenerationConfig

        try:
            listed = GenerationConfig.from_pretrained(model_folder).eos_token_id
        except (OSError, ValueError):  # no generation_config.json (or not cached offline): the tokenizer's EOS alone
            listed = None
        for token in [listed] if isinstance(listed, int) else listed or []:
            if token is not None and token not in ids and 0 <= token < len(tokenizer):
                ids.append(int(token))
    return tuple(ids)


PAD_FALLBACK = "<|pad|>"


def distinct_pad(tokenizer: PreTrainedTokenizerBase, stop_ids: tuple[int, ...]) -> bool:
    """Give a tokenizer whose pad token is one of its EOS ids a pad of its own, so that transformers'
    sequence classifiers (which read the last token that is not the pad id) read a padded batch at the
    EOS a reward model was trained at: its unknown token, else an added token named like a pad, else
    a new PAD_FALLBACK token. True when a token was added (the model's embeddings must grow by one)."""
    if tokenizer.pad_token_id is not None and tokenizer.pad_token_id not in stop_ids:
        return False
    if tokenizer.unk_token_id is not None and tokenizer.unk_token_id not in stop_ids:
        tokenizer.pad_token = tokenizer.unk_token
        return False
    padlike = [t.content for i, t in sorted(tokenizer.added_tokens_decoder.items()) if "pad" in t.content.lower() and i not in stop_ids]
    if padlike:
        tokenizer.pad_token = padlike[0]
        return False
    tokenizer.add_special_tokens({"pad_token": PAD_FALLBACK})
    return True
