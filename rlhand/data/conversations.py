"""Conversations: message lists as users bring them, rendered by the model's chat template into the
ids every stage trains on, and the assistant turns a loss is taken over.

A message list is role/content turns (OpenAI's and TRL's layout) or ShareGPT's from/value turns;
roles are system, user, assistant and tool, and other keys of a turn (tool_calls, name, ...) go to
the template as they are. Rendering goes through `apply_chat_template` with the control tokens of
the data sanitised (transformers' `sanitize_control_tokens`): `<|im_end|>` typed in a message is
text, and only the template writes control tokens, as text prompts never inject them either.

The assistant turns of a conversation are found by rendering its prefixes (the turns before one
with the generation prompt, then up to and including it): every render must be a token prefix of
the whole. A template that marks its assistant spans with `{% generation %}` gives them itself.
Either way a trained turn ends at the first of the model's EOS ids inside it (ChatML's
`<|im_end|>`): what a policy samples ends there, so the template's newline after it is context,
never a target, and a reward model is read at that token.
"""

import inspect
from typing import Any

from transformers import PreTrainedTokenizerBase

from rlhand.data.files import DataError, first_line

ROLES = ("system", "user", "assistant", "tool")
SHAREGPT_ROLES = {"human": "user", "user": "user", "gpt": "assistant", "assistant": "assistant", "system": "system", "tool": "tool", "observation": "tool", "function": "tool"}


class ConversationError(DataError):
    """A conversation that cannot be read or rendered; the message names the file and row."""


def is_message_list(value: Any) -> bool:
    """A list whose items are dicts: a conversation (checked further by `messages`), not text."""
    return isinstance(value, list) and bool(value) and all(isinstance(turn, dict) for turn in value)


def messages(where: str, value: Any, column: str) -> list[dict]:
    """`value` as role/content turns (ShareGPT's from/value mapped), or an error naming `where`."""
    if not isinstance(value, list):
        raise ConversationError(f"{where}: {column!r} must be a list of {{role, content}} turns")
    if not value:
        raise ConversationError(f"{where}: {column!r} is an empty conversation")
    out = []
    for i, turn in enumerate(value):
        if not isinstance(turn, dict):
            raise ConversationError(f"{where}: {column!r} turn {i + 1} is {type(turn).__name__}, not a {{role, content}} object")
        if "from" in turn and "role" not in turn:  # ShareGPT
            role = SHAREGPT_ROLES.get(turn["from"])
            if role is None:
                raise ConversationError(f"{where}: {column!r} turn {i + 1} comes from {turn['from']!r} (ShareGPT roles: {', '.join(SHAREGPT_ROLES)})")
            turn = {"role": role, "content": turn.get("value"), **{k: v for k, v in turn.items() if k not in ("from", "value")}}
        role = turn.get("role")
        if role not in ROLES:
            raise ConversationError(f"{where}: {column!r} turn {i + 1} has role {role!r} (roles: {', '.join(ROLES)})")
        content = turn.get("content")
        if content is None and role == "assistant" and turn.get("tool_calls"):
            content = ""
        if not isinstance(content, str):
            raise ConversationError(f"{where}: {column!r} turn {i + 1} ({role}) has content {type(content).__name__}, not text")
        out.append({**turn, "content": content})
    return out


def with_system(turns: list[dict], system_prompt: str | None) -> list[dict]:
    """task.system_prompt before a conversation that has no system turn of its own."""
    if system_prompt is None or turns[0]["role"] == "system":
        return turns
    return [{"role": "system", "content": system_prompt}] + turns


def _sanitising(tokenizer: PreTrainedTokenizerBase) -> dict:
    """transformers 5.24 encodes control tokens typed in messages as text when asked; older releases
    (the CPU vLLM venv's) cannot."""
    return {"sanitize_control_tokens": True} if "sanitize_control_tokens" in inspect.signature(tokenizer.apply_chat_template).parameters else {}


def render_ids(tokenizer: PreTrainedTokenizerBase, turns: list[dict], where: str, *, generation_prompt: bool, tools: list | None = None) -> list[int]:
    """The template's ids for `turns` (with the assistant's generation prompt after them when asked)."""
    try:
        out = tokenizer.apply_chat_template(
            turns, tools=tools, add_generation_prompt=generation_prompt, tokenize=True, return_dict=True, **_sanitising(tokenizer)
        )
    except Exception as err:  # jinja raises many types (raise_exception in a template too): each means it cannot render this
        raise ConversationError(f"{where}: the chat template cannot render this conversation: {first_line(err)}") from None
    return list(out["input_ids"])


def check_template(tokenizer: PreTrainedTokenizerBase, where: str) -> None:
    if not getattr(tokenizer, "chat_template", None):
        raise ConversationError(
            f"{where}: rendering a conversation needs a tokenizer with a chat template (this one has none); give text under task.chat_template=auto, or a model whose tokenizer has one"
        )


def prompt_ids(tokenizer: PreTrainedTokenizerBase, turns: list[dict], where: str) -> list[int]:
    """An RL prompt: the conversation so far with the generation prompt; it must hold a user turn
    and may not end with the assistant's."""
    check_template(tokenizer, where)
    if not any(turn["role"] == "user" for turn in turns):
        raise ConversationError(f"{where}: the prompt has no user turn")
    if turns[-1]["role"] == "assistant":
        raise ConversationError(f"{where}: the prompt ends with an assistant turn; the policy writes the next one")
    return render_ids(tokenizer, turns, where, generation_prompt=True)


def assistant_spans(tokenizer: PreTrainedTokenizerBase, turns: list[dict], where: str, wanted: list[int]) -> tuple[list[int], list[tuple[int, int]]]:
    """(the whole conversation's ids, the [start, end) token span of each assistant turn in `wanted`,
    by index into `turns`). A span covers what the template writes for the turn after its generation
    prompt: the content and whatever closes the turn."""
    check_template(tokenizer, where)
    for i in wanted:
        if not any(turn["role"] == "user" for turn in turns[:i]):
            raise ConversationError(f"{where}: assistant turn {i + 1} has no user turn before it")
    if _marks_generation(tokenizer):
        return _generation_spans(tokenizer, turns, where, wanted)
    ids = render_ids(tokenizer, turns, where, generation_prompt=False)
    spans = []
    for i in wanted:
        start = render_ids(tokenizer, turns[:i], where, generation_prompt=True)
        upto = render_ids(tokenizer, turns[: i + 1], where, generation_prompt=False)
        if ids[: len(start)] != start or ids[: len(upto)] != upto or len(upto) <= len(start):
            raise ConversationError(
                f"{where}: the chat template does not render this conversation turn by turn (turn {i + 1}'s prefix is not a prefix of the whole); "
                "mark its assistant turns with {% generation %} ... {% endgeneration %}"
            )
        spans.append((len(start), len(upto)))
    return ids, spans


def _marks_generation(tokenizer) -> bool:
    template = tokenizer.chat_template if isinstance(tokenizer.chat_template, str) else ""
    return "generation %}" in template


def _generation_spans(tokenizer, turns: list[dict], where: str, wanted: list[int]) -> tuple[list[int], list[tuple[int, int]]]:
    """The spans the template marks with {% generation %}, in order: one per assistant turn."""
    try:
        out = tokenizer.apply_chat_template(turns, tokenize=True, return_dict=True, return_assistant_tokens_mask=True)
    except Exception as err:  # noqa: BLE001 - as render_ids
        raise ConversationError(f"{where}: the chat template cannot render this conversation: {first_line(err)}") from None
    ids, mask = list(out["input_ids"]), list(out["assistant_masks"])
    if ids != render_ids(tokenizer, turns, where, generation_prompt=False):  # transformers cannot sanitise and mask at once
        raise ConversationError(f"{where}: a message holds a control token's text, which a {{% generation %}} template's mask would read as the token; remove it")
    runs, start = [], None
    for position, flag in enumerate(mask + [0]):
        if flag and start is None:
            start = position
        elif not flag and start is not None:
            runs.append((start, position))
            start = None
    assistants = [i for i, turn in enumerate(turns) if turn["role"] == "assistant"]
    if len(runs) != len(assistants):
        raise ConversationError(f"{where}: the chat template marks {len(runs)} generation spans for {len(assistants)} assistant turns")
    by_turn = dict(zip(assistants, runs))
    return ids, [by_turn[i] for i in wanted]


def trained_span(ids: list[int], span: tuple[int, int], stop_ids: tuple[int, ...], where: str) -> tuple[int, int]:
    """A turn's span cut after its first EOS id (the end of turn a sampler stops at); the token just
    after a {% generation %} span counts too (a template may close the turn outside its marks). An
    assistant turn that never reaches one of the model's EOS ids is an error: the policy could not
    learn to stop there."""
    start, end = span
    stops = set(stop_ids)
    for position in range(start, min(end + 1, len(ids))):
        if ids[position] in stops:
            return start, position + 1
    raise ConversationError(f"{where}: an assistant turn does not end with one of the model's EOS ids {list(stop_ids)}; a policy could not learn to stop there")
