"""Exact resume: a run stopped at a checkpoint (or killed with SIGKILL at a random moment) and
resumed ends with the same weights and metrics as an uninterrupted run with the same seed."""

import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from rlhand.checkpoint.store import CheckpointError
from rlhand.config.schema import AlgoConfig
from rlhand.reporting.metrics_file import read_metrics
from rlhand.stages import build_run
from tests.conftest import compose_cfg

# Every piece of state that matters: cosine LR, adaptive KL, validation + early-stop bookkeeping,
# a prompt set small enough that the sampler wraps into a new epoch.
RESUMABLE = [
    "trainer.max_steps=8",
    "algo.rollout_batch_size=8",
    "algo.num_minibatches=2",
    "algo.ppo_epochs=2",
    "task.num_prompts=24",
    "generation.max_new_tokens=6",
    "logging=plain",
    "scheduler=cosine",
    "scheduler.warmup_steps=2",
    "algo.kl_control=adaptive",
    "algo.kl_target=0.5",
    "reward.normalize=running",
    "reward.clip=2.0",
    "eval.every=2",
    "eval.num_prompts=8",
    "early_stop.patience=50",
    "checkpoint.every=3",
    "checkpoint.keep=2",
    # The reference runs in this process and the killed run in a subprocess: same thread count,
    # same float reduction order.
    "trainer.threads=1",
]
EXE = shutil.which("rlhand-train") or str(Path(sys.executable).parent / "rlhand-train")


def comparable(rows):
    return [{k: v for k, v in row.items() if not k.startswith(("time/", "memory/"))} for row in rows]


def weights(run_dir, part="final"):
    return {name: load_file(run_dir / part / name / "model.safetensors") for name in ("policy", "critic")}


def assert_same_weights(a, b):
    for name in a:
        assert a[name].keys() == b[name].keys()
        for key in a[name]:
            assert torch.equal(a[name][key], b[name][key]), f"{name}.{key} differs"


def assert_same_run(ref_dir, run_dir):
    ref, got = read_metrics(ref_dir / "logs" / "metrics.jsonl"), read_metrics(run_dir / "logs" / "metrics.jsonl")
    assert [r["step"] for r in got] == list(range(1, len(ref) + 1))
    assert comparable(got) == comparable(ref)
    assert_same_weights(weights(ref_dir), weights(run_dir))
    assert_same_weights(weights(ref_dir, "best"), weights(run_dir, "best"))


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    run_dir = tmp_path_factory.mktemp("reference")
    build_run(compose_cfg(RESUMABLE), run_dir).fit()
    return run_dir


def test_checkpoints_hold_the_seed_layout(reference_run):
    # every=3 over 8 steps: 3, 6 and the end (8); keep=2 leaves the newest two.
    assert sorted(p.name for p in (reference_run / "checkpoints").iterdir()) == ["step_6", "step_8"]
    step = reference_run / "checkpoints" / "step_8"
    assert {p.name for p in step.iterdir()} == {"weights", "training_state.pt", "rank_0.pt", "config.json", "manifest.json"}
    assert json.loads((step / "config.json").read_text()) == json.loads((reference_run / "training_config.json").read_text())
    state = torch.load(step / "training_state.pt", weights_only=True)
    assert state["step"] == 8 and len(state["history"]) == 8 and state["sampler"]["epoch"] >= 1 and state["world_size"] == 1
    assert set(torch.load(step / "rank_0.pt", weights_only=True)) == {"rng", "replay"}
    assert (step / "weights" / ".metadata").is_file()  # torch.distributed.checkpoint: models and optimizers


def test_resume_from_a_checkpoint_path_is_exact(reference_run, tmp_path):
    # Resume into a new run folder from the reference's step_6: the remaining steps must replay exactly.
    resumed = build_run(compose_cfg(RESUMABLE + [f"resume={reference_run / 'checkpoints' / 'step_6'}"]), tmp_path)
    assert resumed.step == 6 and len(resumed.history) == 6
    resumed.fit()
    assert_same_run(reference_run, tmp_path)


def test_resume_auto_without_checkpoints_starts_fresh(tmp_path):
    trainer = build_run(compose_cfg(RESUMABLE + ["resume=auto", "trainer.max_steps=1", "eval.every=0", "early_stop.patience=null"]), tmp_path)
    assert trainer.step == 0 and trainer.resume_from is None


def test_resume_of_a_finished_run_does_nothing_more(reference_run, tmp_path):
    shutil.copytree(reference_run, tmp_path / "run")
    history = build_run(compose_cfg(RESUMABLE + ["resume=auto"]), tmp_path / "run").fit()
    assert len(history) == 8
    assert_same_run(reference_run, tmp_path / "run")


def test_explicit_bad_checkpoint_is_a_clear_error_before_models_load(reference_run, tmp_path):
    broken = tmp_path / "step_6"
    shutil.copytree(reference_run / "checkpoints" / "step_6", broken)
    shard = sorted((broken / "weights").glob("*.distcp"))[0]
    with open(shard, "r+b") as handle:
        handle.truncate(100)
    with pytest.raises(CheckpointError, match=rf"resume: .*step_6: weights/{shard.name} has 100 bytes"):
        build_run(compose_cfg(RESUMABLE + [f"resume={broken}"]), tmp_path / "run")
    with pytest.raises(CheckpointError, match="no such checkpoint folder"):
        build_run(compose_cfg(RESUMABLE + [f"resume={tmp_path / 'nope'}"]), tmp_path / "run")


def test_auto_skips_a_corrupted_newest_checkpoint(reference_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(reference_run, run)
    state = run / "checkpoints" / "step_8" / "training_state.pt"
    data = bytearray(state.read_bytes())
    data[len(data) // 2] ^= 0x01
    state.write_bytes(bytes(data))
    trainer = build_run(compose_cfg(RESUMABLE + ["resume=auto"]), run)
    assert trainer.step == 6 and any("step_8" in note and "corrupted" in note for note in trainer.notes)
    trainer.fit()
    assert_same_run(reference_run, run)


def test_cli_reports_a_bad_resume_path_in_one_line(tmp_path):
    out = subprocess.run([EXE, *RESUMABLE, f"resume={tmp_path / 'missing'}"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].startswith("rlhand-train: error: resume: ")


@pytest.mark.parametrize("kill_after_rows", [4, 6])
def test_sigkill_at_a_random_moment_then_resume_auto_is_exact(reference_run, tmp_path, kill_after_rows):
    """A real process is killed with SIGKILL at a random moment after `kill_after_rows` metrics rows
    (between checkpoints, or during or just after one); rerunning the same command with
    resume=auto must finish exactly like the uninterrupted reference."""
    run = tmp_path / "run"
    args = [EXE, *RESUMABLE, f"hydra.run.dir={run}", "logging.tensorboard=true"]
    proc = subprocess.Popen(args, cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    metrics = run / "logs" / "metrics.jsonl"
    deadline = time.time() + 240
    while time.time() < deadline and proc.poll() is None:
        if metrics.exists() and metrics.read_text().count("\n") >= kill_after_rows:
            break
        time.sleep(0.005)
    # A random moment within the next iteration (its length as the run itself measured it): late
    # enough to land inside a checkpoint write sometimes, early enough that the run cannot finish.
    rows = read_metrics(metrics)
    step_s = sum(row["time/iteration_s"] for row in rows) / len(rows) if rows else 0.05
    time.sleep(random.uniform(0.0, step_s))
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "the run ended before it could be killed"
    rows_at_kill = len(read_metrics(metrics))
    assert rows_at_kill < 8
    out = subprocess.run([*args, "resume=auto"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert ("resumed from" in out.stderr) == (rows_at_kill >= 3)
    assert_same_run(reference_run, run)
    # TensorBoard drops what the killed run logged past its checkpoint: one event per step.
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(run / "logs" / "tensorboard"))
    events.Reload()
    reference = read_metrics(reference_run / "logs" / "metrics.jsonl")
    scalars = events.Scalars("reward/mean")
    assert [s.step for s in scalars] == list(range(1, 9))
    assert [s.value for s in scalars] == pytest.approx([r["reward/mean"] for r in reference], rel=1e-6)


def test_a_fresh_run_into_a_folder_holding_a_run_is_refused_before_models_load(tmp_path):
    from rlhand.run.folder import RunFolderError

    quick = RESUMABLE[:7] + ["trainer.max_steps=2", "trainer.save_final=false"]
    build_run(compose_cfg(quick), tmp_path).fit()
    before = (tmp_path / "logs" / "metrics.jsonl").read_bytes()
    with pytest.raises(RunFolderError, match=r"already holds a run \(logs/metrics.jsonl with 2 rows\); continue it with resume=auto"):
        build_run(compose_cfg(quick), tmp_path)
    assert (tmp_path / "logs" / "metrics.jsonl").read_bytes() == before


def test_resume_auto_after_a_crash_before_the_first_checkpoint_writes_each_step_once(tmp_path):
    quick = RESUMABLE[:7] + ["trainer.max_steps=3", "checkpoint.every=10", "trainer.save_final=false"]
    reference = build_run(compose_cfg(quick), tmp_path / "reference").fit()
    crashing = build_run(compose_cfg(quick), tmp_path / "run")
    real_step = crashing.stage.step

    def crash_at_step_3(step):
        if step == 3:
            raise RuntimeError("crash")
        return real_step(step)

    crashing.stage.step = crash_at_step_3
    with pytest.raises(RuntimeError, match="crash"):
        crashing.fit()
    assert [r["step"] for r in read_metrics(tmp_path / "run" / "logs" / "metrics.jsonl")] == [1, 2]
    assert not (tmp_path / "run" / "checkpoints").exists()
    build_run(compose_cfg(quick + ["resume=auto"]), tmp_path / "run").fit()
    rows = read_metrics(tmp_path / "run" / "logs" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3]
    assert comparable(rows) == comparable(reference)


@pytest.mark.parametrize("change, named", [("model.n_embd=32", "model.n_embd=64 (this run: 32)"), ("model.n_layer=3", "model.n_layer=2 (this run: 3)")])
def test_resume_into_another_model_shape_is_one_line_before_models_load(reference_run, tmp_path, monkeypatch, change, named):
    monkeypatch.setattr("rlhand.stages.ppo.setup.build_models", lambda *a, **k: pytest.fail("a model was built"))
    with pytest.raises(CheckpointError, match=rf"^resume: .*step_8 was written with {re.escape(named)}; its weights cannot load") as err:
        build_run(compose_cfg(RESUMABLE + [change, f"resume={reference_run / 'checkpoints' / 'step_8'}"]), tmp_path)
    assert "\n" not in str(err.value)


def test_weights_of_another_shape_are_one_line(reference_run):
    from rlhand.checkpoint.training import load_learners
    from rlhand.errors import ModelLoadError
    from rlhand.models.folders import load_weights
    from tests.helpers import make_update, tiny_models

    models, _ = tiny_models()  # n_embd 32: the reference run's models have 64
    with pytest.raises(ModelLoadError, match=r"policy: transformer.h.0.attn.c_attn.bias has shape \(192,\) there and \(96,\) in this run's model"):
        load_weights(models.policy, reference_run / "final" / "policy")
    learners = make_update(models, AlgoConfig(name="t")).learners
    with pytest.raises(CheckpointError, match=r"step_8: its weights do not load into this run's models \(") as err:
        load_learners(reference_run / "checkpoints" / "step_8", {"policy": learners.policy, "critic": learners.critic})
    assert "\n" not in str(err.value)
