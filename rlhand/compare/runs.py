"""Find runs under folders (single runs, multirun sweeps, or anything nesting them), load them, and
group them by the config keys that tell them apart."""

import json
from dataclasses import dataclass, field
from pathlib import Path

from rlhand.config.load import flatten
from rlhand.reporting.metrics_file import read_metrics

# Keys that never define a group by default: the seed is what a group's runs vary over, and a
# resume path says where a run came from, not what it is.
NOT_A_SETTING = ("seed", "resume")


@dataclass
class Run:
    path: Path
    config: dict  # flattened: {"algo.name": "ppo", "replay.name": "off", "seed": 0, ...}
    rows: list[dict]
    notes: list[str] = field(default_factory=list)  # what a reader should know (e.g. rows dropped)

    def series(self, key: str) -> tuple[list[float], list[float]]:
        """(steps, values) of the rows that have `key`."""
        points = [(row["step"], row[key]) for row in self.rows if row.get(key) is not None]
        return ([p[0] for p in points], [p[1] for p in points]) if points else ([], [])


def find_runs(roots: list[Path]) -> list[Run]:
    runs = []
    for root in roots:
        for metrics in sorted(Path(root).rglob("logs/metrics.jsonl")):
            run_dir = metrics.parent.parent
            config_file = run_dir / "training_config.json"
            if not config_file.exists():
                continue
            rows, notes = last_trajectory(read_metrics(metrics))
            if rows:
                runs.append(Run(path=run_dir, config=flatten(json.loads(config_file.read_text())), rows=rows, notes=notes))
    return runs


def last_trajectory(rows: list[dict]) -> tuple[list[dict], list[str]]:
    """The rows after the last place where `step` stops increasing. Older versions of rlhand appended a
    second run (or a restart) to the same metrics.jsonl; only the last one is the run's."""
    start = 0
    for i in range(1, len(rows)):
        if rows[i]["step"] <= rows[i - 1]["step"]:
            start = i
    if start == 0:
        return rows, []
    return rows[start:], [f"logs/metrics.jsonl restarts at step {rows[start]['step']} after row {start}: using the last {len(rows) - start} rows"]


def distinguishing_keys(runs: list[Run]) -> list[str]:
    """The config keys whose values tell the runs apart, except the seed: the default grouping, so a
    sweep over replay=standard,priority and replay.buffer_size=500,1000 gives four groups.

    A key whose value follows from keys already kept is left out (replay.prioritized follows from
    replay.name), so labels stay short; option names (`*.name`) are considered first."""
    keys = sorted({key for run in runs for key in run.config} - set(NOT_A_SETTING))
    differing = [key for key in keys if len({_hashable(run.config.get(key)) for run in runs}) > 1]
    differing.sort(key=lambda key: (not key.endswith(".name"), key))
    kept: list[str] = []
    for key in differing:
        values_by_group: dict[tuple, set] = {}
        for run in runs:
            group = tuple(_hashable(run.config.get(k)) for k in kept)
            values_by_group.setdefault(group, set()).add(_hashable(run.config.get(key)))
        if any(len(values) > 1 for values in values_by_group.values()):
            kept.append(key)
    return kept


def group_runs(runs: list[Run], keys: list[str]) -> dict[str, list[Run]]:
    """Runs grouped by the values of `keys` (e.g. algo.name, replay.name); the label joins them.
    No keys: one group of every run."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        label = " / ".join(f"{short_key(key)}={run.config.get(key)}" for key in keys) or "all runs"
        groups.setdefault(label, []).append(run)
    return dict(sorted(groups.items()))


def short_key(key: str) -> str:
    """algo.name -> algo (a group's choice), model.critic_backbone -> critic_backbone, seed -> seed."""
    parts = key.split(".")
    return parts[-2] if len(parts) > 1 and parts[-1] == "name" else parts[-1]


def _hashable(value):
    return json.dumps(value, sort_keys=True) if isinstance(value, (list, dict)) else value
