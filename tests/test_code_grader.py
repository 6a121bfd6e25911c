"""The code grader: scores, label layouts, and each part of its sandbox. Every sandbox test runs a
program that succeeds (scores 1.0, leaves its trace) when the part it checks is missing."""

import os
import socket
import time

import pytest

from rlhand.rewards.graders.code import code_reward, program_of, run_test
from rlhand.rewards.unscored import Unscored

ADD = "```python\ndef add(a, b):\n    return a + b\n```"
WRONG_ADD = "def add(a, b):\n    return a + b if a != 2 else 0"
PASSES = ["assert True"]  # a test that only the program itself can fail


def grade(responses, labels, **kwargs):
    if isinstance(responses, str):
        responses, labels = [responses], [labels]
    return code_reward([""] * len(responses), responses, labels, **kwargs)


def sandbox_processes(wait_s: float = 2.0) -> list[int]:
    """Live processes running the grader's runner (its -c source starts with this marker), after
    waiting up to wait_s for killed ones to go (SIGKILL is delivered asynchronously; a zombie's
    cmdline is empty)."""
    deadline = time.monotonic() + wait_s
    while True:
        found = []
        for pid in filter(str.isdigit, os.listdir("/proc")):
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if b"# rlhand-code-sandbox" in f.read():
                        found.append(int(pid))
            except OSError:
                pass
        if not found or time.monotonic() > deadline:
            return found
        time.sleep(0.05)


# Scores and layouts


def test_correct_program_scores_one():
    assert grade([ADD, ADD.strip("`").removeprefix("python")], [["assert add(1, 2) == 3", "assert add(2, 2) == 4"]] * 2) == [
        1.0,
        1.0,
    ]


def test_half_correct_program_scores_half():
    assert grade(WRONG_ADD, ["assert add(1, 2) == 3", "assert add(2, 2) == 4"]) == [0.5]


def test_program_that_does_not_compile_scores_zero():
    assert grade("def add(a, b) return a + b", ["assert add(1, 2) == 3"]) == [0.0]


def test_test_code_string_counts_statements_after_their_setup():
    label = "from math import isclose\nLIMIT = 3\nassert isclose(add(1, 2), LIMIT)\nassert add(2, 2) == 4\nassert add(1, 1) == LIMIT - 1\n"
    assert grade(WRONG_ADD, label) == [pytest.approx(2 / 3)]


def test_stdin_stdout_layout():
    label = {"inputs": ["2\n3\n", "5 5\n", ["1", "1"]], "outputs": ["5\n", "10   \n\n", "2"]}
    assert grade("a = int(input())\nb = int(input())\nprint(a + b)", label) == [pytest.approx(2 / 3)]
    assert grade("import sys\nprint(sum(map(int, sys.stdin.read().split())))\nsys.exit()", label) == [1.0]


def test_fn_name_layout_and_solution_class():
    label = {"inputs": [[1, 2], [2, 2]], "outputs": [[3], 4], "fn_name": "add"}
    assert grade([WRONG_ADD, "class Solution:\n    def add(self, a, b):\n        return a + b"], [label, label]) == [0.5, 1.0]


def test_json_string_labels():
    assert grade([ADD, "print(input()[::-1])"], ['["assert add(1, 2) == 3"]', '{"inputs": ["abc"], "outputs": ["cba"]}']) == [
        1.0,
        1.0,
    ]


@pytest.mark.parametrize(
    "label", [None, [], "", "  ", "{not json", "assert (", ["assert ("], {"inputs": ["1"]}, {"inputs": [], "outputs": []}, 42]
)
def test_unreadable_labels_are_unscored(label):
    (score,) = grade(ADD, label)
    assert isinstance(score, Unscored) and str(score)


def test_last_fenced_block_is_the_program():
    assert program_of("first\n```python\nx = 1\n```\nthen\n```\nx = 2\n```\nend") == "x = 2\n"
    assert program_of("x = 3") == "x = 3"


@pytest.mark.parametrize(
    "cheat",
    ["print('PASSED')", "import sys\nsys.exit(0)", "import os\nos._exit(0)", "import atexit, os\natexit.register(os._exit, 0)"],
)
def test_printing_passed_or_exiting_early_does_not_pass(cheat):
    assert grade(cheat, ["assert add(1, 2) == 3"]) == [0.0]


# The sandbox


@pytest.mark.parametrize(
    "program",
    [
        "def f(x):\n    while x == 2:\n        pass\n    return x",
        "import time\ndef f(x):\n    time.sleep(60 if x == 2 else 0)\n    return x",
    ],
)
def test_a_test_past_the_time_limit_ends_and_scores_zero(program):
    start = time.monotonic()
    assert grade(program, ["assert f(1) == 1", "assert f(2) == 2"], time_limit_s=1) == [0.5]
    assert time.monotonic() - start < 4
    assert sandbox_processes() == []


PROCESSES = {
    "fork": "import os\nif os.fork() == 0:\n    import time; time.sleep(60)",
    "system": "import os\nassert os.system('true') == 0",
    "subprocess": "import subprocess\nsubprocess.run(['true'], check=True)",
    "posix_spawn": "import os\nos.posix_spawn('/bin/true', ['true'], {})",
    "multiprocessing": "import multiprocessing\nmultiprocessing.Process(target=print).start()",
    "_posixsubprocess": "import _posixsubprocess",
    "fork bomb": "import os\nfor _ in range(6):\n    os.fork()",  # bounded: 64 processes where the hook is missing
}


@pytest.mark.parametrize("program", PROCESSES.values(), ids=PROCESSES.keys())
def test_creating_processes_is_refused(program):
    assert grade(program, PASSES, time_limit_s=2) == [0.0]
    assert sandbox_processes() == []


def test_forked_children_die_with_the_test(tmp_path):
    """Without the audit hook a fork succeeds: the process-group kill must still end the child."""
    sandbox = {"limits": (2, 2**30, 2**24), "forbidden": (), "readable": (), "wall_s": 2.0, "output_limit": 2**20}
    program = "import os, time\nif os.fork() == 0:\n    time.sleep(60)"
    assert run_test(program, {"mode": "assert", "test": "assert True"}, sandbox, guard=False)
    assert sandbox_processes() == []


OTHER_ESCAPES = {
    "ctypes": "import ctypes\nctypes.CDLL(None)",
    "signal the trainer": "import os\nos.kill(os.getppid(), 0)",
    "raise a limit": "import resource\nresource.setrlimit(resource.RLIMIT_AS, (-1, -1))",
    "symlink": "import os\nos.symlink('/', 'root')",
    "gc walk": "import gc\ngc.get_objects()",
    "device file": "import os, stat\nos.mknod('null', stat.S_IFCHR | 0o600, os.makedev(1, 3))\nopen('null', 'w').write('x')",
}


@pytest.mark.parametrize("program", OTHER_ESCAPES.values(), ids=OTHER_ESCAPES.keys())
def test_other_escapes_are_refused(program):
    assert grade(program, PASSES) == [0.0]


@pytest.mark.parametrize(
    "write",
    [
        "open({path!r}, 'w').write('x')",
        "import os\nos.close(os.open({path!r}, os.O_WRONLY | os.O_CREAT))",
        "import os\nfd = os.open({parent!r}, os.O_RDONLY)\nos.close(os.open('run/escaped.txt', os.O_WRONLY | os.O_CREAT, dir_fd=fd))",
        "import os\nopen('mine.txt', 'w').write('x')\nos.rename('mine.txt', {path!r})",
        "import os, os.path\nhere = os.getcwd()\nos.path.realpath = os.path.abspath = os.path.normpath = lambda *a, **k: here + '/x'\nopen({path!r}, 'w')",
    ],
    ids=["open", "os.open", "dir_fd", "rename", "monkeypatched os"],
)
def test_writing_outside_scratch_fails(tmp_path, monkeypatch, write):
    run = tmp_path / "run"
    run.mkdir()
    monkeypatch.chdir(run)  # the trainer's folder: the tests' scratch folders are elsewhere
    target = run / "escaped.txt"
    assert grade(write.format(path=str(target), parent=str(tmp_path)), PASSES) == [0.0]
    assert not target.exists()


def test_writing_in_scratch_works():
    program = "import os, tempfile\nopen('a.txt', 'w').write('hi')\nos.mkdir('d')\nos.rename('a.txt', 'd/b.txt')\nos.remove('d/b.txt')\n"
    program += "with tempfile.NamedTemporaryFile() as f:\n    f.write(b'x')\nassert os.listdir('.') == ['d']"
    assert grade(program, PASSES) == [1.0]


def test_filling_the_disk_is_stopped():
    program = (
        "with open('big', 'wb') as f:\n    for _ in range(64):\n        f.write(bytes(2**20))"  # 64 MB, in its own scratch folder
    )
    assert grade(program, PASSES) == [0.0]


def test_memory_is_limited():
    assert grade(["x = bytearray(2**30)", "x = bytearray(2**20)"], [PASSES, PASSES], memory_mb=256) == [0.0, 1.0]


def test_reading_forbidden_folders_fails(tmp_path, monkeypatch):
    run, elsewhere = tmp_path / "run", tmp_path / "elsewhere"
    run.mkdir()
    elsewhere.mkdir()
    (run / "secret.txt").write_text("token")
    (elsewhere / "public.txt").write_text("data")
    (elsewhere / "link").symlink_to(run)
    monkeypatch.chdir(run)  # forbidden by default: the trainer's cwd
    read = "assert open({!r}).read()"
    programs = [
        read.format(str(run / "secret.txt")),
        read.format(str(elsewhere / "link" / "secret.txt")),
        f"import os\nos.listdir({str(run)!r})",
    ]
    assert grade(programs, [PASSES] * 3) == [0.0, 0.0, 0.0]
    extra = grade([read.format(str(elsewhere / "public.txt"))] * 2, [PASSES] * 2, forbidden_dirs=[])
    assert extra == [1.0, 1.0]  # elsewhere is readable...
    assert grade(read.format(str(elsewhere / "public.txt")), PASSES, forbidden_dirs=[str(elsewhere)]) == [
        0.0
    ]  # ...unless forbidden


def test_socket_connect_fails():
    with socket.create_server(("127.0.0.1", 0)) as server:
        server.setblocking(False)
        port = server.getsockname()[1]
        assert grade(f"import socket\nsocket.create_connection(('127.0.0.1', {port}), timeout=2).sendall(b'hi')", PASSES) == [0.0]
        with pytest.raises(BlockingIOError):
            server.accept()
