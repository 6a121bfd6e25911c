"""Graders: reward functions that check a response against the prompt's ground truth (`labels`,
from task.label_column). math: the final answer against the label with HF's math-verify; code: the
response's program against the row's tests in a sandboxed subprocess; format: a regex or tag rule.
Each returns one score per sample, or rlhand.rewards.unscored.Unscored where it cannot grade."""
