"""Whether this run may write into its run folder.

A run folder holds one run's trajectory. Writing a fresh run into a folder that already holds one
would interleave two runs in logs/metrics.jsonl (steps 1, 2, 1, 2) and mix their checkpoints, so it
is refused before any model loads. `resume=auto` continues the folder's run: from its newest valid
checkpoint, or from the start when it has none (a crash before the first checkpoint), in which
case metrics.jsonl and TensorBoard are rewritten from step 1 (RunLogger), as a resume rewrites
them from its checkpoint.
"""

from pathlib import Path

from rlhand.checkpoint.store import list_checkpoints
from rlhand.config.schema import RESUME_AUTO
from rlhand.errors import UserError


class RunFolderError(UserError):
    """The run folder already holds another run; the message says how to continue or avoid it."""


def claim_run_folder(run_dir: Path, resume: str | None, resume_from: Path | None) -> None:
    run_dir = Path(run_dir)
    continuing = resume == RESUME_AUTO or (resume_from is not None and resume_from.parent.parent.resolve() == run_dir.resolve())
    if resume == RESUME_AUTO and resume_from is None and (run_dir / "final").is_dir():
        # Its final/ says it ended, and nothing says where: training it again would overwrite it.
        raise RunFolderError(f"{run_dir} holds a finished run and no checkpoint to continue it from (checkpoint.every=0); start a new run in another folder")
    found = None if continuing else previous_run(run_dir)
    if found:
        raise RunFolderError(
            f"{run_dir} already holds a run ({found}); continue it with resume=auto, or give this run another hydra.run.dir"
        )


def previous_run(run_dir: Path) -> str | None:
    """What a run left in run_dir (its metrics rows, checkpoints, final models), or None."""
    found = []
    metrics = run_dir / "logs" / "metrics.jsonl"
    if metrics.is_file() and metrics.stat().st_size > 0:
        with metrics.open("rb") as handle:
            rows = sum(1 for _ in handle)
        found.append(f"logs/metrics.jsonl with {rows} row{'' if rows == 1 else 's'}")
    checkpoints = list_checkpoints(run_dir / "checkpoints")
    if checkpoints:
        found.append(f"{len(checkpoints)} checkpoints up to step {checkpoints[-1][0]}")
    if (run_dir / "final").is_dir():
        found.append("final/")
    return ", ".join(found) or None
