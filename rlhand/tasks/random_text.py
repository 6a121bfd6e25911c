"""The built-in `random_text` prompts: random printable characters, for benchmarks (as in the TRL
peer harness). It has no reward function of its own: pair it with reward=model."""

import random
import string

PRINTABLE = string.ascii_letters + string.digits + string.punctuation + " "


def make_random_prompts(num_prompts: int, prompt_chars: int, seed: int) -> list[str]:
    rng = random.Random(seed)
    return ["".join(rng.choice(PRINTABLE) for _ in range(prompt_chars)) for _ in range(num_prompts)]
