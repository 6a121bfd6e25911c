"""Weights & Biases, offline by default. wandb must never hang or fail a run: a failed init or log
call is reported once and the sink switches itself off."""

import logging
from pathlib import Path

from rlhand.config.schema import LoggingConfig


class WandbSink:
    def __init__(self, cfg: LoggingConfig, log_dir: Path, run_id: str, run_name: str, config: dict, warn: logging.Logger):
        self.run, self.warn = None, warn
        try:
            import wandb

            log_dir.mkdir(parents=True, exist_ok=True)
            self.run = wandb.init(
                project=cfg.wandb_project,
                entity=cfg.wandb_entity,
                mode=cfg.wandb_mode.value,
                dir=str(log_dir),
                id=run_id,
                name=run_name,
                resume="allow",
                config=config,
                # Bounded: with mode=online and no network, wait at most this long, then carry on without it.
                settings=wandb.Settings(init_timeout=60, silent=True, console="off", x_disable_stats=True),
                reinit="create_new",
            )
        except Exception as err:  # noqa: BLE001 - any wandb failure is a warning, never a failed run
            self.warn.warning(f"wandb: switched off ({type(err).__name__}: {err})")
            self.run = None

    def write(self, metrics: dict) -> None:
        if self.run is None:
            return
        try:
            self.run.log({k: v for k, v in metrics.items() if k != "step"}, step=metrics["step"])
        except Exception as err:  # noqa: BLE001
            self.warn.warning(f"wandb: logging failed, switched off ({type(err).__name__}: {err})")
            self.run = None

    def samples(self, step: int, samples: list[dict]) -> None:
        """One step's samples (validation's or a training rollout's) as a wandb Table under
        samples/<split>: step, split, prompt, response, a column per score."""
        if self.run is None:
            return
        try:
            import wandb

            names, split = list(samples[0]["scores"]), samples[0].get("split", "val")
            rows = [[step, s.get("split", split), s["prompt"], s["response"], *(s["scores"][n] for n in names)] for s in samples]
            self.run.log({f"samples/{split}": wandb.Table(columns=["step", "split", "prompt", "response", *names], data=rows)}, step=step)
        except Exception as err:  # noqa: BLE001
            self.warn.warning(f"wandb: logging samples failed, switched off ({type(err).__name__}: {err})")
            self.run = None

    def close(self) -> None:
        if self.run is not None:
            try:
                self.run.finish()
            except Exception as err:  # noqa: BLE001
                self.warn.warning(f"wandb: finish failed ({type(err).__name__}: {err})")
            self.run = None
