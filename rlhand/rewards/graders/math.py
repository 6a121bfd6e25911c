"""reward=math: 1 when the response's final answer equals the label, else 0, as HF's math-verify
decides (LaTeX, fractions, decimals, percentages, sets, intervals, equations; the grader verl's
math_verify and TRL's accuracy_reward use). Nothing here parses an answer by hand.

    answer: auto   math-verify's own search, in its order: a \\boxed{} answer, "the final answer
                   is ...", then the last expression or number in the response
    answer: boxed  only a \\boxed{} answer counts; a response without one scores 0

A label is a number or a string (plain "0.5", or LaTeX such as "\\frac{1}{2}", with or without $...$);
a list of them accepts any. A label math-verify cannot read is not the response's fault: that sample is
Unscored (reward.failure_score, counted in reward/errors, named once), never a silent 0."""

import logging
import threading
from typing import Any

from rlhand.rewards.unscored import Unscored

ANSWERS = ("auto", "boxed")
_NO_LABEL = "no label: reward=math grades against task.label_column (set it to the ground-truth column)"


def math_reward(prompts: list[str], responses: list[str], labels: list[Any] | None = None, *, answer: str = "auto", **_columns) -> list[float | Unscored]:
    if answer not in ANSWERS:
        raise ValueError(f"answer={answer!r}: one of {ANSWERS}")
    if labels is None:
        return [Unscored(_NO_LABEL)] * len(responses)
    return [grade(response, label, answer) for response, label in zip(responses, labels)]


def grade(response: str, label: Any, answer: str = "auto") -> float | Unscored:
    """1.0 or 0.0 for one response, or Unscored when the label cannot be read."""
    from math_verify import parse, verify

    if label is None or (isinstance(label, str) and not label.strip()):
        return Unscored("an empty label")
    golds = [gold_answer(item) for item in (label if isinstance(label, (list, tuple)) else [label])]
    if not any(golds):
        return Unscored(f"math-verify cannot read the label {label!r}")
    if answer == "boxed" and "\\boxed" not in response and "\\fbox" not in response:
        return 0.0
    limit = _seconds()
    predicted = parse(response, extraction_config=_response_targets(answer), parsing_timeout=limit)
    if not predicted:
        return 0.0
    return float(any(gold and verify(gold, predicted, timeout_seconds=limit) for gold in golds))


def gold_answer(label: Any) -> list:
    """The label as math-verify's parsed answer ([] when it cannot read it). A bare LaTeX label
    ("\\frac{1}{2}") is read again inside $...$, the delimiters its LaTeX extraction looks for."""
    from math_verify import ExprExtractionConfig, LatexExtractionConfig, parse

    text = str(label).strip()
    targets, limit = [LatexExtractionConfig(), ExprExtractionConfig()], _seconds()
    parsed = parse(text, extraction_config=targets, parsing_timeout=limit)
    if not _read(parsed) and "$" not in text:
        parsed = parse(f"${text}$", extraction_config=targets, parsing_timeout=limit)
    return parsed if _read(parsed) else []


def _read(parsed: list) -> bool:
    """Whether math-verify understood it: a parsed answer holds an expression, not only the text
    it fell back to."""
    return any(not isinstance(x, str) for x in parsed)


def _response_targets(answer: str) -> list:
    from math_verify import ExprExtractionConfig, LatexExtractionConfig

    if answer == "boxed":
        return [LatexExtractionConfig(boxed_match_priority=0, try_extract_without_anchor=False)]
    return [LatexExtractionConfig(boxed_match_priority=0), ExprExtractionConfig()]


def _seconds() -> int | None:
    """math-verify bounds each parse and comparison with signal.alarm, which only the main thread
    may set: 2 s each (its default is 5), so that one pathological response costs seconds of a
    batch's reward.timeout_s, not all of it. Elsewhere (a reward server's request thread) it runs unbounded: reward.timeout_s and
    reward.workers bound the call instead."""
    return 2 if threading.current_thread() is threading.main_thread() else None


# math-verify warns once, through logging, when its own time limit is off; ours is then in force.
logging.getLogger("math_verify").setLevel(logging.ERROR)


math_reward.needs_labels = True  # the trainer refuses it on prompts without task.label_column
