"""metrics.jsonl: one JSON object per PPO iteration, flushed as it is written."""

import json
import math
from pathlib import Path


class MetricsFile:
    def __init__(self, path: Path):
        path.parent.mkdir(parents=True, exist_ok=True)
        self.path = path
        self._handle = path.open("a", encoding="utf-8")

    def write(self, metrics: dict) -> None:
        # NaN/inf are not JSON: write null so every reader can parse the file.
        clean = {k: (None if isinstance(v, float) and not math.isfinite(v) else v) for k, v in metrics.items()}
        self._handle.write(json.dumps(clean, sort_keys=True) + "\n")
        self._handle.flush()

    def close(self) -> None:
        self._handle.close()
