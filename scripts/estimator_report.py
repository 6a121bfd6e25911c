"""The estimator experiment's numbers (docs/results/estimators.md), from its run folders.

    .venv/bin/python scripts/estimator_report.py OUT        (OUT as scripts/estimator_experiment.sh wrote it)

Per task and condition (estimator, replay, PPO epochs), mean ± std over seeds: samples and generated
tokens until the 5-iteration moving average of reward/mean first reaches the task's threshold (fixed
before the runs: THRESHOLDS), how many seeds reached it, optimizer steps per iteration, training
seconds (to the threshold and in all) and the final reward. Then the advantage drift of replayed
samples by age (replay/adv_drift_*), weighted by the rows behind each figure. rlhand-compare's
plots per task go to OUT/plots_<task>/.
"""

import statistics
import sys
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from rlhand.compare.plots import plot_comparison  # noqa: E402
from rlhand.compare.runs import find_runs, group_runs  # noqa: E402
from rlhand.compare.summary import moving_average  # noqa: E402

THRESHOLDS = {"letters": 0.25, "first_letter": 0.5}  # chosen before running (letters: the README's replay threshold)
WINDOW = 5  # as docs/results/sample_efficiency.md
AGES = ("1", "2", "3-4", "5-8", "9+")


def spread(values: list[float], digits: int = 3) -> str:
    if not values:
        return "–"
    text = f"{statistics.fmean(values):.{digits}g}"
    return text + (f" ± {statistics.stdev(values):.2g}" if len(values) > 1 else "")


def run_figures(run) -> dict:
    rows, threshold = run.rows, THRESHOLDS[run.config["task.name"]]
    smooth = moving_average([row["reward/mean"] for row in rows], WINDOW)
    hit = next((i for i, value in enumerate(smooth) if i >= WINDOW - 1 and value >= threshold), None)
    tokens, seconds, tokens_at, seconds_at = 0, 0.0, [], []
    for row in rows:
        tokens += row["response/generated_tokens"]
        seconds += row["time/iteration_s"]
        tokens_at.append(tokens)
        seconds_at.append(seconds)
    return {
        "samples": rows[hit]["samples/generated"] if hit is not None else None,
        "tokens": tokens_at[hit] if hit is not None else None,
        "seconds_to": seconds_at[hit] if hit is not None else None,
        "seconds": seconds,
        "final": statistics.fmean(row["reward/mean"] for row in rows[-WINDOW:]),
        "steps": statistics.fmean(row["policy/optimizer_steps"] for row in rows),
        "trained_per_generated": rows[-1]["samples/trained"] / rows[-1]["samples/generated"],
    }


def condition(run) -> tuple:
    c = run.config
    return (c["task.name"], c["algo.estimator"], c["replay.name"], c["algo.ppo_epochs"])


def main(out: Path) -> None:
    runs = find_runs([out])
    groups = defaultdict(list)
    for run in runs:
        groups[condition(run)].append(run)
    print(f"{len(runs)} runs in {out}\n")
    for task, threshold in THRESHOLDS.items():
        print(f"### {task}: reward/mean ({WINDOW}-iteration moving average) ≥ {threshold}\n")
        print("| estimator | replay | epochs | seeds reached | samples to it | tokens to it | seconds to it | optimizer steps / iteration | samples trained / generated | final reward | seconds in all |")
        print("|" + " --- |" * 11)
        for key in sorted(k for k in groups if k[0] == task):
            figures = [run_figures(run) for run in groups[key]]
            reached = [f for f in figures if f["samples"] is not None]
            print(
                f"| {key[1]} | {key[2]} | {key[3]} | {len(reached)}/{len(figures)} | {spread([f['samples'] for f in reached])} "
                f"| {spread([f['tokens'] for f in reached])} | {spread([f['seconds_to'] for f in reached])} | {spread([f['steps'] for f in figures])} "
                f"| {spread([f['trained_per_generated'] for f in figures])} | {spread([f['final'] for f in figures], 2)} | {spread([f['seconds'] for f in figures])} |"
            )
        print()
    for task, threshold in THRESHOLDS.items():
        mine = [run for run in runs if run.config["task.name"] == task]
        if mine:
            plot_comparison(group_runs(mine, ["algo.estimator", "replay.name", "algo.ppo_epochs"]), out / f"plots_{task}", threshold, WINDOW)
    print("### Advantage drift of replayed samples by age (A_now - A_stored, raw, mean over tokens)\n")
    print("| task | estimator | " + " | ".join(f"age {a}: mean (abs)" for a in AGES) + " |")
    print("|" + " --- |" * (2 + len(AGES)))
    for key in sorted(k for k in groups if k[2] != "off"):
        cells = []
        for age in AGES:
            signed = absolute = count = 0.0
            for run in groups[key]:
                for row in run.rows:
                    n = row.get(f"replay/adv_drift_rows_age{age}", 0)
                    if n:
                        signed += row[f"replay/adv_drift_age{age}"] * n
                        absolute += row[f"replay/adv_drift_abs_age{age}"] * n
                        count += n
            cells.append(f"{signed / count:+.3f} ({absolute / count:.3f})" if count else "–")
        print(f"| {key[0]} | {key[1]} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main(Path(sys.argv[1]))
