"""One run at a time in a run folder: a second run into a folder a live run holds is one line, exit
2, and leaves the first alone; a lock whose process is gone is taken over; the lock goes with the run."""

import json
import signal
import subprocess
import sys
import time

import pytest

from rlhand.run.lock import LOCK_NAME, RunFolderBusy, RunFolderLock
from tests.test_cli_faults import EXE, QUICK, one_line


def holder_file(folder, pid, host=None):
    import socket

    folder.mkdir(parents=True, exist_ok=True)
    (folder / LOCK_NAME).write_text(json.dumps({"pid": pid, "host": host or socket.gethostname(), "started": "then"}))


def test_a_live_holder_refuses_a_dead_one_is_taken_over(tmp_path):
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        holder_file(tmp_path / "run", sleeper.pid)
        with pytest.raises(RunFolderBusy, match=rf"is in use by another run \(pid {sleeper.pid}, started then\)"):
            RunFolderLock(tmp_path / "run").acquire()
    finally:
        sleeper.kill()
        sleeper.wait()
    lock = RunFolderLock(tmp_path / "run")
    assert "took over a stale lock" in lock.acquire()
    lock.release()
    assert not (tmp_path / "run" / LOCK_NAME).exists()
    holder_file(tmp_path / "other", 1, host="another-machine")
    with pytest.raises(RunFolderBusy, match="locked by a run on another-machine"):
        RunFolderLock(tmp_path / "other").acquire()


def test_a_second_run_into_a_busy_folder_is_one_line_and_the_first_goes_on(tmp_path):
    first = subprocess.Popen([EXE, *QUICK, "trainer.max_steps=2000", "hydra.run.dir=run"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (tmp_path / "run" / "logs" / "metrics.jsonl").exists() and time.monotonic() < deadline:
            time.sleep(0.5)
        second = subprocess.run([EXE, *QUICK, "hydra.run.dir=run"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
        assert second.returncode == 2
        assert f"is in use by another run (pid {first.pid}" in one_line(second)
        assert first.poll() is None  # still training
    finally:
        # SIGTERM, not SIGINT: a suite started in the background hands its children an ignored SIGINT.
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=300)
    assert first.returncode == 143
    assert not (tmp_path / "run" / LOCK_NAME).exists()  # released as the run ended
