"""The logging group's backends: text log, TensorBoard, wandb (offline, and failing safely), plots."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from rlhand.reporting.metrics_file import read_metrics
from rlhand.stages import build_run
from tests.conftest import FAST, compose_cfg

EXE = shutil.which("rlhand-train") or str(Path(sys.executable).parent / "rlhand-train")


def test_text_log_and_jsonl(tmp_path):
    build_run(compose_cfg(FAST + ["trainer.save_final=false"]), tmp_path).fit()
    (log,) = (tmp_path / "logs").glob("train_*.log")
    lines = log.read_text().splitlines()
    assert " INFO rlhand: ppo (replay off) on letters" in lines[0] and lines[0][:4].isdigit()
    assert any(" INFO step 1 PL:" in line for line in lines) and "reward/mean: start" in lines[-1]
    assert len(read_metrics(tmp_path / "logs" / "metrics.jsonl")) == 2


def test_backends_can_be_switched_off(tmp_path):
    build_run(compose_cfg(FAST + ["trainer.save_final=false", "logging.jsonl=false", "logging.text_log=false"]), tmp_path).fit()
    assert not list((tmp_path / "logs").iterdir())


def test_tensorboard_events_are_readable(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    build_run(compose_cfg(FAST + ["trainer.max_steps=3", "logging.tensorboard=true", "trainer.save_final=false"]), tmp_path).fit()
    events = EventAccumulator(str(tmp_path / "logs" / "tensorboard"))
    events.Reload()
    rows = read_metrics(tmp_path / "logs" / "metrics.jsonl")
    assert "reward/mean" in events.Tags()["scalars"] and "lr" in events.Tags()["scalars"]
    scalars = events.Scalars("reward/mean")
    assert [s.step for s in scalars] == [1, 2, 3]
    assert [s.value for s in scalars] == pytest.approx([r["reward/mean"] for r in rows], rel=1e-6)


def test_plots_are_written(tmp_path):
    build_run(compose_cfg(FAST + ["logging.plots=true", "eval.every=1", "eval.num_prompts=8", "trainer.save_final=false"]), tmp_path).fit()
    for name in ("training_metrics.png", "ppo_metrics.png"):
        data = (tmp_path / "plots" / name).read_bytes()
        assert data.startswith(b"\x89PNG") and len(data) > 20_000


def no_network_env(tmp_path):
    """No credentials, and every HTTP(S) request goes to a closed local port."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_")}
    dead = "http://127.0.0.1:9"
    env.update(HOME=str(tmp_path), HTTP_PROXY=dead, HTTPS_PROXY=dead, http_proxy=dead, https_proxy=dead, WANDB_BASE_URL=dead)
    return env


def test_wandb_offline_runs_without_network(tmp_path):
    args = [EXE, *FAST, "trainer.max_steps=3", "logging=wandb", "logging.progress_bar=false", "logging.plots=false", "hydra.run.dir=run"]
    out = subprocess.run(args, cwd=tmp_path, env=no_network_env(tmp_path), capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert "wandb: switched off" not in out.stderr
    (record,) = (tmp_path / "run" / "logs" / "wandb").glob("offline-run-*/run-*.wandb")
    data = record.read_bytes()
    # wandb stores each logged value as JSON text: every row's reward must be in the offline record.
    for row in read_metrics(tmp_path / "run" / "logs" / "metrics.jsonl"):
        assert json.dumps(row["reward/mean"]).encode() in data


def test_wandb_online_without_credentials_or_network_does_not_fail_the_run(tmp_path):
    args = [EXE, *FAST, "logging=wandb", "logging.wandb_mode=online", "logging.progress_bar=false", "logging.plots=false", "hydra.run.dir=run"]
    out = subprocess.run(args, cwd=tmp_path, env=no_network_env(tmp_path), capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert "warning: wandb: switched off" in out.stderr
    assert len(read_metrics(tmp_path / "run" / "logs" / "metrics.jsonl")) == 2


def test_wandb_failing_mid_run_is_a_warning(tmp_path, monkeypatch):
    import wandb

    class BrokenRun:
        def log(self, *a, **k):
            raise ConnectionError("gone")

        def finish(self):
            raise AssertionError("finish must not be called on a run that was switched off")

    monkeypatch.setattr(wandb, "init", lambda **kw: BrokenRun())
    history = build_run(compose_cfg(FAST + ["logging.wandb=true", "trainer.save_final=false"]), tmp_path).fit()
    assert len(history) == 2
    (log,) = (tmp_path / "logs").glob("train_*.log")
    assert "WARNING wandb: logging failed, switched off (ConnectionError: gone)" in log.read_text()
