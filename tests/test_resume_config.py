"""resume= keeps the run's own config: the overrides given with it apply on top, a config group
cannot change, a finished run without checkpoints is not trained again."""

import json
import subprocess

import pytest

from rlhand.config.load import ConfigError
from rlhand.config.resumed import resumed_config, saved_config_file
from tests.test_cli_faults import EXE, FAST, one_line

SAVED = {"algo": {"name": "ppo_v1", "lr": 0.001}, "trainer": {"max_steps": 4}, "world_size": 1}


def test_overrides_apply_on_top_of_the_saved_config_and_groups_cannot_change(tmp_path):
    merged, applied = resumed_config(SAVED, ["resume=auto", "hydra.run.dir=run", "trainer.max_steps=6", "+algo.lr=0.01"], "x.json")
    assert merged.algo.name == "ppo_v1" and merged.trainer.max_steps == 6 and merged.algo.lr == 0.01 and "world_size" not in merged
    assert applied == ["trainer.max_steps=6", "+algo.lr=0.01"]
    with pytest.raises(ConfigError, match=r"resume: estimator=grpo changes a config group \(the run has estimator=gae\); a resumed run keeps its own \(x.json\)"):
        resumed_config({**SAVED, "algo": {**SAVED["algo"], "estimator": "gae"}}, ["estimator=grpo"], "x.json")
    same, applied = resumed_config(SAVED, ["algo=ppo_v1", "memory=8gb", "trainer.max_steps=4"], "x.json")  # the same command again
    assert same.algo.name == "ppo_v1" and applied == []  # nothing changed
    other, applied = resumed_config(SAVED, ["algo=ppo"], "x.json", current={"algo": {"name": "ppo", "lr": 0.002}})
    assert other.algo == {"name": "ppo", "lr": 0.002} and applied == ["algo=ppo"]  # the group's node from this command
    assert saved_config_file("auto", tmp_path) == tmp_path / "training_config.json"
    (tmp_path / "other" / "checkpoints").mkdir(parents=True)
    assert saved_config_file(str(tmp_path / "other"), tmp_path) == tmp_path / "other" / "training_config.json"
    assert saved_config_file(str(tmp_path / "other" / "checkpoints" / "step_2"), tmp_path) == tmp_path / "other" / "training_config.json"


def test_resume_auto_continues_a_ppo_v1_run_as_ppo_v1(tmp_path):
    first = [*FAST, "algo=ppo_v1", "checkpoint.every=2", "eval.every=2", "eval.num_prompts=8", "hydra.run.dir=run"]
    assert subprocess.run([EXE, *first], cwd=tmp_path, capture_output=True, text=True, timeout=300).returncode == 0
    out = subprocess.run([EXE, "resume=auto", "trainer.max_steps=3", "hydra.run.dir=run"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    assert f"resume: the run's own config ({tmp_path / 'run' / 'training_config.json'}); on top: trainer.max_steps=3" in out.stderr
    saved = json.loads((tmp_path / "run" / "training_config.json").read_text())
    assert saved["algo"]["name"] == "ppo_v1" and saved["scheduler"]["name"] == "cosine" and saved["algo"]["rollout_batch_size"] == 8
    rows = [json.loads(line) for line in (tmp_path / "run" / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3]


def test_a_finished_run_without_checkpoints_is_not_trained_again(tmp_path):
    assert subprocess.run([EXE, *FAST, "hydra.run.dir=run"], cwd=tmp_path, capture_output=True, text=True, timeout=300).returncode == 0
    before = (tmp_path / "run" / "logs" / "metrics.jsonl").read_text()
    out = subprocess.run([EXE, *FAST, "resume=auto", "hydra.run.dir=run"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2
    assert one_line(out).endswith("holds a finished run and no checkpoint to continue it from (checkpoint.every=0); start a new run in another folder")
    assert (tmp_path / "run" / "logs" / "metrics.jsonl").read_text() == before
