"""Validation, early stopping and the best model, inside real (tiny) runs."""

import json

import pytest

from rlhand.config import ConfigError
from rlhand.stages import build_run
from rlhand.stages.ppo.setup import prepare_inputs
from tests.conftest import FAST, compose_cfg


def test_ppo_v1_switches_the_features_on():
    cfg = compose_cfg(["algo=ppo_v1"])
    assert cfg.algo.name == "ppo_v1" and cfg.scheduler.kind.value == "cosine" and cfg.logging.tensorboard
    assert cfg.checkpoint.every > 0 and cfg.eval.every > 0 and cfg.early_stop.patience is not None
    # The same algorithm hyperparameters as ppo: a comparison measures the features only.
    plain = compose_cfg(["algo=ppo"])
    assert {**vars(cfg.algo), "name": "ppo"} == vars(plain.algo)
    # Command-line choices still beat the preset's.
    assert compose_cfg(["algo=ppo_v1", "scheduler=constant", "checkpoint.every=0"]).checkpoint.every == 0


@pytest.mark.parametrize(
    "overrides, field",
    [(["scheduler=plateau"], "scheduler.kind"), (["early_stop.patience=3"], "early_stop.patience")],
)
def test_val_driven_features_need_validation(overrides, field):
    with pytest.raises(ConfigError, match=field):
        compose_cfg(overrides)


def test_held_out_prompts_are_not_trained_on():
    cfg = compose_cfg(FAST + ["eval.every=1", "eval.num_prompts=8"])
    inputs = prepare_inputs(cfg)
    train, held = {tuple(p) for p in inputs.prompt_ids}, {tuple(p) for p in inputs.val_prompt_ids}
    assert len(inputs.val_prompt_ids) == 8 and len(inputs.prompt_ids) == 24 and not train & held


def test_validation_metrics_and_best_model(tmp_path):
    history = build_run(compose_cfg(FAST + ["trainer.max_steps=5", "eval.every=2", "eval.num_prompts=8"]), tmp_path).fit()
    evaluated = [row["step"] for row in history if "val/reward" in row]
    assert evaluated == [2, 4, 5]  # every 2 steps and after the last
    row = history[1]
    assert -1 <= row["val/reward"] <= 1 and row["val/entropy"] > 0 and row["val/response_length"] > 0 and "val/kl" in row
    assert row["early_stop/bad_evals"] == 0 and row["val/best_reward"] == row["val/reward"]
    best = max((r for r in history if "val/reward" in r), key=lambda r: (r["val/best_reward"], -r["step"]))
    meta = json.loads((tmp_path / "best" / "meta.json").read_text())
    assert meta["step"] == best["step"]


def test_validation_does_not_disturb_training(tmp_path):
    """With validation prompts from their own file, switching validation on must leave every
    training metric identical: it samples from its own generator."""
    prompts, val = tmp_path / "p.jsonl", tmp_path / "v.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": f"q{i}abc="}) + "\n" for i in range(16)))
    val.write_text("".join(json.dumps({"prompt": f"v{i}xyz="}) + "\n" for i in range(8)))
    base = FAST + ["trainer.max_steps=4", "task=file", f"task.path={prompts}", f"task.val_path={val}", "reward=letters", "trainer.save_final=false"]
    off = build_run(compose_cfg(base), tmp_path / "off").fit()
    on = build_run(compose_cfg(base + ["eval.every=1"]), tmp_path / "on").fit()

    def training_part(rows):
        return [{k: v for k, v in r.items() if not k.startswith(("val/", "early_stop/", "time/", "memory/"))} for r in rows]

    assert training_part(on) == training_part(off)
    assert all("val/reward" in r for r in on)


def test_early_stop_fires_on_a_flat_validation_curve(tmp_path):
    # A learning rate this small leaves the policy unchanged to float precision, and validation
    # re-uses its random numbers, so val/reward is flat: stop after `patience` evaluations.
    cfg = compose_cfg(FAST + ["trainer.max_steps=30", "algo.lr=1e-20", "eval.every=2", "eval.num_prompts=8", "early_stop.patience=2"])
    history = build_run(cfg, tmp_path).fit()
    vals = [r["val/reward"] for r in history if "val/reward" in r]
    assert len(set(vals)) == 1
    assert len(history) == 6 and history[-1]["early_stop/bad_evals"] == 2


def test_early_stop_does_not_fire_while_validation_improves(tmp_path):
    # The letters task learns at the default LR: val/reward rises (not monotonically) over these steps.
    cfg = compose_cfg(
        [
            "trainer.max_steps=32",
            "logging=plain",
            "eval.every=4",
            "eval.num_prompts=32",
            "early_stop.patience=3",
            "early_stop.threshold=0.0",
            "trainer.save_final=false",
        ]
    )
    history = build_run(cfg, tmp_path).fit()
    vals = [r["val/reward"] for r in history if "val/reward" in r]
    assert len(history) == 32 and max(vals) > vals[0] + 0.1, vals
    assert max(r["early_stop/bad_evals"] for r in history if "val/reward" in r) < 3


def test_memory_metrics_and_config_file(tmp_path):
    cfg = compose_cfg(FAST + ["trainer.save_final=false"])
    history = build_run(cfg, tmp_path).fit()
    assert history[-1]["memory/rss_peak_mb"] > 50
    saved = json.loads((tmp_path / "training_config.json").read_text())
    assert saved["algo"]["name"] == "ppo" and saved["trainer"]["max_steps"] == 2 and saved["algo"]["kl_estimator"] == "k1"
