"""reward.timeout_s for a reward function called in the training process: a call that runs past it
is interrupted and stops the run with one line naming the function (rlhand-train then names the last
checkpoint). A hung reward used to freeze a run forever (verl PR #6673, AReaL #548).

A watchdog thread waits out the limit, then signals the main thread (SIGUSR1), whose handler raises
CallTimedOut inside the function: that ends a sleep, a wait on a socket or a Python loop. Code that
never returns to the interpreter (a C loop holding the GIL) cannot be interrupted: after a grace period
the watchdog says so and ends the process (exit 2). reward.workers=N scores in processes instead, where
a sample past the limit costs only its score."""

import os
import signal
import sys
import threading
from contextlib import contextmanager

GRACE_S = 10  # seconds  # after the signal, before the watchdog gives up on the main thread


class CallTimedOut(BaseException):
    """Raised inside the reward function. A BaseException, so that its own `except Exception` does
    not swallow it."""


@contextmanager
def time_limit(seconds: float | None, name: str):
    """Bound the block to `seconds` (None or 0: unbounded). Only in the main thread, where signal
    handlers run; elsewhere (a reward server's request thread) the block runs unbounded."""
    if not seconds or threading.current_thread() is not threading.main_thread():
        yield
        return
    state = {"active": True}
    done = threading.Event()

    def interrupt(signum, frame):
        if state["active"]:
            raise CallTimedOut()

    def watchdog():
        if done.wait(seconds):
            return
        # Again each second of the grace period: a bare `except:` in the function may swallow one.
        for _ in range(int(GRACE_S)):
            signal.pthread_kill(threading.main_thread().ident, signal.SIGUSR1)
            if done.wait(1.0):
                return
        print(f"rlhand: error: {name} ran past reward.timeout_s={seconds:g} and could not be interrupted (stuck outside Python, "
              "or it swallows the interruption); the run stops (reward.workers=N scores in processes that can be killed)", file=sys.stderr, flush=True)  # fmt: skip
        os._exit(2)

    previous = signal.signal(signal.SIGUSR1, interrupt)
    thread = threading.Thread(target=watchdog, name="reward-timeout", daemon=True)
    try:
        thread.start()
        yield
    finally:
        state["active"] = False  # a signal arriving now finds nothing to interrupt
        done.set()
        if thread.ident is not None:  # an interrupt (SIGTERM) may land before start() returns: join only what started
            thread.join()
        if previous is not None:  # None: a handler set outside Python (faulthandler), which cannot be put back
            signal.signal(signal.SIGUSR1, previous)
