"""rlhand-train as a user runs it: a subprocess, from another directory."""

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import FAST

EXE = shutil.which("rlhand-train") or str(Path(sys.executable).parent / "rlhand-train")


def cli(*args, cwd):
    return subprocess.run([EXE, *args], cwd=cwd, capture_output=True, text=True, timeout=300)


def test_help_and_cfg_job(tmp_path):
    out = cli("--help", cwd=tmp_path)
    assert out.returncode == 0 and "algo: " in out.stdout and "replay: " in out.stdout
    job = cli("--cfg", "job", "algo.clip_ratio_low=0.1", cwd=tmp_path)
    assert job.returncode == 0 and "clip_ratio_low: 0.1" in job.stdout


def test_run_from_another_directory_writes_run_dir(tmp_path):
    out = cli(*FAST, "hydra.run.dir=run", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    rows = (tmp_path / "run" / "logs" / "metrics.jsonl").read_text().splitlines()
    assert len(rows) == 2 and json.loads(rows[-1])["step"] == 2
    assert (tmp_path / "run" / ".hydra" / "config.yaml").exists()
    assert (tmp_path / "run" / "final" / "policy" / "model.safetensors").exists()
    assert "reward/mean: start" in out.stderr


def test_default_run_dir_is_under_outputs_named_by_stage_estimator_and_replay(tmp_path):
    out = cli(*FAST, "trainer.max_steps=1", "trainer.save_final=false", "estimator=grpo", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    runs = list((tmp_path / "outputs" / "runs").glob("*/*/logs/metrics.jsonl"))
    assert len(runs) == 1 and runs[0].parents[1].name.endswith("_ppo_grpo_off_s0"), runs


def test_run_labels_say_the_stage():
    from rlhand.train import run_label

    assert run_label("sft", "ppo", "gae", "off") == "sft"
    assert run_label("reward_model", "ppo", "gae", "off") == "reward_model"
    assert run_label("ppo", "ppo_v2", "gae", "standard") == "ppo_v2_gae_standard"


@pytest.mark.parametrize(
    "override, needle",
    [
        ("algo.clip_rato=0.1", "algo.clip_rato"),
        ("algo.clip_ratio_low=abc", "algo.clip_ratio_low"),
        ("algo=ppo_v9", "algo/ppo_v9"),
        ("algo.gamma=2", "algo.gamma"),
        ("algo.rollout_batch_size=10", "algo.rollout_batch_size"),
        ("+algo.typo=1", "typo"),
    ],
)
def test_bad_config_fails_fast_with_a_line_naming_the_field(tmp_path, override, needle):
    out = cli(override, "hydra.run.dir=run", cwd=tmp_path)
    assert out.returncode != 0
    first = out.stderr.strip().splitlines()[0]
    assert needle in first, out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "run" / "final").exists()


def test_bad_prompt_file_fails_before_models_and_names_the_line(tmp_path):
    (tmp_path / "p.jsonl").write_text('{"prompt": "hi"}\n{oops}\n')
    out = cli("task=file", "task.path=p.jsonl", "reward=letters", "hydra.run.dir=run", cwd=tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and "p.jsonl: line 2: malformed JSON" in lines[0]
    assert not (tmp_path / "run" / "logs" / "metrics.jsonl").exists()


def test_prompt_file_run(tmp_path):
    (tmp_path / "p.jsonl").write_text("".join(json.dumps({"prompt": f"abc{i}="}) + "\n" for i in range(8)))
    out = cli(*FAST, "task=file", "task.path=p.jsonl", "reward=letters", "hydra.run.dir=run", "trainer.save_final=false", cwd=tmp_path)
    assert out.returncode == 0, out.stderr


def test_multirun_two_jobs(tmp_path):
    out = cli("-m", *FAST, "trainer.max_steps=1", "trainer.save_final=false", "seed=0,1", "hydra.sweep.dir=sweep", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    files = sorted((tmp_path / "sweep").glob("*/logs/metrics.jsonl"))
    assert len(files) == 2
    assert files[0].read_text() != files[1].read_text()


def test_second_plain_run_into_the_same_folder_is_one_line_and_changes_nothing(tmp_path):
    first = cli(*FAST, "trainer.max_steps=1", "trainer.save_final=false", "hydra.run.dir=run", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    metrics = (tmp_path / "run" / "logs" / "metrics.jsonl").read_text()
    again = cli(*FAST, "trainer.max_steps=1", "trainer.save_final=false", "hydra.run.dir=run", cwd=tmp_path)
    assert again.returncode == 2
    assert again.stderr.strip().splitlines() == [
        f"rlhand-train: error: {tmp_path / 'run'} already holds a run (logs/metrics.jsonl with 1 row); "
        "continue it with resume=auto, or give this run another hydra.run.dir"
    ]
    assert (tmp_path / "run" / "logs" / "metrics.jsonl").read_text() == metrics
