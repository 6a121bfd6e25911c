"""One place the trainer reports to: messages go to the console and the text log; each metrics row
goes to the console line, logs/metrics.jsonl, TensorBoard and wandb, whichever are switched on."""

import hashlib
from pathlib import Path

from rlhand.config.schema import TrainConfig
from rlhand.reporting.console import ConsoleReporter, compact_line
from rlhand.reporting.metrics_file import MetricsFile
from rlhand.reporting.text_log import close_text_log, open_text_log


class RunLogger:
    def __init__(self, cfg: TrainConfig, run_dir: Path, config: dict, history: list[dict], resumed_step: int):
        log_dir = run_dir / "logs"
        log_dir.mkdir(parents=True, exist_ok=True)
        self.every = cfg.logging.console_every
        self.console = ConsoleReporter(cfg.trainer.max_steps, cfg.logging.progress_bar, cfg.logging.console_every)
        self.text = open_text_log(log_dir) if cfg.logging.text_log else None
        self.sinks = []
        if cfg.logging.jsonl:
            self.sinks.append(MetricsFile(log_dir / "metrics.jsonl", history))
        if cfg.logging.tensorboard:
            from rlhand.reporting.tensorboard import TensorBoardSink

            self.sinks.append(TensorBoardSink(log_dir / "tensorboard", resumed_step))
        if cfg.logging.wandb:
            from rlhand.reporting.wandb_sink import WandbSink

            # The same id for the same run folder, so a resumed run continues its wandb run.
            run_id = hashlib.sha1(str(run_dir.resolve()).encode()).hexdigest()[:12]
            self.sinks.append(WandbSink(cfg.logging, log_dir, run_id, run_dir.name, config, warn=self))

    def info(self, message: str) -> None:
        self.console.print(message)
        if self.text:
            self.text.info(message)

    def warning(self, message: str) -> None:
        self.console.print(f"warning: {message}")
        if self.text:
            self.text.warning(message)

    def error(self, message: str) -> None:
        if self.text:
            self.text.error(message)

    def metrics(self, row: dict) -> None:
        self.console.step(row)
        for sink in self.sinks:
            sink.write(row)
        if self.text and (row["step"] % self.every == 0 or row["step"] == 1 or "val/reward" in row):
            self.text.info(f"step {row['step']} {compact_line(row)}")

    def close(self) -> None:
        self.console.close()
        for sink in self.sinks:
            sink.close()
        if self.text:
            close_text_log(self.text)
