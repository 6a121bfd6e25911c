"""Built-in tasks: prompt generators with a matching reward function (reward/<name>.yaml)."""

from rlhand.tasks.letters import make_letter_prompts

BUILTIN_PROMPTS = {"letters": make_letter_prompts}
