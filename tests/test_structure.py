"""The code's shape, checked: packages import only downward, files and functions stay small, and
"is this a distributed run?" is asked in one place. docs/design.md ("Code layout") explains the order."""

import ast
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "rlhand"

# Lowest first: a package may import itself and anything before it, never anything after it.
LAYERS = [
    "core", "errors", "user_code", "config", "distributed", "tasks", "data", "models", "checkpoint", "rewards",
    "rollout", "replay", "evaluation", "reporting", "run", "stages", "train", "bench", "compare",
]  # fmt: skip
LONG_FILES = {"config/schema.py"}  # the whole config schema, field by field: one place to read every option
MAX_FILE_LINES, MAX_FUNCTION_LINES = 300, 60


def sources():
    return sorted(PACKAGE.rglob("*.py"))


def layer_of(path: Path) -> str:
    return path.relative_to(PACKAGE).parts[0].removesuffix(".py")


def imported_layers(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""] if isinstance(node, ast.ImportFrom) and node.level == 0 else []
        found.update(n.split(".")[1] for n in names if n.startswith("rlhand.") and n.count(".") >= 1)
    return found


def test_every_package_has_a_layer():
    assert {layer_of(p) for p in sources()} - {"__init__"} == set(LAYERS)


def test_packages_import_only_downward():
    upward = []
    for path in sources():
        here = layer_of(path)
        if here == "__init__":
            continue
        upward += [f"{path.relative_to(ROOT)} imports rlhand.{there}" for there in imported_layers(path) if LAYERS.index(there) > LAYERS.index(here)]
    assert not upward, "\n".join(upward)


def test_files_are_small():
    long = [f"{p.relative_to(ROOT)}: {n} lines" for p in sources() if (n := len(p.read_text().splitlines())) > MAX_FILE_LINES and str(p.relative_to(PACKAGE)) not in LONG_FILES]
    assert not long, "\n".join(long)


def test_functions_are_short():
    long = []
    for path in sources():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and (n := node.end_lineno - node.lineno + 1) > MAX_FUNCTION_LINES:
                long.append(f"{path.relative_to(ROOT)}:{node.lineno} {node.name}: {n} lines")
    assert not long, "\n".join(long)


def test_only_the_distributed_package_asks_whether_a_run_is_distributed():
    # Everything else passes a Reducer or calls a DistContext helper, so one process and N ranks run one code path.
    asking = [f"{p.relative_to(ROOT)}" for p in sources() if layer_of(p) != "distributed" and re.search(r"\b(ctx|dist|context)\.enabled\b", p.read_text())]
    assert not asking, "\n".join(asking)


def test_the_ppo_stage_stays_a_composition():
    assert len((PACKAGE / "stages" / "ppo" / "stage.py").read_text().splitlines()) < 250


def test_config_values_are_compared_to_enums_not_strings():
    # A typo in a string compare is silently false; an enum member or a named constant fails loudly.
    compare = re.compile(r"\b(cfg|config|resume)[\w.]*\s*(==|!=)\s*[\"']")
    found = [f"{p.relative_to(ROOT)}: {m.group(0)}" for p in sources() if layer_of(p) != "config" for m in compare.finditer(p.read_text())]
    assert not found, "\n".join(found)
