"""A tiny chat model folder, made here, for claims about data: a byte-level BPE tokenizer trained with
`tokenizers`, Qwen2.5's ChatML template (its tools block, tool calls and tool turns included; only
the default system message is shorter), and the traps real checkpoints bring:

- the pad token is the EOS (`<|im_end|>`), as in many Llama and Mistral fine-tunes;
- generation_config.json lists two EOS ids (`<|im_end|>` and `<|endoftext|>`), as Qwen2.5-Instruct's;
- no BOS and no unknown token (byte-level: every text has ids).

The model is a Qwen2 causal LM (or sequence classifier) of 2 small layers with random weights.
Nothing is downloaded.

    python -m tests.chat_model /tmp/chat            # a policy folder
"""

import argparse
import json
import random
import string
from pathlib import Path

import torch

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
DEFAULT_SYSTEM = "You are a helpful assistant."

# Qwen2.5-Instruct's chat template (tools, tool calls, tool responses), with a short default system message.
CHATML_WITH_TOOLS = (
    "{%- if tools %}\n"
    "    {{- '<|im_start|>system\\n' }}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- messages[0]['content'] }}\n"
    "    {%- else %}\n"
    "        {{- '" + DEFAULT_SYSTEM + "' }}\n"
    "    {%- endif %}\n"
    '    {{- "\\n\\n# Tools\\n\\nYou may call one or more functions to assist with the user query.\\n\\nYou are provided with function signatures within <tools></tools> XML tags:\\n<tools>" }}\n'
    "    {%- for tool in tools %}\n"
    '        {{- "\\n" }}\n'
    "        {{- tool | tojson }}\n"
    "    {%- endfor %}\n"
    '    {{- "\\n</tools>\\n\\nFor each function call, return a json object with function name and arguments within <tool_call></tool_call> XML tags:\\n<tool_call>\\n{\\"name\\": <function-name>, \\"arguments\\": <args-json-object>}\\n</tool_call><|im_end|>\\n" }}\n'
    "{%- else %}\n"
    "    {%- if messages[0]['role'] == 'system' %}\n"
    "        {{- '<|im_start|>system\\n' + messages[0]['content'] + '<|im_end|>\\n' }}\n"
    "    {%- else %}\n"
    "        {{- '<|im_start|>system\\n" + DEFAULT_SYSTEM + "<|im_end|>\\n' }}\n"
    "    {%- endif %}\n"
    "{%- endif %}\n"
    "{%- for message in messages %}\n"
    '    {%- if (message.role == "user") or (message.role == "system" and not loop.first) or (message.role == "assistant" and not message.tool_calls) %}\n'
    "        {{- '<|im_start|>' + message.role + '\\n' + message.content + '<|im_end|>' + '\\n' }}\n"
    '    {%- elif message.role == "assistant" %}\n'
    "        {{- '<|im_start|>' + message.role }}\n"
    "        {%- if message.content %}\n"
    "            {{- '\\n' + message.content }}\n"
    "        {%- endif %}\n"
    "        {%- for tool_call in message.tool_calls %}\n"
    "            {%- if tool_call.function is defined %}\n"
    "                {%- set tool_call = tool_call.function %}\n"
    "            {%- endif %}\n"
    "            {{- '\\n<tool_call>\\n{\"name\": \"' }}\n"
    "            {{- tool_call.name }}\n"
    "            {{- '\", \"arguments\": ' }}\n"
    "            {{- tool_call.arguments | tojson }}\n"
    "            {{- '}\\n</tool_call>' }}\n"
    "        {%- endfor %}\n"
    "        {{- '<|im_end|>\\n' }}\n"
    '    {%- elif message.role == "tool" %}\n'
    '        {%- if (loop.index0 == 0) or (messages[loop.index0 - 1].role != "tool") %}\n'
    "            {{- '<|im_start|>user' }}\n"
    "        {%- endif %}\n"
    "        {{- '\\n<tool_response>\\n' }}\n"
    "        {{- message.content }}\n"
    "        {{- '\\n</tool_response>' }}\n"
    '        {%- if loop.last or (messages[loop.index0 + 1].role != "tool") %}\n'
    "            {{- '<|im_end|>\\n' }}\n"
    "        {%- endif %}\n"
    "    {%- endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}\n"
    "    {{- '<|im_start|>assistant\\n' }}\n"
    "{%- endif %}\n"
)

SMALL = dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=512, rope_theta=10_000.0, tie_word_embeddings=True)


def corpus(lines: int = 2000, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    words = ["".join(rng.choice(string.ascii_lowercase) for _ in range(rng.randint(1, 7))) for _ in range(800)]
    words += ["system", "user", "assistant", "helpful", "You", "are", "a", "answer", "What", "is", "the", "tool_call", "tool_response"]
    return [" ".join(rng.choice(words) for _ in range(rng.randint(2, 12))) + rng.choice([".", "?", " =", " 42.", "\n"]) for _ in range(lines)]


def build_chat_tokenizer(vocab_size: int = 600, seed: int = 0):
    """Byte-level BPE of `vocab_size` ids with ChatML's special tokens; EOS = pad = <|im_end|>."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(vocab_size=vocab_size, special_tokens=SPECIALS, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False)
    core.train_from_iterator(corpus(seed=seed), trainer=trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, eos_token="<|im_end|>", pad_token="<|im_end|>", additional_special_tokens=["<|im_start|>", "<|endoftext|>"])
    tokenizer.chat_template = CHATML_WITH_TOOLS
    return tokenizer


def write_chat_model(folder: Path, *, reward_model: bool = False, seed: int = 0, shape: dict | None = None) -> Path:
    """A Qwen2 causal LM (or a one-label sequence classifier) with the chat tokenizer, and a
    generation_config.json listing both EOS ids, saved as from_pretrained reads them."""
    from transformers import GenerationConfig, Qwen2Config, Qwen2ForCausalLM, Qwen2ForSequenceClassification

    folder = Path(folder)
    tokenizer = build_chat_tokenizer(seed=seed)
    eos = [tokenizer.convert_tokens_to_ids("<|im_end|>"), tokenizer.convert_tokens_to_ids("<|endoftext|>")]
    config = Qwen2Config(**(shape or SMALL), vocab_size=len(tokenizer), bos_token_id=None, eos_token_id=eos[0], pad_token_id=tokenizer.pad_token_id, num_labels=1)
    torch.manual_seed(seed)
    model = (Qwen2ForSequenceClassification if reward_model else Qwen2ForCausalLM)(config)
    model.save_pretrained(folder)
    tokenizer.save_pretrained(folder)
    if not reward_model:
        GenerationConfig(eos_token_id=eos, pad_token_id=tokenizer.pad_token_id).save_pretrained(folder)
    return folder


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    path.write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a tiny ChatML chat model folder (random weights; nothing downloaded).")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--reward-model", action="store_true")
    args = parser.parse_args()
    print(write_chat_model(args.folder, reward_model=args.reward_model))


if __name__ == "__main__":
    main()
