"""logs/tensorboard/: scalar event files, one tag per metric key; validation samples as text."""

from pathlib import Path

from rlhand.reporting.samples import markdown


class TensorBoardSink:
    def __init__(self, log_dir: Path, resumed_step: int):
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        # purge_step drops events past the checkpoint (every event on a fresh restart) that an
        # interrupted run had already written.
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=resumed_step + 1)

    def write(self, metrics: dict) -> None:
        step = metrics["step"]
        for key, value in metrics.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def samples(self, step: int, samples: list[dict]) -> None:
        """One step's samples as a markdown table in the text panel, under samples/<split>."""
        self.writer.add_text(f"samples/{samples[0].get('split', 'val')}", markdown(samples), step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
