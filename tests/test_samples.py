"""Validation writes text a person can read: logs/samples.jsonl and TensorBoard text, the samples
being the ones validation scored."""

import json

import pytest

from rlhand.stages import build_run
from rlhand.tasks.letters import letters_reward
from tests.conftest import FAST, compose_cfg


def test_validation_samples_are_the_scored_responses_as_text(tmp_path):
    cfg = compose_cfg(FAST + ["eval.every=1", "eval.num_prompts=8", "eval.samples=3", "logging.tensorboard=true", "+eval.scorers.gold._target_=rlhand.tasks.letters.letters_reward"])
    run = build_run(cfg, tmp_path)
    history = run.fit()
    rows = [json.loads(line) for line in (tmp_path / "logs" / "samples.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 1, 1, 2, 2, 2]
    val_prompts = {run.stage.inputs.tokenizer.decode(ids, skip_special_tokens=True) for ids in run.stage.inputs.val_prompt_ids}
    for row in rows:
        assert row["prompt"] in val_prompts and row["prompt"].endswith("=")
        # The score recorded is the reward of exactly this text: the sample is what was scored.
        assert row["scores"]["reward"] == pytest.approx(letters_reward([row["prompt"]], [row["response"]])[0], abs=1e-6)
        assert row["scores"]["reward_gold"] == pytest.approx(row["scores"]["reward"], abs=1e-6)
    assert "val/reward_gold" in history[-1]
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = EventAccumulator(str(tmp_path / "logs" / "tensorboard"), size_guidance={"tensors": 0})
    events.Reload()
    assert "samples/val/text_summary" in events.Tags()["tensors"]


def test_samples_can_be_switched_off(tmp_path):
    build_run(compose_cfg(FAST + ["eval.every=1", "eval.num_prompts=8", "eval.samples=0"]), tmp_path).fit()
    assert not (tmp_path / "logs" / "samples.jsonl").exists()


def test_a_resume_keeps_the_samples_up_to_its_checkpoint_and_drops_a_cut_line(tmp_path):
    from rlhand.reporting.samples import SamplesFile

    path = tmp_path / "samples.jsonl"
    path.write_text("".join(json.dumps({"step": s, "prompt": "p", "response": "r", "scores": {}}) + "\n" for s in (0, 2, 4, 6)) + '{"step": 8, "pro')
    SamplesFile(path, resumed_step=4)
    assert [json.loads(line)["step"] for line in path.read_text().splitlines()] == [0, 2, 4]
    SamplesFile(path, resumed_step=0)  # a fresh restart: its validation before training runs again
    assert path.read_text() == ""


def test_wandb_offline_gets_the_samples_as_a_table(tmp_path):
    import subprocess

    from tests.test_logging_backends import EXE, no_network_env

    args = [EXE, *FAST, "eval.every=1", "eval.num_prompts=8", "eval.samples=2", "logging=wandb", "logging.progress_bar=false", "logging.plots=false", "hydra.run.dir=run"]
    out = subprocess.run(args, cwd=tmp_path, env=no_network_env(tmp_path), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0 and "wandb:" not in out.stderr, out.stderr
    written = [json.loads(line) for line in (tmp_path / "run" / "logs" / "samples.jsonl").read_text().splitlines()]
    tables = sorted((tmp_path / "run" / "logs" / "wandb").glob("offline-run-*/files/media/table/samples/val_*.table.json"))
    assert len(tables) == 2  # one per validation
    logged = [row for table in tables for row in json.loads(table.read_text())["data"]]
    columns = json.loads(tables[0].read_text())["columns"]
    assert columns == ["step", "split", "prompt", "response", "reward"]
    assert sorted(map(tuple, logged)) == sorted((r["step"], r["split"], r["prompt"], r["response"], r["scores"]["reward"]) for r in written)


def test_training_rollouts_are_sampled_every_n_iterations_beside_validation(tmp_path):
    cfg = compose_cfg(FAST + ["trainer.max_steps=3", "eval.every=2", "eval.num_prompts=8", "eval.samples=2", "eval.samples_every=1"])
    run = build_run(cfg, tmp_path)
    run.fit()
    rows = [json.loads(line) for line in (tmp_path / "logs" / "samples.jsonl").read_text().splitlines()]
    assert [(r["step"], r["split"]) for r in rows] == [(1, "train")] * 2 + [(2, "train")] * 2 + [(2, "val")] * 2 + [(3, "train")] * 2 + [(3, "val")] * 2
    val_prompts = {run.stage.inputs.tokenizer.decode(ids, skip_special_tokens=True) for ids in run.stage.inputs.val_prompt_ids}
    for row in rows:
        assert (row["prompt"] in val_prompts) == (row["split"] == "val")  # training samples come from the training prompts
        assert row["scores"]["reward"] == pytest.approx(letters_reward([row["prompt"]], [row["response"]])[0], abs=1e-6)
