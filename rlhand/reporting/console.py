"""The rich console: a progress bar with the compact line (PL VL R KL ...), or plain lines."""

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

SUPERVISED = [("train/loss", "L", ".4f"), ("train/perplexity", "PPL", ".2f"), ("train/accuracy", "ACC", ".3f"), ("train/margin", "M", "+.3f"),
              ("val/loss", "VAL_L", ".4f"), ("val/accuracy", "VAL_ACC", ".3f")]  # fmt: skip


def compact_line(m: dict) -> str:
    if "loss/policy" not in m:  # a supervised stage (stage=sft, stage=reward_model)
        return " ".join(f"{short}:{m[key]:{spec}}" for key, short, spec in SUPERVISED if key in m)
    value = f" VL:{m['loss/value']:.3f}" if "loss/value" in m else ""  # no critic, no value loss
    line = (
        f"PL:{m['loss/policy']:+.3f}{value} R:{m['reward/mean']:+.3f} "
        f"KL:{m['kl/ref']:.3f} ENT:{m['policy/entropy']:.2f} LEN:{m['response/length_mean']:.1f}"
    )
    if "replay/buffer_size" in m:
        line += f" BUF:{m['replay/buffer_size']} EFF:{m['replay/sample_efficiency']:.1f}x"
    if "val/reward" in m:
        line += f" VAL:{m['val/reward']:+.3f}"
    return line


class ConsoleReporter:
    def __init__(self, total_steps: int, progress_bar: bool, every: int, console: Console | None = None):
        self.console = console or Console(stderr=True)
        self.every, self.total_steps = every, total_steps
        self.progress = None
        if progress_bar and self.console.is_terminal:
            self.progress = Progress(
                TextColumn("[bold]train"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeElapsedColumn(),
                TimeRemainingColumn(),
                TextColumn("{task.fields[line]}"),
                console=self.console,
            )
            self.task = self.progress.add_task("train", total=total_steps, line="")
            self.progress.start()

    def print(self, text: str) -> None:
        self.console.print(text, highlight=False, soft_wrap=True)

    def step(self, metrics: dict) -> None:
        line = compact_line(metrics)
        if self.progress is not None:
            self.progress.update(self.task, completed=metrics["step"], line=line)
        elif metrics["step"] % self.every == 0 or metrics["step"] in (1, self.total_steps) or any(k.startswith("val/") for k in metrics):
            self.print(f"step {metrics['step']:>5}  {line}  ({metrics['time/iteration_s']:.2f}s/it)")

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()
