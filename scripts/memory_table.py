"""The memory estimate against the measured peak, per setting: docs/memory.md's table.

    python scripts/memory_table.py                 # the documented settings (a few minutes on 2 cores)
    python scripts/memory_table.py "model.n_layer=4 model.n_embd=256" ...

Each setting runs `rlhand-train ... trainer.max_steps=2` in a fresh process; the estimate is the
line it prints before loading any model, the measured peak the largest memory/rss_peak_mb (CPU) or
memory/cuda_peak_mb (CUDA, plus the context) of its iterations.
"""

import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

SETTINGS = [
    "",
    "model.n_layer=4 model.n_embd=256",
    "model.n_layer=4 model.n_embd=256 model.lora.enabled=true",
    "model.n_layer=8 model.n_embd=512",
    "model.n_layer=8 model.n_embd=512 model.gradient_checkpointing=true",
    "model.n_layer=8 model.n_embd=512 model.lora.enabled=true",
    "model.n_layer=8 model.n_embd=512 trainer.autocast=bfloat16 model.frozen_dtype=bfloat16",
    "model.n_layer=12 model.n_embd=768 model.n_head=12",
]
ESTIMATE = re.compile(r"memory estimate: ([0-9.]+) GiB per device")


def measure(setting: str) -> tuple[float, float]:
    """(estimate, measured peak), GiB."""
    exe = Path(sys.executable).parent / "rlhand-train"
    with tempfile.TemporaryDirectory() as tmp:
        out = subprocess.run(
            [str(exe), *setting.split(), "trainer.max_steps=2", "logging=plain", "trainer.save_final=false", f"hydra.run.dir={tmp}/run"],
            capture_output=True, text=True, check=True,
        )
        estimate = float(ESTIMATE.search(out.stderr).group(1))
        rows = [json.loads(line) for line in (Path(tmp) / "run" / "logs" / "metrics.jsonl").read_text().splitlines()]
    if "memory/cuda_peak_mb" in rows[0]:
        peak = max(r["memory/cuda_peak_mb"] for r in rows) / 1024 + 0.5
    else:
        peak = max(r["memory/rss_peak_mb"] for r in rows) / 1024
    return estimate, peak


def main() -> None:
    print("| setting | estimate (GiB) | measured peak (GiB) | estimate / measured |")
    print("| --- | --- | --- | --- |")
    for setting in sys.argv[1:] or SETTINGS:
        estimate, peak = measure(setting)
        print(f"| `{setting or 'the default (2 x 64)'}` | {estimate:.2f} | {peak:.2f} | {estimate / peak:.2f} |", flush=True)


if __name__ == "__main__":
    main()
