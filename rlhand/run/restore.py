"""Where a run starts: fresh, or from a checkpoint (resume=auto or a path), decided before any
model loads; and what a checkpoint gives back once the models exist."""

from pathlib import Path

from rlhand.checkpoint.resume import check_same_layout, check_same_model, find_resume_checkpoint
from rlhand.distributed.context import DistContext
from rlhand.errors import UserError
from rlhand.run.folder import claim_run_folder
from rlhand.run.lock import RunFolderLock


def find_start(resume: str | None, run_dir: Path, config: dict, ctx: DistContext, rank_local_state: bool, lock: RunFolderLock | None = None) -> tuple[Path | None, list[str]]:
    """(the checkpoint to resume from or None, notes for the log), after checking that this run may
    write its folder (no other live run holds it: rank 0 takes `lock`) and that the checkpoint fits it. Rank 0 decides (it alone tidies interrupted
    writes) and every rank takes its answer, error included. `rank_local_state`: each rank keeps
    state of its own (a replay buffer), so only the same number of ranks can resume it."""
    decision: tuple = (None, [], None)
    if ctx.is_main:
        notes: list[str] = []
        try:
            taken_over = lock.acquire() if lock is not None else None  # one run at a time in the folder
            if taken_over:
                notes.append(taken_over)
            found = find_resume_checkpoint(resume, run_dir, notes.append)
            claim_run_folder(run_dir, resume, found)
            if found is not None:
                check_same_model(found, config)
                check_same_layout(found, ctx.world_size, rank_local_state)
            decision = (found, notes, None)
        except UserError as err:
            decision = (None, notes, err)
    found, notes, error = ctx.broadcast_object(decision)
    if error is not None:
        raise error
    return found, notes
