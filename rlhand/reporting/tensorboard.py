"""logs/tensorboard/: scalar event files, one tag per metric key."""

from pathlib import Path


class TensorBoardSink:
    def __init__(self, log_dir: Path, resumed_step: int | None):
        from torch.utils.tensorboard import SummaryWriter  # needs the tensorboard package

        # purge_step drops events past the checkpoint that an interrupted run had already written.
        purge = resumed_step + 1 if resumed_step is not None else None
        self.writer = SummaryWriter(log_dir=str(log_dir), purge_step=purge)

    def write(self, metrics: dict) -> None:
        step = metrics["step"]
        for key, value in metrics.items():
            if key != "step" and isinstance(value, (int, float)) and not isinstance(value, bool):
                self.writer.add_scalar(key, value, step)
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()
