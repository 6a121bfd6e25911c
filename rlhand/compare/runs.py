"""Find runs under folders (single runs, multirun sweeps, or anything nesting them) and load them."""

import json
from dataclasses import dataclass
from pathlib import Path

from rlhand.reporting.metrics_file import read_metrics


@dataclass
class Run:
    path: Path
    config: dict  # flattened: {"algo.name": "ppo", "replay.name": "off", "seed": 0, ...}
    rows: list[dict]

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
            rows = read_metrics(metrics)
            if rows:
                runs.append(Run(path=run_dir, config=flatten(json.loads(config_file.read_text())), rows=rows))
    return runs


def flatten(tree: dict, prefix: str = "") -> dict:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict):
            out.update(flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def group_runs(runs: list[Run], keys: list[str]) -> dict[str, list[Run]]:
    """Runs grouped by the values of `keys` (e.g. algo.name, replay.name); the label joins them."""
    groups: dict[str, list[Run]] = {}
    for run in runs:
        label = " / ".join(f"{short_key(key)}={run.config.get(key)}" for key in keys)
        groups.setdefault(label, []).append(run)
    return dict(sorted(groups.items()))


def short_key(key: str) -> str:
    """algo.name -> algo (a group's choice), model.critic_backbone -> critic_backbone, seed -> seed."""
    parts = key.split(".")
    return parts[-2] if len(parts) > 1 and parts[-1] == "name" else parts[-1]
