"""Code grader: run the response's program against the row's tests; the score is the share passed.

`reward.function._target_: rlhand.rewards.graders.code.code_reward`, with time_limit_s, memory_mb,
output_limit_kb, forbidden_dirs and workers beside it if needed. The program is the response's last
fenced code block (```python or a bare ```), else the whole response. The label holds the tests:

- a list of Python test strings (`["assert add(1, 2) == 3", ...]`), or one string of test code in
  which each top-level statement is a test, run after the imports, definitions and assignments above
  it (those are its setup, not tests);
- a dict with "inputs" and "outputs" lists (APPS, PRIME, verl): each input is the stdin and the stdout
  must equal the output, trailing whitespace of lines and trailing blank lines aside; with "fn_name",
  each input is the argument list for that function (or that method of `Solution()`) and its result,
  sent back as JSON, must equal the output (or the output's only element);
- any of these as a JSON (or Python literal) string.

A missing or unreadable label scores Unscored. A program that does not compile, crashes, runs out of
time or memory or prints more than output_limit_kb fails the tests it touched: a 0, not Unscored.

The sandbox each test runs in, and what it does not protect against: rlhand/rewards/graders/sandbox.py.
"""

import ast
import json
import marshal
import math
import os
import re
from concurrent.futures import ThreadPoolExecutor

from rlhand.rewards.graders.sandbox import FILE_SIZE_MB, STARTUP_S, run_test
from rlhand.rewards.unscored import Unscored

FENCE = re.compile(r"```[^\n`]*\n(.*?)```", re.DOTALL)
SETUP = (ast.Import, ast.ImportFrom, ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef, ast.Assign, ast.AnnAssign)


def code_reward(
    prompts,
    responses,
    labels,
    *,
    time_limit_s=5.0,
    memory_mb=1024,
    output_limit_kb=1024,
    forbidden_dirs=(),
    workers=None,
    **_ignored,
) -> list:
    """One score per sample: the share of its label's tests that its program passes (0.0 to 1.0),
    or Unscored where the label holds no readable tests or a test could not be started."""
    if len(responses) != len(labels):
        raise ValueError(f"code_reward: {len(responses)} responses but {len(labels)} labels")
    if not (time_limit_s > 0 and memory_mb > 0 and output_limit_kb > 0):
        raise ValueError("code_reward: time_limit_s, memory_mb and output_limit_kb must be positive")
    output_limit = int(output_limit_kb * 1024)
    sandbox = {
        "limits": (max(1, math.ceil(time_limit_s)), int(memory_mb * 2**20), max(FILE_SIZE_MB * 2**20, output_limit + 2**16)),
        # "/" would forbid every read (a trainer started in /): then only the rest stays forbidden
        "forbidden": tuple(
            {os.path.realpath(d) for d in (os.getcwd(), os.path.expanduser("~"), "/proc", *forbidden_dirs)} - {"/"}
        ),
        "readable": (os.path.realpath(os.path.dirname(os.__file__)),),  # the stdlib, wherever it lives
        "wall_s": time_limit_s + STARTUP_S,
        "output_limit": output_limit,
    }
    plans = [read_tests(label) for label in labels]
    results: list = [plan if isinstance(plan, Unscored) else 0 for plan in plans]
    # At most 4 tests at once by default: every rank and every reward worker runs its own pool.
    pool = ThreadPoolExecutor(workers or min(4, len(os.sched_getaffinity(0))), thread_name_prefix="code-grader")
    try:
        futures = [
            (i, pool.submit(run_test, program_of(responses[i]), test, sandbox))
            for i, plan in enumerate(plans)
            if not isinstance(plan, Unscored)
            for test in plan
        ]
        for i, future in futures:
            try:
                passed = future.result()
            except OSError as error:  # could not start it (no fds, no disk): not the program's fault
                results[i] = Unscored(f"could not run a test: {error}")
                continue
            if not isinstance(results[i], Unscored):
                results[i] += passed
    finally:  # also on the trainer's timeout: queued tests are dropped, running ones end within their limit
        pool.shutdown(wait=True, cancel_futures=True)
    return [r if isinstance(r, Unscored) else r / len(plan) for r, plan in zip(results, plans)]


def program_of(response: str) -> str:
    blocks = FENCE.findall(response)
    return blocks[-1] if blocks else response


def read_tests(label) -> list[dict] | Unscored:
    """The label's tests as jobs for the runner, or Unscored saying why there are none."""
    if hasattr(label, "tolist") and not isinstance(label, (str, bytes)):
        label = label.tolist()  # a numpy array from a parquet column
    if isinstance(label, bytes):
        label = label.decode("utf-8", "replace")
    if isinstance(label, str) and label.strip()[:1] in ("[", "{"):
        for parse in (json.loads, ast.literal_eval):
            try:
                label = parse(label)
                break
            except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
                pass
    if isinstance(label, str):
        return split_test_code(label)
    if isinstance(label, (list, tuple)):
        if not label or not all(isinstance(t, str) and t.strip() for t in label):
            return Unscored("a list label must hold one or more Python tests as strings")
        for number, test in enumerate(label):
            try:
                ast.parse(test)
            except (SyntaxError, ValueError) as error:
                return Unscored(f"test {number} is not valid Python: {error}")
        return [{"mode": "assert", "test": test} for test in label]
    if isinstance(label, dict):
        return io_tests(label)
    if label is None:
        return Unscored("no label (None): no tests to run")
    return Unscored(f"the label ({type(label).__name__}) holds no tests")


def split_test_code(code: str) -> list[dict] | Unscored:
    if not code.strip():
        return Unscored("the label is empty: no tests")
    try:
        tree = ast.parse(code)
    except (SyntaxError, ValueError) as error:
        return Unscored(f"the label is not valid Python test code: {error}")
    setup, tests = [], []
    for node in tree.body:
        if isinstance(node, SETUP):
            setup.append(ast.unparse(node))
        else:
            tests.append({"mode": "assert", "test": "\n".join([*setup, ast.unparse(node)])})
    return tests or Unscored("the label's test code has no test statements (only imports, definitions, assignments)")


def io_tests(label: dict) -> list[dict] | Unscored:
    inputs, outputs, name = label.get("inputs"), label.get("outputs"), label.get("fn_name")
    if not isinstance(inputs, list) or not isinstance(outputs, list) or not inputs or len(inputs) != len(outputs):
        return Unscored("a dict label needs 'inputs' and 'outputs': lists of the same, nonzero length")
    if not name:
        return [{"mode": "stdio", "stdin": as_text(i), "expected": as_text(o)} for i, o in zip(inputs, outputs)]
    if not isinstance(name, str) or not name.isidentifier():
        return Unscored(f"fn_name {name!r} is not a Python name")
    try:  # plain data only: the arguments travel by marshal, the results come back as JSON
        tests = [
            {
                "mode": "call",
                "name": name,
                "args": list(i) if isinstance(i, (list, tuple)) else [i],
                "expected": json.loads(json.dumps(o)),
            }
            for i, o in zip(inputs, outputs)
        ]
        marshal.dumps([t["args"] for t in tests])
    except (TypeError, ValueError) as error:
        return Unscored(f"the fn_name tests' inputs and outputs must be plain JSON data: {error}")
    return tests


def as_text(value) -> str:
    return "\n".join(map(str, value)) if isinstance(value, (list, tuple)) else str(value)


code_reward.needs_labels = True  # the trainer refuses it on prompts without task.label_column
