"""rlhand-train: the Hydra entry point. Compose config -> check it -> Trainer(cfg).fit()."""

import sys
import traceback
from pathlib import Path

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.types import RunMode
from omegaconf import DictConfig

from rlhand.config import ConfigError, load_config, register_configs


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


def build_trainer(cfg: DictConfig, run_dir: Path):
    """Check the config and inputs, build the models: everything before training."""
    from rlhand.trainer.loop import Trainer

    return Trainer(load_config(cfg), run_dir)


def bad_input_errors() -> tuple[type[Exception], ...]:
    from rlhand.data.prompts import PromptError

    return (ConfigError, PromptError, ValueError)


def run(cfg: DictConfig, run_dir: Path) -> list[dict]:
    try:
        trainer = build_trainer(cfg, run_dir)
    except bad_input_errors() as err:
        print(f"rlhand-train: error: {err}", file=sys.stderr)
        raise SystemExit(2) from None
    return trainer.fit()


def run_sweep_job(cfg: DictConfig, run_dir: Path, job: str) -> list[dict]:
    """A multirun job: a failure is written to <job dir>/FAILED and raised as JobFailed, which
    Hydra's launchers record without stopping the other jobs (the sweep then exits non-zero)."""
    try:
        try:
            trainer = build_trainer(cfg, run_dir)
        except bad_input_errors() as err:
            print(f"rlhand-train: error: {err}", file=sys.stderr)
            reason = f"bad input: {err}"
        else:
            return trainer.fit()
    except Exception as err:  # noqa: BLE001 - any crash of one job must not end the sweep
        traceback.print_exc()
        reason = f"{type(err).__name__}: {err}"
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "FAILED").write_text(f"{job}: {reason}\n", encoding="utf-8")
    raise JobFailed(f"sweep job {job} failed: {reason}") from None


register_configs()


@hydra.main(version_base="1.3", config_path=conf_dir(), config_name="train")
def main(cfg: DictConfig) -> None:
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    if hydra_cfg.mode == RunMode.MULTIRUN:
        run_sweep_job(cfg, run_dir, f"#{hydra_cfg.job.num} ({hydra_cfg.job.override_dirname})")
    else:
        run(cfg, run_dir)


if __name__ == "__main__":
    main()
