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


def letters_label_reward(prompts: list[str], responses: list[str], labels: list[str], **_) -> list[float]:
    """letters_reward against each prompt's label (its letters) instead of its text: the gold score
    when the prompt is a conversation whose rendering holds other letters (make pipeline ARGS=--chat)."""
    return letters_reward(labels, responses)


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


# The offline RLHF pipeline's data (docs/results/pipeline.md): demonstrations and preference pairs
# for the same prompts, made from completions of a chosen quality. letters_reward is the gold score:
# the reward model only ever sees its (noisy) pairwise labels.
COMPLETION_CHARS = 8


# What a policy can emit besides lowercase letters (the built-in tokenizer's printable characters).
ANY_CHAR = string.ascii_letters + string.digits + string.punctuation + " "


def letters_completion(rng: random.Random, prompt: str, quality: float, length: int = COMPLETION_CHARS, others: str = string.ascii_lowercase) -> str:
    """`length` characters, each one of the prompt's letters with probability `quality`, else any of `others`."""
    allowed = prompt.split(SEPARATOR)[0]
    return "".join(rng.choice(allowed) if rng.random() < quality else rng.choice(others) for _ in range(length))


def letters_demonstrations(num: int, prompt_chars: int, quality: float, seed: int) -> list[tuple[str, str]]:
    """(prompt, completion) pairs: the format of an answer, right in `quality` of its letters."""
    rng = random.Random(f"demonstrations-{seed}")
    prompts = make_letter_prompts(num, prompt_chars, seed + 1_000_003)
    return [(p, letters_completion(rng, p, quality)) for p in prompts]


def letters_preferences(num: int, prompt_chars: int, label_noise: float, seed: int) -> list[tuple[str, str, str]]:
    """(prompt, chosen, rejected): two completions of random quality, of random lengths from 1 to 16
    letters, equal in half the pairs (a policy's responses vary in length: the reward model sees
    every length, compares like with like, and learns that length alone says nothing), their other
    characters lowercase letters or, in half the completions, any printable character (what a policy
    may try), the one letters_reward scores higher chosen, the label flipped with
    probability `label_noise` (ties drawn again)."""
    rng = random.Random(f"preferences-{seed}")
    pairs = []
    for prompt in make_letter_prompts(num, prompt_chars, seed + 2_000_003):
        while True:
            lengths = [rng.randint(1, 16)] * 2 if rng.random() < 0.5 else [rng.randint(1, 16), rng.randint(1, 16)]
            a, b = (letters_completion(rng, prompt, rng.random(), n, rng.choice([string.ascii_lowercase, ANY_CHAR])) for n in lengths)
            gold_a, gold_b = letters_reward([prompt, prompt], [a, b])
            if gold_a != gold_b:
                break
        chosen, rejected = (a, b) if gold_a > gold_b else (b, a)
        if rng.random() < label_noise:
            chosen, rejected = rejected, chosen
        pairs.append((prompt, chosen, rejected))
    return pairs
