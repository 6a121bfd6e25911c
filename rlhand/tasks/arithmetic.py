"""The built-in `arithmetic` task: one-step word problems with a ground-truth answer per prompt, the
offline stand-in for GSM8K-style RL with verifiable rewards (make rlvr, docs/results/rlvr.md).

    prompt:   "Ava has 7 pens and gets 5 more. How many pens now?"
    solution: "7+5=12. \\boxed{12}"      label: "12"

Single-digit operands, addition or subtraction (never below zero), the operation told by the words
(gets ... more, gives away ... left): a policy must read the numbers and the verb, then add or
subtract. Small enough for the tiny model on a CPU; reward=math grades the boxed answer against the
label with math-verify, as it would grade a real dataset's.

The problems are a fixed pool, split once by a hash of the question: a held-out share (HELD_OUT) is
never a training prompt nor a demonstration, so accuracy on it measures what was learned, not what
was seen. Demonstrations are right in `quality` of cases, wrong by one otherwise (the same mistake in
the working and the box): supervised learning copies the mistakes, a verifier does not."""

import hashlib
import itertools
import random

NAMES = ["Ava", "Ben", "Cal", "Dee", "Eli", "Fay", "Gus", "Ivy", "Jo", "Kim", "Leo", "Max", "Ned", "Oli", "Pam", "Sam"]
THINGS = ["pens", "cups", "eggs", "figs", "hats", "keys", "maps", "nuts", "owls", "pies", "rugs", "toys"]
TEMPLATES = [
    ("{n} has {a} {t} and gets {b} more. How many {t} now?", "+"),
    ("{n} buys {a} {t}, then {b} more. How many {t} in all?", "+"),
    ("{n} has {a} {t} and gives away {b}. How many {t} are left?", "-"),
    ("{n} had {a} {t} and lost {b}. How many {t} are left?", "-"),
]
HELD_OUT = 0.2  # share of the pool kept out of training and demonstrations


def problem(name: str, things: str, a: int, b: int, template: int) -> tuple[str, str, int]:
    """(question, operation, answer)."""
    text, op = TEMPLATES[template]
    return text.format(n=name, t=things, a=a, b=b), op, a + b if op == "+" else a - b


def pool(split: str) -> list[tuple[str, str, int, int, int]]:
    """Every problem of `split` ("train" or "test"): (question, op, a, b, answer), in a fixed order."""
    out = []
    for name, things, a, b, template in itertools.product(NAMES, THINGS, range(10), range(10), range(len(TEMPLATES))):
        question, op, answer = problem(name, things, a, b, template)
        if answer < 0:
            continue
        held = int(hashlib.sha256(question.encode()).hexdigest()[:8], 16) / 16**8 < HELD_OUT
        if held == (split == "test"):
            out.append((question, op, a, b, answer))
    return out


def solution(a: int, op: str, b: int, answer: int) -> str:
    return f"{a}{op}{b}={answer}. \\boxed{{{answer}}}"


def make_arithmetic_prompts(num_prompts: int, prompt_chars: int, seed: int, split: str = "train") -> list[tuple[str, str]]:
    """(question, label) pairs drawn from `split` without replacement (then again, once used up).
    `prompt_chars` is the letters task's knob; here it means nothing."""
    problems = pool(split)
    rng = random.Random(f"arithmetic-{split}-{seed}")
    drawn = []
    while len(drawn) < num_prompts:
        drawn += rng.sample(problems, min(len(problems), num_prompts - len(drawn)))
    return [(question, str(answer)) for question, _, _, _, answer in drawn]


def arithmetic_demonstrations(num: int, prompt_chars: int, quality: float, seed: int) -> list[tuple[str, str]]:
    """(question, worked solution) pairs from the training pool, right in `quality` of them."""
    rng = random.Random(f"arithmetic-demonstrations-{seed}")
    problems = pool("train")
    out = []
    for _ in range(num):
        question, op, a, b, answer = rng.choice(problems)
        if rng.random() >= quality:
            answer = answer + 1 if answer == 0 or rng.random() < 0.5 else answer - 1
        out.append((question, solution(a, op, b, answer)))
    return out


def heldout_rows(num: int, seed: int = 0) -> list[dict]:
    """The held-out split as prompt-file rows (prompt, answer, solution), for rlhand-eval."""
    rng = random.Random(f"arithmetic-heldout-{seed}")
    problems = pool("test")
    chosen = rng.sample(problems, min(num, len(problems)))
    return [{"prompt": q, "answer": str(answer), "solution": solution(a, op, b, answer)} for q, op, a, b, answer in chosen]
