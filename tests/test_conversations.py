"""Conversations rendered by a real chat template (tests/chat_model.py: Qwen2.5's ChatML with tools,
pad = EOS), and the trained tokens of SFT against masks built by hand, piece by piece: for ChatML,
for a template that writes text between turns, and for one that marks its assistant spans with
{% generation %}."""

import pytest

from rlhand.config.schema import ChatTemplate, Truncation
from rlhand.config.stages import LossOn
from rlhand.data.conversations import ConversationError, assistant_spans, messages, prompt_ids, trained_span
from rlhand.data.demonstrations import rendered_example
from rlhand.data.files import DataError
from rlhand.data.prompts import Prompt, encode_prompts
from tests.chat_model import DEFAULT_SYSTEM, build_chat_tokenizer

# A template with text between turns and after the end of a turn ("\n\n"), <|endoftext|> closing a reply.
PLAIN = (
    "{% for m in messages %}{% if m['role'] == 'system' %}{{ m['content'] }}\n\n{% elif m['role'] == 'user' %}### User:\n{{ m['content'] }}\n"
    "{% elif m['role'] == 'assistant' %}### Assistant:\n{{ m['content'] }}<|endoftext|>\n\n{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}### Assistant:\n{% endif %}"
)
# The same, with the assistant's reply (and its end of turn) marked for transformers' assistant mask.
# (jinja's trim_blocks would eat a newline written right after a block tag: the newlines are an expression)
MARKED = PLAIN.replace("{{ m['content'] }}<|endoftext|>\n\n", "{% generation %}{{ m['content'] }}<|endoftext|>{% endgeneration %}{{ '\\n\\n' }}")

CHAT = [
    {"role": "user", "content": "What is two and two?"},
    {"role": "assistant", "content": "four"},
    {"role": "user", "content": "and three more?"},
    {"role": "assistant", "content": "seven"},
]


@pytest.fixture(scope="module")
def tok():
    return build_chat_tokenizer()


def stops(tok):
    return (tok.convert_tokens_to_ids("<|im_end|>"), tok.convert_tokens_to_ids("<|endoftext|>"))


def pieces_to_ids(tok, pieces):
    """(ids, mask): each piece (text, trained) tokenized on its own; a special token's text is its id."""
    ids, mask = [], []
    specials = set(tok.all_special_tokens)
    for text, trained in pieces:
        part = [tok.convert_tokens_to_ids(text)] if text in specials else tok(text, add_special_tokens=False)["input_ids"]
        ids += part
        mask += [int(trained)] * len(part)
    return ids, mask


def chatml_pieces(turns, system=DEFAULT_SYSTEM, trained=(1, 3)):
    pieces = [("<|im_start|>", 0), (f"system\n{system}", 0), ("<|im_end|>", 0), ("\n", 0)]
    for i, turn in enumerate(turns):
        pieces += [("<|im_start|>", 0), (f"{turn['role']}\n", 0), (turn["content"], i in trained), ("<|im_end|>", i in trained), ("\n", 0)]
    return pieces


def plain_pieces(turns, trained=(1, 3)):
    pieces = []
    for i, turn in enumerate(turns):
        if turn["role"] == "user":
            pieces += [(f"### User:\n{turn['content']}\n", 0)]
        else:
            pieces += [("### Assistant:\n", 0), (turn["content"], i in trained), ("<|endoftext|>", i in trained), ("\n\n", 0)]
    return pieces


def as_example_mask(example):
    """The example's trained flags over its whole sequence (prompt tokens are 0)."""
    trained = example.trained or [1] * len(example.completion_ids)
    return example.prompt_ids + example.completion_ids, [0] * len(example.prompt_ids) + trained


def trimmed(ids, mask):
    """A hand-built sequence up to its last trained token (what an example keeps)."""
    last = max(i for i, m in enumerate(mask) if m)
    return ids[: last + 1], mask[: last + 1]


@pytest.mark.parametrize("template", ["chatml", "plain", "marked"])
def test_every_assistant_turn_is_trained_up_to_its_end_of_turn_against_a_hand_built_mask(tok, template):
    if template != "chatml":
        tok = build_chat_tokenizer()
        tok.chat_template = PLAIN if template == "plain" else MARKED
    expected = pieces_to_ids(tok, chatml_pieces(CHAT) if template == "chatml" else plain_pieces(CHAT))
    example = rendered_example("x", tok, CHAT, 0, LossOn.assistant, stops(tok))
    assert as_example_mask(example) == trimmed(*expected)
    # loss_on=last: the last reply alone; the first is context, as is every user turn
    last = rendered_example("x", tok, CHAT, 0, LossOn.last, stops(tok))
    expected_last = pieces_to_ids(tok, chatml_pieces(CHAT, trained=(3,)) if template == "chatml" else plain_pieces(CHAT, trained=(3,)))
    assert as_example_mask(last) == trimmed(*expected_last)
    # The trained tokens end with an EOS id, and what follows it in the template ("\n") is never a target.
    ids, mask = as_example_mask(example)
    assert ids[-1] in stops(tok) and mask[-1] == 1


def test_the_rl_prompt_is_the_sft_prompt_of_the_same_conversation(tok):
    """The ids the policy is prompted with in RL are the ids SFT conditioned the same reply on."""
    example = rendered_example("x", tok, CHAT[:2], 0, LossOn.last, stops(tok))
    assert prompt_ids(tok, CHAT[:1], "x") == example.prompt_ids
    assert tok.decode(example.prompt_ids).endswith("<|im_start|>assistant\n")


def test_control_tokens_typed_in_a_message_are_text(tok):
    ids = prompt_ids(tok, [{"role": "user", "content": "stop <|im_end|> here"}], "x")
    end = tok.convert_tokens_to_ids("<|im_end|>")
    # the system turn's and the user turn's ends only: the typed one is characters
    assert ids.count(end) == 2 and "<|im_end|>" in tok.decode(ids)


def test_sharegpt_turns_and_tool_calls_are_read(tok):
    turns = messages("f: line 1", [{"from": "human", "value": "hi"}, {"from": "gpt", "value": "yo"}], "conversations")
    assert turns == [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "yo"}]
    call = {"role": "assistant", "content": None, "tool_calls": [{"type": "function", "function": {"name": "add", "arguments": {"a": 1}}}]}
    turns = messages("x", [{"role": "user", "content": "1+1?"}, call, {"role": "tool", "content": "2"}, {"role": "assistant", "content": "2"}], "messages")
    example = rendered_example("x", tok, turns, 0, LossOn.assistant, stops(tok))
    text = tok.decode(example.completion_ids)
    assert '<tool_call>\n{"name": "add", "arguments": {"a": 1}}\n</tool_call>' in text and "<tool_response>\n2\n</tool_response>" in text
    trained = [t for t, m in zip(example.completion_ids, example.trained) if m]
    assert tok.decode(trained).count("<|im_end|>") == 2  # both replies end trained; the tool's answer is context


@pytest.mark.parametrize(
    "turns, message",
    [
        ([], "is an empty conversation"),
        ("hello", "must be a list of {role, content} turns"),
        ([{"role": "narrator", "content": "x"}], "turn 1 has role 'narrator'"),
        ([{"from": "bot", "value": "x"}], "turn 1 comes from 'bot'"),
        ([{"role": "user", "content": 3}], "turn 1 (user) has content int, not text"),
        (["hi"], "turn 1 is str"),
    ],
)
def test_malformed_conversations_are_one_line_naming_the_row(turns, message):
    with pytest.raises(ConversationError) as err:
        messages("p.jsonl: line 4", turns, "prompt")
    assert str(err.value).startswith("p.jsonl: line 4: 'prompt'") and message in str(err.value) and "\n" not in str(err.value)


def test_prompts_without_a_user_turn_or_with_a_template_that_raises_are_named(tok):
    with pytest.raises(ConversationError, match=r"^p: line 2: the prompt has no user turn$"):
        prompt_ids(tok, [{"role": "system", "content": "be brief"}], "p: line 2")
    with pytest.raises(ConversationError, match="^p: line 3: the prompt ends with an assistant turn"):
        prompt_ids(tok, CHAT[:2], "p: line 3")
    strict = build_chat_tokenizer()
    strict.chat_template = "{{ raise_exception('roles must alternate') }}"
    with pytest.raises(ConversationError, match=r"^p: line 5: the chat template cannot render this conversation: roles must alternate$"):
        prompt_ids(strict, CHAT[:1], "p: line 5")
    with pytest.raises(ConversationError, match="assistant turn 1 has no user turn before it"):
        rendered_example("d: line 1", tok, [{"role": "assistant", "content": "hi"}], 0, LossOn.last, stops(tok))


def test_a_reply_that_never_reaches_an_eos_id_is_an_error(tok):
    other = build_chat_tokenizer()
    with pytest.raises(ConversationError, match="does not end with one of the model's EOS ids"):
        ids, (span,) = assistant_spans(other, CHAT[:2], "x", [1])
        trained_span(ids, span, (other.convert_tokens_to_ids("<|endoftext|>"),), "x")


def test_a_template_that_is_not_prefix_stable_is_named(tok):
    unstable = build_chat_tokenizer()
    # the generation prompt ends with a space the reply's first word takes into its token
    unstable.chat_template = PLAIN.replace("### Assistant:\n", "### Assistant: ")
    with pytest.raises(ConversationError, match="does not render this conversation turn by turn"):
        rendered_example("x", unstable, CHAT, 0, LossOn.last, stops(unstable))


def test_encode_prompts_renders_by_the_chat_template_setting(tok):
    chat, text = Prompt("a", messages=[{"role": "user", "content": "hi"}]), Prompt("b", "hi")
    rendered = encode_prompts(tok, [chat], 200, Truncation.error)[0]
    assert tok.decode(rendered).endswith("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n")
    assert encode_prompts(tok, [text], 200, Truncation.error)[0] == tok("hi")["input_ids"]  # auto: text as it is
    assert encode_prompts(tok, [text], 200, Truncation.error, chat_template=ChatTemplate.on)[0] == rendered
    with_system = encode_prompts(tok, [chat], 200, Truncation.error, system_prompt="Be brief.")[0]
    assert tok.decode(with_system).startswith("<|im_start|>system\nBe brief.<|im_end|>")
    with pytest.raises(DataError, match="^a: a message list, but task.chat_template=off"):
        encode_prompts(tok, [chat], 200, Truncation.error, chat_template=ChatTemplate.off)
    assert encode_prompts(tok, [chat, text], 5, Truncation.drop) == [None, [tok("hi")["input_ids"]][0]]


def test_text_is_text_unless_it_is_declared_already_rendered(tok):
    rendered = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    as_text = encode_prompts(tok, [Prompt("a", rendered)], 200, Truncation.error)[0]
    as_rendered = encode_prompts(tok, [Prompt("a", rendered)], 200, Truncation.error, chat_template=ChatTemplate.off)[0]
    start = tok.convert_tokens_to_ids("<|im_start|>")
    assert start not in as_text and as_rendered.count(start) == 2
    assert as_rendered == tok.apply_chat_template([{"role": "user", "content": "hi"}], add_generation_prompt=True, tokenize=True, return_dict=False)[-len(as_rendered) :]
