"""Per-run and per-group figures: final reward, samples and seconds to a reward threshold, ..."""

import statistics
from dataclasses import dataclass

from rlhand.compare.runs import Run


@dataclass
class RunSummary:
    final_reward: float  # mean reward/mean of the last `window` iterations
    steps: int
    generated: int
    seconds: float  # training time: sum of time/iteration_s
    samples_to_threshold: int | None  # samples/generated when the moving average first reached it
    seconds_to_threshold: float | None
    sample_efficiency: float
    peak_rss_mb: float | None


def moving_average(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, value in enumerate(values):
        total += value
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def summarize(run: Run, threshold: float, window: int, metric: str = "reward/mean") -> RunSummary:
    rows = run.rows
    rewards = [row[metric] for row in rows]
    elapsed, seconds = [], 0.0
    for row in rows:
        seconds += row.get("time/iteration_s", 0.0)
        elapsed.append(seconds)
    smooth = moving_average(rewards, window)
    # Only full windows count: a lucky first iteration is not "reaching" the threshold.
    hit = next((i for i, value in enumerate(smooth) if i >= window - 1 and value >= threshold), None)
    last = rows[-1]
    return RunSummary(
        final_reward=statistics.fmean(rewards[-window:]),
        steps=last["step"],
        generated=last.get("samples/generated", 0),
        seconds=seconds,
        samples_to_threshold=rows[hit]["samples/generated"] if hit is not None else None,
        seconds_to_threshold=elapsed[hit] if hit is not None else None,
        sample_efficiency=last.get("replay/sample_efficiency", last.get("samples/trained", 0) / max(1, last.get("samples/generated", 1))),
        peak_rss_mb=max((row["memory/rss_peak_mb"] for row in rows if "memory/rss_peak_mb" in row), default=None),
    )


def _mean_spread(values: list[float | None]) -> str:
    got = [v for v in values if v is not None]
    if not got:
        return "not reached"
    text = f"{statistics.fmean(got):.4g}"
    if len(got) > 1:
        text += f" ± {statistics.stdev(got):.2g}"
    if len(got) < len(values):
        text += f" ({len(got)}/{len(values)} runs)"
    return text


def markdown_table(groups: dict[str, list[Run]], threshold: float, window: int) -> str:
    header = (
        f"| group | runs | final reward (last {window}) | samples to reward ≥ {threshold} | seconds to it "
        "| sample efficiency | seconds in all | peak RSS MB |"
    )
    lines = [header, "|" + " --- |" * 8]
    for label, runs in groups.items():
        s = [summarize(run, threshold, window) for run in runs]
        lines.append(
            f"| {label} | {len(runs)} | {_mean_spread([x.final_reward for x in s])} | {_mean_spread([x.samples_to_threshold for x in s])} "
            f"| {_mean_spread([x.seconds_to_threshold for x in s])} | {_mean_spread([x.sample_efficiency for x in s])} "
            f"| {_mean_spread([x.seconds for x in s])} | {_mean_spread([x.peak_rss_mb for x in s])} |"
        )
    notes = (
        f"\nMean ± standard deviation over runs (seeds). Threshold: the {window}-iteration moving average of reward/mean "
        "first reaching it; samples = prompts+responses generated; seconds = training time (sum of time/iteration_s)."
    )
    return "\n".join(lines) + "\n" + notes + "\n"
