"""One place the trainer reports to: messages go to the console and the text log; each metrics row
goes to the console line, logs/metrics.jsonl, TensorBoard and wandb, whichever are switched on.
A write that fails (a full disk) is an OutputError naming logs/; closing never hides the error
that ended a run."""

import hashlib
from pathlib import Path

from rlhand.config.schema import TrainConfig
from rlhand.errors import writing
from rlhand.reporting.console import ConsoleReporter, compact_line
from rlhand.reporting.metrics_file import MetricsFile
from rlhand.reporting.samples import SamplesFile, console_line
from rlhand.reporting.text_log import close_text_log, open_text_log


class RunLogger:
    def __init__(self, cfg: TrainConfig, run_dir: Path, config: dict, history: list[dict], resumed_step: int):
        self.log_dir = log_dir = run_dir / "logs"
        self.every = cfg.logging.console_every
        self.console = ConsoleReporter(cfg.trainer.max_steps, cfg.logging.progress_bar, cfg.logging.console_every)
        self.text, self.sinks = None, []
        with writing(log_dir):
            log_dir.mkdir(parents=True, exist_ok=True)
            self.text = open_text_log(log_dir) if cfg.logging.text_log else None
            if cfg.logging.jsonl:
                self.sinks.append(MetricsFile(log_dir / "metrics.jsonl", history))
            wanted = cfg.eval.samples and (cfg.eval.every or cfg.eval.samples_every)
            self.samples_file = SamplesFile(log_dir / "samples.jsonl", resumed_step) if wanted else None
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
            with writing(self.log_dir):
                self.text.info(message)

    def text_only(self, message: str) -> None:
        """Into the text log alone (already on the console)."""
        if self.text:
            with writing(self.log_dir):
                self.text.info(message)

    def warning(self, message: str) -> None:
        self.console.print(f"warning: {message}")
        if self.text:
            with writing(self.log_dir):
                self.text.warning(message)

    def error(self, message: str) -> None:
        """The text log's record of what ended the run; if even that cannot be written, the
        error being reported is what the user needs to see."""
        if self.text:
            try:
                self.text.error(message)
            except Exception:  # noqa: BLE001
                pass

    def metrics(self, row: dict) -> None:
        self.console.step(row)
        with writing(self.log_dir):
            for sink in self.sinks:
                sink.write(row)
            if self.text and (row["step"] % self.every == 0 or row["step"] == 1 or "val/reward" in row):
                self.text.info(f"step {row['step']} {compact_line(row)}")

    def samples(self, step: int, samples: list[dict]) -> None:
        if not samples:
            return
        self.console.print(console_line(samples[0]))
        with writing(self.log_dir):
            if self.samples_file is not None:
                self.samples_file.write(step, samples)
            for sink in self.sinks:
                if hasattr(sink, "samples"):  # TensorBoard's text panel, a wandb table
                    sink.samples(step, samples)

    def close(self) -> None:
        self.console.close()
        for closing in [sink.close for sink in self.sinks] + ([lambda: close_text_log(self.text)] if self.text else []):
            try:
                closing()
            except Exception:  # noqa: BLE001 - a failed flush on a full disk; the run's own error is reported
                pass


class SilentLogger:
    """What ranks other than 0 report to: nothing (rank 0 writes the run's logs and metrics)."""

    def info(self, message: str) -> None:
        pass

    def text_only(self, message: str) -> None:
        pass

    def warning(self, message: str) -> None:
        pass

    def error(self, message: str) -> None:
        pass

    def metrics(self, row: dict) -> None:
        pass

    def samples(self, step: int, samples: list[dict]) -> None:
        pass

    def close(self) -> None:
        pass
