"""stage=sft and stage=reward_model resume exactly: killed with SIGKILL mid-run, the same command
with resume=auto ends with the metrics and weights of the uninterrupted run."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from safetensors.torch import load_file

from rlhand.stages import build_run
from tests.conftest import compose_cfg

EXE = shutil.which("rlhand-train") or str(Path(sys.executable).parent / "rlhand-train")
STAGES = {
    "sft": ["stage=sft", "sft.num_examples=96", "sft.batch_size=8", "eval.every=20", "eval.num_prompts=16"],
    "reward_model": ["stage=reward_model", "rm.num_pairs=96", "rm.batch_size=8", "eval.every=20", "eval.num_prompts=16"],
}
COMMON = ["trainer.max_steps=120", "checkpoint.every=20", "scheduler=cosine", "scheduler.warmup_steps=5", "logging=plain", "trainer.threads=1"]


def rows(run):
    lines = (run / "logs" / "metrics.jsonl").read_text().splitlines()
    return [{k: v for k, v in json.loads(line).items() if not k.startswith(("time/", "memory/"))} for line in lines if line.strip()]


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_sigkill_then_resume_auto_is_exact(tmp_path, stage):
    overrides = STAGES[stage] + COMMON
    build_run(compose_cfg(overrides), tmp_path / "reference").fit()
    run = tmp_path / "run"
    args = [EXE, *overrides, f"hydra.run.dir={run}"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = run / "logs" / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and metrics.read_text().count("\n") >= 50:
            break
        time.sleep(0.002)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    assert len(rows(run)) < 120
    out = subprocess.run([*args, "resume=auto"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert "resumed from" in out.stderr
    assert rows(run) == rows(tmp_path / "reference")
    name = "policy" if stage == "sft" else "reward_model"
    ours, theirs = (load_file(r / "final" / name / "model.safetensors") for r in (run, tmp_path / "reference"))
    assert ours.keys() == theirs.keys() and all((ours[k] == theirs[k]).all() for k in ours)
