"""Built-in tasks: prompt generators (letters has a matching reward function, reward/letters.yaml)."""

from rlhand.tasks.letters import make_letter_prompts
from rlhand.tasks.random_text import make_random_prompts

BUILTIN_PROMPTS = {"letters": make_letter_prompts, "random_text": make_random_prompts}
