"""The built-in `letters` task, small enough to learn on a CPU in a couple of minutes.

Prompt: `prompt_chars` distinct random lowercase letters followed by '=' (e.g. "qbkxmcwe=").
Reward: the mean over response characters of +1 if the character is one of the prompt's letters
and -1 otherwise, so it lies in [-1, 1]; an empty response scores -1. A policy must read the
prompt to score well: a constant answer ("aaaa") is right only when its letter is in the prompt
(8 of 26), so it averages about -0.38, and uniform random characters about -0.84.
"""

import random
import string

SEPARATOR = "="


def make_letter_prompts(num_prompts: int, prompt_chars: int, seed: int) -> list[str]:
    if prompt_chars > 26:
        raise ValueError(f"task.prompt_chars: {prompt_chars} > 26 distinct letters")
    rng = random.Random(seed)
    return ["".join(rng.sample(string.ascii_lowercase, prompt_chars)) + SEPARATOR for _ in range(num_prompts)]


def letters_reward(prompts: list[str], responses: list[str], **_) -> list[float]:
    scores = []
    for prompt, response in zip(prompts, responses):
        allowed = set(prompt.split(SEPARATOR)[0])
        if not response:
            scores.append(-1.0)
            continue
        good = sum(ch in allowed for ch in response)
        scores.append((2 * good - len(response)) / len(response))
    return scores


def first_letter_reward(prompts: list[str], responses: list[str], **_) -> list[float]:
    """The `first_letter` task: the same prompts, a binary reward of another shape. 1.0 when the
    response's first character is one of the prompt's letters, else 0.0 (an empty response too).
    Pass/fail like a verifier's, decided by one token, whatever the length: uniform random
    characters pass about 8% of the time on the built-in tokenizer, so many groups of 4 are all-0."""
    scores = []
    for prompt, response in zip(prompts, responses):
        allowed = set(prompt.split(SEPARATOR)[0])
        scores.append(1.0 if response and response[0] in allowed else 0.0)
    return scores
