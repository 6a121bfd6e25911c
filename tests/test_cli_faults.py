"""Faults a user can cause, as a user meets them: `rlhand-train` in a subprocess must end with one
line on stderr (no traceback), a status that says what happened, and nothing on disk lost."""

import json
import re
import shutil
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest

from rlhand.errors import OutputError, writing
from tests.conftest import FAST

EXE = shutil.which("rlhand-train") or str(Path(sys.executable).parent / "rlhand-train")
QUICK = FAST + ["trainer.save_final=false"]


def cli(*args, cwd):
    return subprocess.run([EXE, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def one_line(out) -> str:
    lines = out.stderr.strip().splitlines()
    assert "Traceback" not in out.stderr, out.stderr
    return lines[-1]


def test_an_unwritable_run_folder(tmp_path):
    (tmp_path / "a_file").write_text("")
    out = cli(*QUICK, "hydra.run.dir=a_file/run", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["rlhand-train: error: cannot write a_file/run: Not a directory"]


def test_hydra_override_errors_are_one_line(tmp_path):
    out = cli("algo.clip_rato=0.1", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == [
        "rlhand-train: error: Could not override 'algo.clip_rato'. To append to your config use +algo.clip_rato=0.1 "
        "(Key 'clip_rato' not in 'AlgoConfig')"
    ]


def test_a_reward_function_returning_nan_mid_run(tmp_path):
    (tmp_path / "bad_reward.py").write_text("def nan_after_one_call(prompts, responses, **_):\n    return [float('nan')] * len(prompts)\n")
    out = subprocess.run(
        [EXE, *QUICK, "reward.function._target_=bad_reward.nan_after_one_call", "hydra.run.dir=run", "checkpoint.every=1"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**_env(), "PYTHONPATH": str(tmp_path)},
    )
    assert out.returncode == 2
    assert one_line(out).startswith("rlhand-train: error: reward function bad_reward.nan_after_one_call returned nan for sample 0")


def test_a_non_utf8_prompt_file_names_its_line(tmp_path):
    (tmp_path / "p.jsonl").write_bytes(b'{"prompt": "ok="}\n{"prompt": "caf\xe9="}\n')
    out = cli(*QUICK, "task=file", "task.path=p.jsonl", "reward=letters", "hydra.run.dir=run", cwd=tmp_path)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["rlhand-train: error: p.jsonl: line 2: not valid UTF-8 (byte 0xe9 at column 16)"]


@pytest.mark.parametrize("sig, status", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
def test_interrupt_says_where_the_last_checkpoint_is(tmp_path, sig, status):
    run = tmp_path / "run"
    args = [EXE, *QUICK, "trainer.max_steps=500", "checkpoint.every=2", f"hydra.run.dir={run}"]
    # SIG_DFL in the child: a suite started in the background (nohup, `&`) hands its children an
    # ignored SIGINT, and Python then installs no KeyboardInterrupt handler at all.
    proc = subprocess.Popen(
        args, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=lambda: signal.signal(sig, signal.SIG_DFL)
    )
    deadline = time.time() + 120
    # Any checkpoint from step 4 on: under load this process may sleep through step_4's short life
    # (checkpoint.keep=2 prunes it at step 8).
    while time.time() < deadline and max(_checkpoint_steps(run / "checkpoints"), default=0) < 4:
        time.sleep(0.02)
    proc.send_signal(sig)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == status, stderr
    assert "Traceback" not in stderr
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("rlhand-train: interrupted at step ") and "; last checkpoint: " in last and "rerun with resume=auto" in last
    checkpoint = Path(last.split("; last checkpoint: ")[1].split(" (")[0])
    assert checkpoint.is_dir() and not list((run / "checkpoints").glob("*.tmp"))


SIGNAL_IN_CHECKPOINT = """
import os, signal, time
import torch.distributed.checkpoint.filesystem as fs
_write = fs.FileSystemWriter.write_data

def write_data(self, plan, planner):  # the signal arrives while DCP writes step 2's weights
    if "step_2" in str(self.path):
        os.kill(os.getpid(), getattr(signal, os.environ["SIGNAL"]))
        time.sleep(2)
    return _write(self, plan, planner)

fs.FileSystemWriter.write_data = write_data
"""


@pytest.mark.parametrize("sig, status", [("SIGINT", 130), ("SIGTERM", 143)])
def test_an_interrupt_while_a_checkpoint_is_written_is_one_line(tmp_path, sig, status):
    """torch.distributed.checkpoint catches the KeyboardInterrupt and wraps it in a CheckpointException:
    still one line, the signal's status, and the half-written checkpoint gone."""
    (tmp_path / "signal_in_checkpoint.py").write_text(SIGNAL_IN_CHECKPOINT)
    out = subprocess.run(
        [sys.executable, "-c", "import signal_in_checkpoint; from rlhand.train import main; main()", *QUICK, "trainer.max_steps=4",
         "checkpoint.every=1", "hydra.run.dir=run"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**_env(), "PYTHONPATH": str(tmp_path), "SIGNAL": sig},
        preexec_fn=lambda: signal.signal(getattr(signal, sig), signal.SIG_DFL),
    )
    assert out.returncode == status, out.stderr[-3000:]
    assert one_line(out) == (
        f"rlhand-train: interrupted at step 2; last checkpoint: {tmp_path / 'run' / 'checkpoints' / 'step_1'} (rerun with resume=auto to continue from it)"
    )
    assert sorted(p.name for p in (tmp_path / "run" / "checkpoints").iterdir()) == ["step_1"]


def _env():
    import os

    return dict(os.environ)


# --- a full disk ---------------------------------------------------------------------------------


def test_write_failures_keep_their_reason():
    for err in (
        OSError(28, "No space left on device"),
        RuntimeError("Error while serializing: I/O error: No space left on device (os error 28)"),  # safetensors
    ):
        with pytest.raises(OutputError, match=r"^cannot write x/step_3: No space left on device$"), writing(Path("x/step_3")):
            raise err
    try:  # torch.save: a RuntimeError raised while handling the OSError
        try:
            raise OSError(28, "No space left on device")
        except OSError:
            raise RuntimeError("[enforce fail at inline_container.cc:672] . unexpected pos 1118208 vs 1118096")
    except RuntimeError as chained:
        with pytest.raises(OutputError, match="No space left on device"), writing(Path("x")):
            raise chained
    with pytest.raises(KeyError), writing(Path("x")):  # not an I/O failure: passes unchanged
        raise KeyError("bug")


@pytest.fixture
def small_disk(tmp_path):
    """A 6 MiB tmpfs: room for two checkpoints of the tiny model, not three."""
    mount = tmp_path / f"disk-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    made = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(mount)], capture_output=True)
    if made.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here (needs root); test_write_failures_keep_their_reason covers the logic")
    yield mount
    subprocess.run(["umount", "-l", str(mount)], capture_output=True)


def test_a_full_disk_is_one_line_and_the_last_checkpoint_stays_whole(small_disk, tmp_path):
    run = small_disk / "run"
    out = cli(*QUICK, "trainer.max_steps=50", "checkpoint.every=1", "checkpoint.keep=9", f"hydra.run.dir={run}", cwd=tmp_path)
    assert out.returncode == 2
    last = one_line(out)
    assert re.search(r"No space left on device( \([0-9.]+ MiB free\))?; last checkpoint: ", last), last
    checkpoint = Path(last.split("; last checkpoint: ")[1].split(" (")[0])
    from rlhand.checkpoint.store import verify_checkpoint

    assert verify_checkpoint(checkpoint) >= 1
    assert not list((run / "checkpoints").glob("*.tmp"))
    rows = [json.loads(line) for line in (run / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert rows and rows[-1]["step"] >= verify_checkpoint(checkpoint)


def _checkpoint_steps(folder: Path) -> list[int]:
    try:
        names = [path.name for path in folder.iterdir()]
    except OSError:
        return []
    return [int(name[5:]) for name in names if name.startswith("step_") and name[5:].isdigit()]


def test_bad_conversation_data_and_rl_settings_under_sft_are_one_line_before_any_model_loads(tmp_path):
    """A user's file mixing text and message-list prompts, and `algo.lr` given to stage=sft (which
    would train exactly as without it): one line naming the row or the key, exit 2, no run folder."""
    (tmp_path / "p.jsonl").write_text('{"prompt": "ab="}\n{"prompt": [{"role": "user", "content": "ab="}]}\n')
    out = cli(*QUICK, "task=file", "task.path=p.jsonl", "reward.function._target_=rlhand.tasks.letters.letters_reward", "hydra.run.dir=run", cwd=tmp_path)
    assert out.returncode == 2
    assert one_line(out) == "rlhand-train: error: p.jsonl: line 2: 'prompt' is a message list where the rows before it have text; one file holds one kind of prompt"
    assert not (tmp_path / "run" / "logs").exists()
    out = cli("stage=sft", "algo.lr=1e-9", "hydra.run.dir=run2", cwd=tmp_path)
    assert out.returncode == 2
    assert one_line(out) == "rlhand-train: error: algo.lr: stage=sft does not read it (its learning rate is sft.lr)"
