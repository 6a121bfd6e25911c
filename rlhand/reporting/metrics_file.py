"""logs/metrics.jsonl: one JSON object per PPO iteration, flushed as it is written."""

import json
import math
import os
from pathlib import Path


def metrics_line(metrics: dict) -> str:
    # NaN/inf are not JSON: write null so every reader can parse the file.
    clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
    return json.dumps(clean, sort_keys=True) + "\n"


class MetricsFile:
    """Appends rows after `history` (the rows up to a resumed checkpoint; empty on a fresh start),
    which first replaces the file atomically: rows an interrupted run wrote after its checkpoint,
    a torn last line, or the rows of an attempt that crashed before its first checkpoint go away."""

    def __init__(self, path: Path, history: list[dict]):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text("".join(metrics_line(m) for m in history), encoding="utf-8")
        os.replace(tmp, path)
        self._handle = path.open("a", encoding="utf-8")

    def write(self, metrics: dict) -> None:
        self._handle.write(metrics_line(metrics))
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()


def read_metrics(path: Path) -> list[dict]:
    """Rows of a metrics.jsonl; a torn last line (a killed writer) is skipped."""
    rows = []
    for line in Path(path).read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows
