"""One run at a time in a run folder. Two runs started into the same folder used to both train to the
end, then both fail at final/ with one metrics.jsonl holding one run's rows and one log holding both.
The first to start holds `.rlhand.lock` (its pid, host and start) until it exits, however it exits;
a lock whose process is gone (killed, the machine rebooted) is stale and taken over."""

import atexit
import json
import os
import socket
import time
from pathlib import Path

from rlhand.errors import UserError

LOCK_NAME = ".rlhand.lock"


class RunFolderBusy(UserError):
    """Another live run holds the folder."""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: alive
        return True
    return True


class RunFolderLock:
    def __init__(self, run_dir: Path):
        self.path = Path(run_dir) / LOCK_NAME
        self.held = False

    def acquire(self) -> str | None:
        """Take the lock, or raise RunFolderBusy naming who holds it. Returns a note when a stale
        lock was taken over."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        me = {"pid": os.getpid(), "host": socket.gethostname(), "started": time.strftime("%Y-%m-%d %H:%M:%S")}
        note = None
        for _ in range(2):
            try:
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
            except FileExistsError:
                holder = self._holder()
                if holder is not None and holder.get("host") == me["host"] and _alive(int(holder.get("pid", -1))) and holder.get("pid") != me["pid"]:
                    raise RunFolderBusy(
                        f"{self.path.parent} is in use by another run (pid {holder['pid']}, started {holder.get('started', '?')}); "
                        "wait for it to end, or give this run another hydra.run.dir"
                    ) from None
                if holder is not None and holder.get("host") != me["host"]:
                    raise RunFolderBusy(
                        f"{self.path.parent} is locked by a run on {holder.get('host')} (pid {holder.get('pid')}); "
                        f"if that run is gone, delete {self.path}"
                    ) from None
                if holder is None or holder.get("pid") != me["pid"]:  # this process's own (a run built, never fitted) is no news
                    note = f"took over a stale lock in {self.path.parent} (pid {holder.get('pid') if holder else '?'} has ended)"
                self.path.unlink(missing_ok=True)
                continue
            with os.fdopen(fd, "w") as handle:
                json.dump(me, handle)
            self.held = True
            atexit.register(self.release)  # also when the run fails before its own cleanup
            return note
        raise RunFolderBusy(f"{self.path}: cannot take the run folder's lock")

    def _holder(self) -> dict | None:
        try:
            return json.loads(self.path.read_text())
        except (OSError, ValueError):
            return None  # half-written by a process killed at that moment: stale

    def release(self) -> None:
        if self.held:
            self.held = False
            holder = self._holder()
            if holder is None or holder.get("pid") == os.getpid():
                self.path.unlink(missing_ok=True)
