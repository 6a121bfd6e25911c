"""Sweeps: experiment configs, a failing job inside a multirun, and the launchers' configs."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra
from omegaconf import open_dict

from rlhand.config import load_config
from tests.conftest import CONF_DIR, FAST

EXE = shutil.which("rlhand-train") or str(Path(sys.executable).parent / "rlhand-train")


def compose_with_hydra(overrides):
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=CONF_DIR, version_base="1.3"):
        return compose(config_name="train", overrides=overrides, return_hydra_config=True)


def sweep(*args, cwd):
    return subprocess.run([EXE, *args], cwd=cwd, capture_output=True, text=True, timeout=600)


@pytest.mark.parametrize(
    "experiment, params",
    [
        ("replay_scenarios", {"replay": "off,standard,high_efficiency,priority,conservative", "seed": "0,1,2"}),
        ("algo_versions", {"algo": "ppo,ppo_v1,ppo_v2", "seed": "0,1,2"}),
        ("buffer_sizes", {"replay.buffer_size": "200,500,1000", "seed": "0,1,2"}),
    ],
)
def test_experiments_are_sweeps_whose_every_point_composes(experiment, params):
    cfg = compose_with_hydra([f"experiment={experiment}"])
    assert str(cfg.hydra.mode) == "RunMode.MULTIRUN" and dict(cfg.hydra.sweeper.params) == params
    key, values = next(iter(params.items()))
    for value in values.split(","):
        point = compose_with_hydra([f"experiment={experiment}", f"{key}={value}"])
        with open_dict(point):
            del point["hydra"]  # what @hydra.main hands the job
        loaded = load_config(point)
        assert str(loaded.replay.name if key == "replay" else loaded.algo.name if key == "algo" else loaded.replay.buffer_size) == value
    if experiment == "replay_scenarios":
        assert cfg.algo.name == "ppo_v2"


def test_slurm_launcher_config_composes():
    cfg = compose_with_hydra(["hydra/launcher=slurm", "hydra.launcher.partition=gpu"])
    launcher = cfg.hydra.launcher
    assert launcher._target_.endswith("submitit_launcher.SlurmLauncher")
    assert launcher.partition == "gpu" and launcher.gpus_per_node == 1 and launcher.timeout_min == 240


def test_local_parallel_launcher_config_composes():
    cfg = compose_with_hydra(["hydra/launcher=local_parallel"])
    assert cfg.hydra.launcher._target_.endswith("joblib_launcher.JoblibLauncher") and cfg.hydra.launcher.n_jobs == 2


def test_one_failed_job_does_not_stop_the_sweep(tmp_path):
    out = sweep("-m", *FAST, "trainer.max_steps=1", "trainer.save_final=false", "algo.gamma=0.5,2,1", "hydra.sweep.dir=sw", cwd=tmp_path)
    assert out.returncode != 0  # the sweep reports the failure...
    assert "sweep job #1" in out.stderr and "algo.gamma: 2.0 is outside [0, 1]" in out.stderr
    assert (tmp_path / "sw" / "1" / "FAILED").read_text().startswith("#1 (algo.gamma=2")
    for job in (0, 2):  # ...after running the jobs after it
        rows = (tmp_path / "sw" / str(job) / "logs" / "metrics.jsonl").read_text().splitlines()
        assert json.loads(rows[-1])["step"] == 1


def test_replay_scenarios_experiment_runs_in_one_command(tmp_path):
    out = sweep("experiment=replay_scenarios", "hydra.sweeper.params.seed=0", *FAST, "trainer.max_steps=1",
                "trainer.save_final=false", "checkpoint.every=0", "eval.every=0", "early_stop.patience=null",
                "logging.tensorboard=false", "logging.plots=false", "hydra.sweep.dir=sw", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    names = sorted(json.loads((d / "training_config.json").read_text())["replay"]["name"] for d in (tmp_path / "sw").iterdir() if d.is_dir())
    assert names == sorted(["off", "standard", "high_efficiency", "priority", "conservative"])


def test_local_parallel_launcher_runs_jobs(tmp_path):
    out = sweep("-m", "hydra/launcher=local_parallel", *FAST, "trainer.max_steps=1", "trainer.save_final=false", "trainer.threads=1",
                "seed=0,1", "hydra.sweep.dir=sw", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert len(list((tmp_path / "sw").glob("*/logs/metrics.jsonl"))) == 2


def test_a_two_trial_optuna_study_runs_and_reports_its_best_value(tmp_path):
    """experiment=tune (hydra/sweeper=optuna): each trial returns its last val/reward, and the study
    reports the best of them (optimization_results.yaml)."""
    out = sweep(
        "experiment=tune", "hydra.sweeper.n_trials=2", *FAST, "trainer.max_steps=2", "eval.every=2", "eval.num_prompts=8",
        "replay.min_size=4", "replay.buffer_size=64", f"hydra.sweep.dir={tmp_path / 'study'}", cwd=tmp_path,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    results = (tmp_path / "study" / "optimization_results.yaml").read_text()
    trials = []
    for trial in ("0", "1"):
        rows = [json.loads(line) for line in (tmp_path / "study" / trial / "logs" / "metrics.jsonl").read_text().splitlines()]
        trials.append([row["val/reward"] for row in rows if "val/reward" in row][-1])
    best = float(results.split("best_value:")[1].split()[0])
    assert best == pytest.approx(max(trials), abs=1e-6)
    assert "algo.lr:" in results and "replay.max_reuse:" in results


def test_the_tuning_objective_is_the_last_validation_reward_else_the_recent_training_reward():
    from rlhand.evaluation.tuning import tuning_objective

    history = [{"reward/mean": 0.1 * i} for i in range(20)] + [{"reward/mean": 5.0, "val/reward": 0.3}, {"reward/mean": 6.0}]
    assert tuning_objective(history) == 0.3
    assert tuning_objective([{"reward/mean": float(i)} for i in range(20)]) == pytest.approx(14.5)  # the last 10
    assert tuning_objective([]) == float("-inf")


def test_a_study_of_no_trials_is_one_line_before_it_starts(tmp_path):
    out = subprocess.run([EXE, "experiment=tune", "hydra.sweeper.n_trials=0"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines() == ["rlhand-train: error: hydra.sweeper.n_trials: 0; a study needs at least one trial"]
    assert not (tmp_path / "outputs").exists() or not list((tmp_path / "outputs").rglob("metrics.jsonl"))
