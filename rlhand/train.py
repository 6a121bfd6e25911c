"""rlhand-train: the Hydra entry point. Compose config -> check it -> a run of its stage -> fit().

One process: `rlhand-train ...`. Several: `torchrun --nproc-per-node N -m rlhand.train ...` (and
--nnodes/--node-rank with a c10d rendezvous across machines), or a SLURM job of N tasks through
hydra/launcher=slurm. Every rank composes the same config and agrees on one run folder.

Every fault a user can cause or fix ends the run with one line on stderr, `rlhand-train: error:
...`, and exit status 2: bad config (Hydra's own composition errors too), prompt files, model paths,
checkpoints, reward functions, a full disk or an unwritable run folder. Ctrl-C (or SIGTERM, e.g. a
SLURM pre-emption) ends it with one line saying where the last checkpoint is, exit 130 (143 for SIGTERM). Anything
else is a bug and keeps its traceback (exit 1).
"""

import os
import signal
import sys
import time
import traceback
from datetime import datetime
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import HydraException
from hydra.types import RunMode
from omegaconf import DictConfig, OmegaConf

from rlhand.config import load_config, register_configs
from rlhand.distributed import context
from rlhand.errors import UserError, exit_with
from rlhand.evaluation.tuning import tuning_objective
from rlhand.user_code import import_from_working_directory, quiet_library_progress


def conf_dir() -> str:
    """Configs ship inside the wheel as rlhand/conf; a source checkout keeps them in ./conf.
    An absolute path, because Hydra resolves relative ones against the module (a known pitfall)."""
    here = Path(__file__).resolve().parent
    for candidate in (here / "conf", here.parent / "conf"):
        if (candidate / "train.yaml").exists():
            return str(candidate)
    raise FileNotFoundError(f"rlhand: no conf/train.yaml next to {here}")


class JobFailed(RuntimeError):
    """One job of a multirun failed; the sweep goes on and Hydra reports this at its end."""


class Interrupted(KeyboardInterrupt):
    """SIGTERM, raised like Ctrl-C so that the same clean exit follows (status 128 + 15)."""

    signum = signal.SIGTERM


def build_run(cfg: DictConfig, run_dir: Path):
    """Check the config and inputs, build the models: everything before training (rlhand/run/)."""
    from rlhand.config.load import ConfigError
    from rlhand.config.stages import check_overrides
    from rlhand.stages import build_run as build

    quiet_library_progress()  # here, not in main(): --help and a refused command need no transformers
    overrides = command_line_overrides()
    if cfg.get("resume") and in_hydra_run():
        cfg = resumed(cfg, run_dir, overrides)
    config = load_config(cfg)
    try:
        check_overrides(config.stage, overrides)
    except ValueError as err:
        raise ConfigError(str(err)) from None
    job = build(config, run_dir)
    job.notes_info.extend(RESUME_LINES)
    RESUME_LINES.clear()
    return job


RESUME_LINES: list[str] = []  # what resumed() says, for the run's log


def resumed(cfg: DictConfig, run_dir: Path, overrides: list[str]) -> DictConfig:
    """A resumed run's own saved config with this command's overrides on top (rlhand/config/resumed.py),
    said in one line; the command's config where the run saved none (nothing ran in it yet)."""
    from rlhand.config.resumed import read_saved, resumed_config, saved_config_file

    path = saved_config_file(cfg.resume, run_dir)
    saved = read_saved(path)
    if saved is None:
        return cfg
    current = OmegaConf.to_container(cfg, resolve=True)
    merged, applied = resumed_config(saved, overrides, str(path), current)
    merged.resume = cfg.resume
    on_top = f"; on top: {' '.join(applied)}" if applied else ""
    RESUME_LINES.append(f"resume: the run's own config ({path}){on_top}")  # logged as the run begins: a refusal stays one line
    return merged


def in_hydra_run() -> bool:
    try:
        HydraConfig.get()
    except ValueError:
        return False
    return True


def command_line_overrides() -> list[str]:
    """This job's overrides as given on the command line (a sweep job's own values among them)."""
    try:
        return list(HydraConfig.get().overrides.task)
    except ValueError:  # composed outside a Hydra run (a test, a script)
        return []


def run(cfg: DictConfig, run_dir: Path) -> list[dict]:
    job = None
    try:
        job = build_run(cfg, run_dir)
        return job.fit()
    except UserError as err:
        context.announce_failure(context.current().rank)
        exit_with(f"{who(job)}: error: {err}{where_to_continue(job)}", quiet=not says_it(job))
    except KeyboardInterrupt as err:
        step = f" at step {job.step}" if job is not None and job.step else " before training started"
        # A signal reaches every rank alike: rank 0 says it for all.
        exit_with(f"rlhand-train: interrupted{step}{where_to_continue(job)}", 128 + getattr(err, "signum", signal.SIGINT), quiet=not context.current().is_main)
    except Exception as err:
        # Another rank's failure reaches this one as a broken collective: one line, not gloo's traceback.
        gone = context.peer_failure(err)
        if gone is None:
            context.announce_failure(context.current().rank)
            raise  # a bug in rlhand: its traceback
        exit_with(f"{who(job)}: error: {gone}{where_to_continue(job)}")


def who(job) -> str:
    return context.current().label("rlhand-train")


def says_it(job) -> bool:
    """Rank 0 reports every fault. Before training starts every rank sees the same inputs, so the
    others keep quiet; once it runs, a rank's own fault (its shard's reward, say) is its to report."""
    return context.current().is_main or (job is not None and job.step > 0)


def where_to_continue(job) -> str:
    """The part of an error line that says what is safe on disk (nothing before training starts)."""
    if job is None or not job.step:
        return ""
    if job.last_checkpoint is None:
        if not job.cfg.checkpoint.every:
            return "; this run keeps no checkpoints (checkpoint.every=0)"
        return "; no checkpoint was written yet"
    same_folder = job.last_checkpoint.parent.parent.resolve() == job.run_dir.resolve()
    again = "resume=auto" if same_folder else f"resume={job.last_checkpoint}"
    return f"; last checkpoint: {job.last_checkpoint} (rerun with {again} to continue from it)"


def run_sweep_job(cfg: DictConfig, run_dir: Path, job: str) -> list[dict]:
    """A multirun job: a failure is written to <job dir>/FAILED and raised as JobFailed, which
    Hydra's launchers record without stopping the other jobs (the sweep then exits non-zero)."""
    try:
        try:
            this_run = build_run(cfg, run_dir)
        except UserError as err:
            print(f"rlhand-train: error: {err}", file=sys.stderr)
            reason = f"bad input: {err}"
        else:
            return this_run.fit()
    except Exception as err:  # noqa: BLE001 - any crash of one job must not end the sweep
        traceback.print_exc()
        reason = f"{type(err).__name__}: {err}"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "FAILED").write_text(f"{job}: {reason}\n", encoding="utf-8")
    raise JobFailed(f"sweep job {job} failed: {reason}") from None


register_configs()
_LAUNCH_TIME = time.time()
OmegaConf.register_new_resolver("launch_time", lambda pattern: datetime.fromtimestamp(_LAUNCH_TIME).strftime(pattern), replace=True)


def run_label(stage: str, algo: str, estimator: str, replay: str) -> str:
    """A run folder's name after its time: the stage, or for RL what distinguishes one run of it."""
    return stage if stage != "ppo" else f"{algo}_{estimator}_{replay}"


OmegaConf.register_new_resolver("run_label", run_label, replace=True)


def agree_on_launch() -> None:
    """Ranks start a little apart: all take rank 0's start time (the run folder's name), and only
    rank 0 writes Hydra's .hydra/ folder."""
    global _LAUNCH_TIME
    ctx = context.init_from_env()
    _LAUNCH_TIME = ctx.broadcast_object(_LAUNCH_TIME)
    if not ctx.is_main:
        sys.argv.append("hydra.output_subdir=null")


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="train")
def hydra_main(cfg: DictConfig) -> float:
    """One run; returns its tuning objective (rlhand/evaluation/tuning.py), which a sweeper such
    as hydra/sweeper=optuna maximises."""
    context.init_from_env()  # a SLURM job's tasks join here (torchrun's ranks already have, in main)
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        history = run_sweep_job(cfg, run_dir, f"#{hydra_cfg.job.num} ({hydra_cfg.job.override_dirname})")
    else:
        history = run(cfg, run_dir)
    from rlhand.config.figures import watched_figure

    return tuning_objective(history, watched_figure(cfg))


def main() -> None:
    """The console script. Hydra re-raises what it would print as a shortened traceback
    (HYDRA_FULL_ERROR), so that faults of the user's making come out as one line."""
    os.environ["HYDRA_FULL_ERROR"] = "1"
    import_from_working_directory()
    signal.signal(signal.SIGTERM, _raise_interrupted)
    finished = False
    try:
        agree_on_launch()
        hydra_main()
        finished = True
    except KeyboardInterrupt as err:  # before the run started (composing, a sweep's launcher)
        exit_with("rlhand-train: interrupted before training started", 128 + getattr(err, "signum", signal.SIGINT))
    except (HydraException, UserError, JobFailed) as err:
        # Every rank composes the same config and meets the same fault: rank 0 says it.
        exit_with(f"rlhand-train: error: {one_line(err)}", quiet=not context.current().is_main)
    except OSError as err:  # Hydra creating the run folder or writing .hydra/ there
        exit_with(f"rlhand-train: error: cannot write {err.filename}: {err.strerror}" if err.filename else f"rlhand-train: error: {err}")
    finally:
        context.shutdown(wait_for_others=finished)  # after a fault, peers may never arrive


def one_line(err: BaseException) -> str:
    """A Hydra message (several lines, often with an OmegaConf cause) as one line."""
    text = " ".join(line.strip() for line in str(err).splitlines() if line.strip())
    cause = err.__cause__
    if cause is not None and str(cause).strip():
        text += f" ({str(cause).strip().splitlines()[0]})"
    return text


def _raise_interrupted(signum, frame) -> None:
    raise Interrupted()


if __name__ == "__main__":
    main()
