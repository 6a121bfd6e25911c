"""Faults a user can cause or fix: bad config, prompts, checkpoints, models, reward functions, a full
disk. rlhand-train prints each as one line naming the field, file or line and exits with status 2
(rlhand/train.py); anything else is a bug and keeps its traceback."""

import os
import re
import shutil
from contextlib import contextmanager
from pathlib import Path

EXIT_USER_ERROR = 2


def exit_with(message: str, status: int = EXIT_USER_ERROR, quiet: bool = False):
    """End the process the way rlhand's commands end on a fault: one line on stderr (unless
    `quiet`: another process of the job says it), then `status` (2: a fault the user can fix)."""
    import sys

    if not quiet:
        print(message, file=sys.stderr)
    raise SystemExit(status)


class UserError(ValueError):
    """A fault the user can fix; the message is one line naming the field, file or line."""


class OutputError(UserError):
    """Writing under the run folder failed (a full disk, a read-only or vanished folder)."""


class ModelLoadError(UserError):
    """A model or tokenizer path that is missing, not a model, or damaged."""


class RewardError(UserError):
    """A reward function that returned something other than one finite number per sample."""


# safetensors and other native writers report the OS error inside their message; DCP carries each
# rank's failure as a formatted traceback ("OSError: [Errno 28] ...").
_OS_ERROR_IN_TEXT = re.compile(r"\(os error (\d+)\)|\[Errno (\d+)\]")


def write_failure(err: BaseException) -> str | None:
    """Why a write failed ("No space left on device", ...), or None if `err` is no I/O failure.
    Looks down the exception chain: torch.save reports a failed write as a RuntimeError raised
    while handling the OSError."""
    seen = set()
    while err is not None and id(err) not in seen:
        seen.add(id(err))
        if isinstance(err, OSError):
            return err.strerror or str(err)
        found = _OS_ERROR_IN_TEXT.search(str(err))
        if found:
            return os.strerror(int(found.group(1) or found.group(2)))
        err = err.__cause__ or err.__context__
    return None


# Some writers lose the OS error (DCP's torch.save reports "unexpected pos"): a failed write on a disk
# with less than this left is a full disk.
NEARLY_FULL = 64 * 2**20


def wrapped_interrupt(err: BaseException) -> KeyboardInterrupt | None:
    """The Ctrl-C (or SIGTERM, raised as a KeyboardInterrupt) inside a torch.distributed.checkpoint
    failure: DCP catches whatever a rank raises, the interrupt too, and reports it as a
    CheckpointException whose `failures` map each rank to (exception, stack)."""
    for failure in getattr(err, "failures", {}).values():
        inner = failure[0] if isinstance(failure, tuple) else failure
        if isinstance(inner, KeyboardInterrupt):
            return inner
    return None


@contextmanager
def writing(path: Path):
    """Turn an I/O failure inside the block into an OutputError naming `path`; other errors pass,
    and an interrupt that DCP wrapped comes out as the interrupt it was."""
    try:
        yield
    except (UserError, KeyboardInterrupt, SystemExit, GeneratorExit):
        raise
    except BaseException as err:  # noqa: BLE001 - DCP's CheckpointException is a BaseException; others re-raise as they were
        interrupt = wrapped_interrupt(err)
        if interrupt is not None:
            raise interrupt from None
        reason = write_failure(err) or _full_disk(Path(path))
        if reason is None:
            raise
        raise OutputError(f"cannot write {path}: {reason}") from None


def _full_disk(path: Path) -> str | None:
    existing = next((p for p in [path, *path.parents] if p.exists()), None)
    if existing is None:
        return None
    free = shutil.disk_usage(existing).free
    return f"No space left on device ({free / 2**20:.1f} MiB free)" if free < NEARLY_FULL else None
