"""Model folders of real architectures, made here: a model's config, random weights from
from_config, and a small BPE tokenizer trained with `tokenizers`. Nothing is downloaded.

Scale claims are measured on these (scripts/real_shape_runs.py, scripts/gpu_check.py); the tests
use the same architecture at a few layers (QWEN2_SMALL: GQA, tied embeddings, a vocabulary of
tens of thousands) so that the tiny GPT-2 default is not the only model the suite sees.

    python -m tests.real_shape qwen2.5-0.5b /tmp/qwen05            # a policy folder
    python -m tests.real_shape qwen2.5-0.5b /tmp/rm --reward-model  # a reward model of that shape
"""

import argparse
import random
import string
from pathlib import Path

import torch

# Qwen2.5's published configs (hidden, layers, heads, KV heads, intermediate, vocabulary, ties).
QWEN25 = {
    "qwen2.5-0.5b": dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2, tie_word_embeddings=True),
    "qwen2.5-1.5b": dict(hidden_size=1536, intermediate_size=8960, num_hidden_layers=28, num_attention_heads=12, num_key_value_heads=2, tie_word_embeddings=True),
    "qwen2.5-3b": dict(hidden_size=2048, intermediate_size=11008, num_hidden_layers=36, num_attention_heads=16, num_key_value_heads=2, tie_word_embeddings=True),
    "qwen2.5-7b": dict(hidden_size=3584, intermediate_size=18944, num_hidden_layers=28, num_attention_heads=28, num_key_value_heads=4, tie_word_embeddings=False),
}
QWEN_COMMON = dict(vocab_size=151_936, max_position_embeddings=32_768, rope_theta=1_000_000.0, rms_norm_eps=1e-6, hidden_act="silu")
# The same architecture, small: 2 layers, GQA (4 query heads of 32 on 2 KV heads), tied embeddings.
QWEN2_SMALL = dict(hidden_size=128, intermediate_size=352, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                   tie_word_embeddings=True, vocab_size=32_000, max_position_embeddings=1024, rope_theta=10_000.0)

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHAT_TEMPLATE = (
    "{% for m in messages %}<|im_start|>{{ m['role'] }}\n{{ m['content'] }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)


def corpus(lines: int = 4000, seed: int = 0) -> list[str]:
    """Deterministic text for training a tokenizer: words of letters, digits and punctuation."""
    rng = random.Random(seed)
    words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(1, 9))) for _ in range(3000)]
    out = []
    for _ in range(lines):
        line = " ".join(rng.choice(words) for _ in range(rng.randint(3, 16)))
        out.append(line + rng.choice([".", "?", "!", ",", " =", " 42.", ""]))
    return out


def build_tokenizer(vocab_size: int = 2000, seed: int = 0):
    """A byte-level BPE tokenizer of `vocab_size` ids (<|endoftext|> is EOS and padding) with a
    ChatML template, as a transformers fast tokenizer."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(corpus(seed=seed), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|endoftext|>", pad_token="<|endoftext|>")
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def qwen2_config(shape: dict, tokenizer, **extra):
    from transformers import Qwen2Config

    fields = {**QWEN_COMMON, **shape, **extra}
    return Qwen2Config(**fields, bos_token_id=None, eos_token_id=tokenizer.eos_token_id, pad_token_id=tokenizer.pad_token_id)


def write_model_folder(folder: Path, shape: dict, *, reward_model: bool = False, dtype=torch.bfloat16, seed: int = 0, tokenizer_vocab: int = 2000) -> Path:
    """A Qwen2 causal LM (or, `reward_model`, a sequence classifier with num_labels=1) of `shape`
    with random weights in `dtype`, and the tokenizer, saved as from_pretrained reads them."""
    from transformers import Qwen2ForCausalLM, Qwen2ForSequenceClassification

    folder = Path(folder)
    tokenizer = build_tokenizer(tokenizer_vocab)
    torch.manual_seed(seed)
    if reward_model:
        model = Qwen2ForSequenceClassification(qwen2_config(shape, tokenizer, num_labels=1))
    else:
        model = Qwen2ForCausalLM(qwen2_config(shape, tokenizer))
    model.to(dtype).save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    return folder


def write_prompts(path: Path, count: int, words: int, seed: int = 0) -> Path:
    """`count` prompts of a third of `words` up to `words` words each (so a batch has padding), one
    JSON object per line."""
    import json

    rng = random.Random(seed)
    lines = corpus(lines=count * 4, seed=seed + 1)
    with open(path, "w", encoding="utf-8") as handle:
        for i in range(count):
            text = " ".join(" ".join(lines[(4 * i + k) % len(lines)] for k in range(4)).split()[: rng.randint(max(1, words // 3), words)])
            handle.write(json.dumps({"prompt": text + rng.choice(["?", " ="])}) + "\n")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a Qwen2.5-shaped model folder with random weights (nothing downloaded).")
    parser.add_argument("shape", choices=sorted(QWEN25) + ["small"])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--reward-model", action="store_true")
    parser.add_argument("--dtype", default="bfloat16", choices=["bfloat16", "float32"])
    args = parser.parse_args()
    shape = QWEN2_SMALL if args.shape == "small" else QWEN25[args.shape]
    write_model_folder(args.folder, shape, reward_model=args.reward_model, dtype=getattr(torch, args.dtype))
    print(args.folder)


if __name__ == "__main__":
    main()


def length_reward(prompts, responses, **kwargs):
    """A reward function for runs at real shapes: short responses score higher (what it rewards does
    not matter there; that it is cheap and deterministic does)."""
    return [1.0 / (1.0 + len(response)) for response in responses]
