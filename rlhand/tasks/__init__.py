"""Built-in tasks: prompt generators (letters and first_letter have reward functions of their own,
reward/letters.yaml and reward/first_letter.yaml; arithmetic's prompts carry their answers as labels,
graded by reward=math). A generator returns prompt texts, or (text, label) pairs."""

from rlhand.tasks.arithmetic import arithmetic_demonstrations, make_arithmetic_prompts
from rlhand.tasks.letters import letters_demonstrations, letters_preferences, make_letter_prompts
from rlhand.tasks.random_text import make_random_prompts

BUILTIN_PROMPTS = {"letters": make_letter_prompts, "first_letter": make_letter_prompts, "random_text": make_random_prompts, "arithmetic": make_arithmetic_prompts}
# The supervised stages' built-in data (stage=sft, stage=reward_model with no data path).
BUILTIN_DEMONSTRATIONS = {"letters": letters_demonstrations, "first_letter": letters_demonstrations, "arithmetic": arithmetic_demonstrations}
BUILTIN_PREFERENCES = {"letters": letters_preferences, "first_letter": letters_preferences}
