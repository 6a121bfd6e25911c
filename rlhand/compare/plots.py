"""Comparison figures: one line per group (mean over its runs) with a min-max band across runs."""

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from rlhand.compare.runs import Run  # noqa: E402
from rlhand.compare.summary import moving_average  # noqa: E402

DIAGNOSTICS = [
    ("kl/ref", "KL to the reference", "nats per response"),
    ("policy/entropy", "Policy entropy", "nats per token"),
    ("replay/sample_efficiency", "Sample efficiency", "samples trained / generated"),
    ("replay/buffer_size", "Replay buffer size", "samples stored"),
]


def _aligned(runs: list[Run], key: str, x_key: str | None, window: int):
    """x and the runs' smoothed values stacked (runs x points), cut to the shortest run."""
    curves = []
    for run in runs:
        rows = [row for row in run.rows if row.get(key) is not None]
        if not rows:
            continue
        values = moving_average([row[key] for row in rows], window)
        if x_key == "time":
            x = np.cumsum([row.get("time/iteration_s", 0.0) for row in rows])
        else:
            x = np.array([row[x_key] if x_key else row["step"] for row in rows], dtype=float)
        curves.append((x, np.array(values)))
    if not curves:
        return None, None
    if x_key == "time":  # different per run: interpolate onto a shared grid
        grid = np.linspace(max(x[0] for x, _ in curves), min(x[-1] for x, _ in curves), 200)
        return grid, np.stack([np.interp(grid, x, y) for x, y in curves])
    n = min(len(x) for x, _ in curves)
    return curves[0][0][:n], np.stack([y[:n] for _, y in curves])


def _panel(ax, groups, key, x_key, window, title, xlabel, ylabel, threshold=None):
    for index, (label, runs) in enumerate(groups.items()):
        x, ys = _aligned(runs, key, x_key, window)
        if x is None:
            continue
        color = f"C{index % 10}"  # a group keeps its colour in every panel, even where others have no data
        ax.plot(x, ys.mean(axis=0), label=f"{label} (n={len(ys)})", color=color)
        if len(ys) > 1:
            ax.fill_between(x, ys.min(axis=0), ys.max(axis=0), color=color, alpha=0.15)
    if threshold is not None:
        ax.axhline(threshold, color="grey", linestyle="--", linewidth=1, label=f"threshold {threshold}")
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=7)
    else:
        ax.text(0.5, 0.5, f"no run logged {key}", ha="center", va="center", transform=ax.transAxes, color="grey")


def plot_comparison(groups: dict[str, list[Run]], out_dir: Path, threshold: float, window: int) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    smooth = f"{window}-iteration moving average; line = mean over runs, band = min..max"
    fig, axes = plt.subplots(1, 3, figsize=(18, 5))
    for ax, (x_key, xlabel) in zip(
        axes, [(None, "PPO iteration"), ("samples/generated", "samples generated (prompt + response)"), ("time", "training time (s)")]
    ):
        _panel(ax, groups, "reward/mean", x_key, window, f"Reward vs {xlabel.split(' (')[0]}", xlabel, "reward/mean (task score)", threshold)
    fig.suptitle(f"Rollout reward ({smooth})")
    fig.tight_layout()
    reward_path = out_dir / "reward.png"
    fig.savefig(reward_path, dpi=110)
    plt.close(fig)

    fig, axes = plt.subplots(2, 2, figsize=(13, 9))
    for ax, (key, title, ylabel) in zip(axes.flat, DIAGNOSTICS):
        _panel(ax, groups, key, None, window if key.startswith(("kl", "policy")) else 1, title, "PPO iteration", ylabel)
    fig.suptitle(f"Diagnostics (line = mean over runs, band = min..max; KL and entropy: {window}-iteration moving average)")
    fig.tight_layout()
    diag_path = out_dir / "diagnostics.png"
    fig.savefig(diag_path, dpi=110)
    plt.close(fig)
    return [reward_path, diag_path]
