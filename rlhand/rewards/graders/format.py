"""A format rule as a reward (usually a weighted component beside a grader): 1 when the whole
response matches a regular expression, else 0.

    tags: think,answer   the response is <think>...</think> then <answer>...</answer> (DeepSeek-R1's
                         and TRL's format_reward), with only whitespace around and between them
    pattern: REGEX       any rule of your own, matched against the whole response (re.DOTALL)

    rlhand-train reward=math +reward.components.format='{_target_: rlhand.rewards.graders.format.format_reward, weight: 0.2}'
"""

import re
from functools import lru_cache


def format_reward(prompts: list[str], responses: list[str], *, pattern: str | None = None, tags: str | list[str] = "think,answer", **_columns) -> list[float]:
    rule = _compiled(pattern if pattern is not None else tag_pattern(tags))
    return [float(rule.fullmatch(response) is not None) for response in responses]


def tag_pattern(tags: str | list[str]) -> str:
    """`<a>...</a>\\s*<b>...</b>`: each tag once, in order, nothing outside but whitespace."""
    names = [t.strip() for t in (tags.split(",") if isinstance(tags, str) else tags) if t.strip()]
    if not names:
        raise ValueError("tags: name at least one tag")
    body = r"\s*".join(rf"<{re.escape(n)}>(?:(?!</?{re.escape(n)}>).)*</{re.escape(n)}>" for n in names)
    return rf"\s*{body}\s*"


@lru_cache(maxsize=16)
def _compiled(pattern: str) -> re.Pattern:
    try:
        return re.compile(pattern, re.DOTALL)
    except re.error as err:
        raise ValueError(f"pattern {pattern!r}: {err}") from None
