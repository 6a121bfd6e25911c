"""plots/training_metrics.png and plots/ppo_metrics.png: the run's own curves, written at the end."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: no display on servers and CI
import matplotlib.pyplot as plt  # noqa: E402

TRAINING_PANELS = [
    ("reward/mean", "val/reward", "Reward (score)", "mean score"),
    ("kl/ref", "val/kl", "KL to reference", "nats per response"),
    ("response/length_mean", "val/response_length", "Response length", "tokens"),
    ("train/loss", "val/loss", "Loss (supervised stages)", "loss"),
    ("train/accuracy", "val/accuracy", "Pairwise accuracy (reward model)", "fraction of pairs"),
    ("train/margin", "val/margin", "Score margin chosen - rejected", "score"),
    ("lr", None, "Learning rate", "LR"),
]
PPO_PANELS = [
    ("loss/policy", None, "Policy loss", "loss"),
    ("loss/value", None, "Value loss", "loss"),
    ("policy/entropy", "val/entropy", "Entropy", "nats per token"),
    ("policy/clipfrac", None, "Clipped fraction", "fraction of tokens"),
    ("policy/approx_kl", None, "Approx. KL(old || new)", "nats per token"),
    ("value/explained_variance", None, "Explained variance", "1 - Var(R - V) / Var(R)"),
]


def plot_run(history: list[dict], out_dir: Path, title: str) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for name, panels in (("training_metrics.png", TRAINING_PANELS), ("ppo_metrics.png", PPO_PANELS)):
        panels = [p for p in panels if any(p[0] in row for row in history)]
        if not panels:
            continue
        cols = 2
        rows = (len(panels) + cols - 1) // cols
        fig, axes = plt.subplots(rows, cols, figsize=(6 * cols, 3.2 * rows), squeeze=False)
        for ax, (train_key, val_key, heading, unit) in zip(axes.flat, panels):
            _line(ax, history, train_key, "training" if val_key else train_key)
            if val_key:
                _line(ax, history, val_key, "validation", marker="o")
            ax.set_title(heading)
            ax.set_xlabel("step")
            ax.set_ylabel(unit)
            ax.grid(alpha=0.3)
            ax.legend(fontsize=8)
        for ax in list(axes.flat)[len(panels) :]:
            ax.axis("off")
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(out_dir / name, dpi=110)
        plt.close(fig)
        written.append(out_dir / name)
    return written


def _line(ax, history: list[dict], key: str, label: str, marker: str | None = None) -> None:
    points = [(row["step"], row[key]) for row in history if row.get(key) is not None]
    if points:
        steps, values = zip(*points)
        ax.plot(steps, values, label=label, marker=marker, markersize=3)
