"""reward.workers=N: a reward function scored one sample at a time in N worker processes, each
sample under reward.timeout_s. A sample past the limit has its worker killed (with its process
group: each worker leads one; the code grader's tests die with it by PR_SET_PDEATHSIG) and a fresh one started; a sample whose call
raises, or whose worker dies, is reported too. Either way the caller decides what the sample scores
(rlhand/rewards/function.py: reward.failure_score, counted, or the run stops).

Workers are spawned (not forked from a process holding model threads) and import the function by its
`_target_`, so it must be importable by name; a class is built once per worker."""

import math
import multiprocessing
import os
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any

from rlhand.errors import RewardError

STARTUP_S = 300.0  # a worker that cannot import its function in this long is a fault, not a sample's


@dataclass
class Outcome:
    """One sample's result: `value` (what the function returned for it) when `failure` is None, else
    the failure ("timeout" or "error") and why."""

    value: Any = None
    failure: str | None = None
    reason: str = ""


def _serve(conn: Connection, spec: dict) -> None:
    """A worker's loop: load the function, then score one sample per message until told to stop."""
    os.setsid()  # its own process group: a kill reaches whatever the function started
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the trainer's to handle
    threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
    from rlhand.rewards.function import resolve_reward_function

    try:
        fn = resolve_reward_function(spec)
    except Exception as err:  # noqa: BLE001 - reported to the trainer as one line
        conn.send(("broken", f"{type(err).__name__}: {err}"))
        return
    conn.send(("ready", None))
    while True:
        try:
            message = conn.recv()
        except EOFError:
            return
        if message is None:
            return
        prompt, response, columns = message
        try:
            result = fn([prompt], [response], **columns)
            if hasattr(result, "tolist"):  # a tensor or an array
                result = result.tolist()
            if isinstance(result, (str, bytes)) or not hasattr(result, "__len__") or len(result) != 1:
                conn.send(("error", f"returned {result!r} for one sample; it must return a sequence of one score"))
                continue
            conn.send(("ok", result[0]))
        except Exception as err:  # noqa: BLE001 - one sample's fault, reported as its outcome
            conn.send(("error", f"{type(err).__name__}: {err}"))


def _exit_with_parent(parent: int) -> None:
    """A trainer killed outright (SIGKILL, the OOM killer) cannot stop its workers: each stops itself
    once its parent is gone, even in the middle of a hung sample."""
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(0)


class _Worker:
    def __init__(self, spec: dict):
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=_serve, args=(child, spec), daemon=True, name="rlhand-reward-worker")
        self.process.start()
        child.close()
        self.born = time.monotonic()
        self.ready = False
        self.task: tuple[int, float] | None = None  # (sample index, when it was sent)

    def kill(self) -> None:
        try:
            os.killpg(self.process.pid, signal.SIGKILL)  # with what it started
        except (ProcessLookupError, PermissionError):
            pass  # not yet the leader of its group (still starting), or gone
        self.process.kill()
        self.process.join(5)
        self.conn.close()



class WorkerPool:
    def __init__(self, spec: dict, workers: int, timeout_s: float | None, name: str):
        self.spec, self.size, self.timeout_s, self.name = spec, workers, timeout_s or math.inf, name
        self.workers: list[_Worker] = []
        self.load_deaths = 0  # in a row

    def score(self, samples: list[tuple[str, str, dict]]) -> list[Outcome]:
        """One Outcome per (prompt, response, columns) sample, in order."""
        if not samples:
            return []
        if not self.workers:
            self.workers = [_Worker(self.spec) for _ in range(self.size)]
        outcomes: list[Outcome | None] = [None] * len(samples)
        pending = deque(range(len(samples)))
        while pending or any(w.task for w in self.workers):
            for worker in list(self.workers):
                if worker.ready and worker.task is None and pending:
                    index = pending.popleft()
                    try:
                        worker.conn.send(samples[index])
                    except OSError:  # it died since its last sample (killed, out of memory): the sample waits for its replacement
                        pending.appendleft(index)
                        self._replace(worker)
                        continue
                    worker.task = (index, time.monotonic())
            for conn in wait([w.conn for w in self.workers], timeout=self._next_deadline()):
                worker = next(w for w in self.workers if w.conn is conn)
                self._receive(worker, outcomes)
            self._enforce_limits(outcomes)
        return outcomes  # type: ignore[return-value]

    def _next_deadline(self) -> float | None:
        now, deadlines = time.monotonic(), []
        for w in self.workers:
            if w.task is not None:
                deadlines.append(w.task[1] + self.timeout_s)
            elif not w.ready:
                deadlines.append(w.born + STARTUP_S)
        if not deadlines or min(deadlines) == math.inf:  # no time limit (reward.timeout_s=0): wait for an answer
            return None
        return max(0.0, min(deadlines) - now)

    def _receive(self, worker: _Worker, outcomes: list) -> None:
        try:
            kind, value = worker.conn.recv()
        except (EOFError, OSError):  # it died: a crash in native code, out of memory, killed
            worker.process.join(1)
            code = worker.process.exitcode
            if worker.task is None:  # between samples or while loading: nothing lost but the process
                if not worker.ready:
                    self.load_deaths += 1
                    if self.load_deaths >= 3:  # not one killed process, but a function that kills its worker on import
                        self.close()
                        raise RewardError(f"{self.name}: reward workers died {self.load_deaths} times while loading it (last exit code {code})") from None
                self._replace(worker)
                return
            outcomes[worker.task[0]] = Outcome(failure="error", reason=f"its worker process died (exit code {code})")
            self._replace(worker)
            return
        if kind == "ready":
            worker.ready = True
            self.load_deaths = 0
        elif kind == "broken":
            self.close()
            raise RewardError(f"{self.name}: cannot load it in a reward worker: {value}")
        else:
            index = worker.task[0]
            worker.task = None
            outcomes[index] = Outcome(value=value) if kind == "ok" else Outcome(failure="error", reason=value)

    def _enforce_limits(self, outcomes: list) -> None:
        now = time.monotonic()
        for worker in list(self.workers):
            if worker.task is not None and now - worker.task[1] > self.timeout_s:
                outcomes[worker.task[0]] = Outcome(failure="timeout", reason=f"ran past reward.timeout_s={self.timeout_s:g}")
                self._replace(worker)
            elif not worker.ready and now - worker.born > STARTUP_S:
                self.close()
                raise RewardError(f"{self.name}: a reward worker could not load it in {STARTUP_S:g} s")

    def _replace(self, worker: _Worker) -> None:
        worker.kill()
        self.workers[self.workers.index(worker)] = _Worker(self.spec)

    def close(self) -> None:
        """Ask every worker to stop, wait a few seconds in all, then kill what is left (a busy one)."""
        for worker in self.workers:
            try:
                worker.conn.send(None)
            except (OSError, ValueError):
                pass
        deadline = time.monotonic() + 5.0
        for worker in self.workers:
            worker.process.join(max(0.0, deadline - time.monotonic()))
            if worker.process.is_alive():
                worker.kill()
        self.workers = []
