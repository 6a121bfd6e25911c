"""End-to-end runs of the trainer core on the tiny default."""

import json

import pytest
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from rlhand.stages import build_run
from tests.conftest import FAST, compose_cfg

REQUIRED_KEYS = {
    "step", "reward/mean", "loss/policy", "loss/value", "loss/total", "kl/ref", "policy/entropy", "policy/approx_kl",
    "policy/clipfrac", "policy/ratio_first_minibatch", "lr", "samples/generated", "samples/trained",
    "time/rollout_s", "time/update_s", "time/iteration_s",
}


def test_fast_run_writes_metrics_and_loadable_models(tmp_path):
    trainer = build_run(compose_cfg(FAST), tmp_path)
    before = {k: v.clone() for k, v in trainer.stage.models.policy.state_dict().items()}
    ref_before = {k: v.clone() for k, v in trainer.stage.models.ref.state_dict().items()}
    history = trainer.fit()
    rows = [json.loads(line) for line in (tmp_path / "logs" / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2] and len(history) == 2
    assert REQUIRED_KEYS <= set(rows[0])
    assert rows[0]["policy/ratio_first_minibatch"] == pytest.approx(1.0, abs=1e-5)
    assert rows[1]["samples/generated"] == 16 and rows[1]["samples/trained"] == 16
    after = trainer.stage.models.policy.state_dict()
    assert any(not torch.equal(before[k], after[k]) for k in before)
    assert all(torch.equal(ref_before[k], v) for k, v in trainer.stage.models.ref.state_dict().items())
    policy = AutoModelForCausalLM.from_pretrained(tmp_path / "final" / "policy")
    critic = AutoModelForSequenceClassification.from_pretrained(tmp_path / "final" / "critic")
    AutoTokenizer.from_pretrained(tmp_path / "final" / "policy")
    assert all(torch.equal(after[k], v) for k, v in policy.state_dict().items())
    assert critic.config.num_labels == 1
    assert list(tmp_path.glob("final*")) == [tmp_path / "final"]


def test_same_seed_same_run(tmp_path):
    a = build_run(compose_cfg(FAST + ["trainer.save_final=false"]), tmp_path / "a").fit()
    b = build_run(compose_cfg(FAST + ["trainer.save_final=false"]), tmp_path / "b").fit()
    # Wall time and memory describe the machine, not the run; every training metric must match.
    strip = lambda h: [{k: v for k, v in m.items() if not k.startswith(("time/", "memory/"))} for m in h]  # noqa: E731
    assert strip(a) == strip(b)
    assert REQUIRED_KEYS - {"time/rollout_s", "time/update_s", "time/iteration_s"} <= set(strip(a)[0])


def test_peak_rss_is_the_iterations_own(tmp_path):
    """memory/rss_peak_mb must not carry a peak reached before the run (by an earlier test, say)."""
    from rlhand.reporting.memory import memory_stats

    ballast = torch.ones(96 * 2**20, dtype=torch.float32)  # 384 MiB, touched
    before = memory_stats(torch.device("cpu"))["memory/rss_peak_mb"]
    del ballast
    history = build_run(compose_cfg(FAST + ["trainer.save_final=false"]), tmp_path).fit()
    assert all(row["memory/rss_peak_mb"] < before - 256 for row in history), (before, [r["memory/rss_peak_mb"] for r in history])


def test_no_reference_model_when_kl_is_off(tmp_path):
    trainer = build_run(compose_cfg(FAST + ["algo.kl_coef=0", "trainer.save_final=false"]), tmp_path)
    assert trainer.stage.models.ref is None
    history = trainer.fit()
    assert history[-1]["kl/ref"] == 0.0


@pytest.mark.parametrize(
    "extra",
    [
        ["algo.kl_placement=loss", "algo.kl_estimator=k3", "algo.grad_accum_steps=2"],
        ["algo.kl_control=adaptive", "algo.kl_target=1.0"],
        ["algo.loss_agg=seq_mean_token_mean", "algo.clip_ratio_high=0.28", "algo.ent_coef=0.01"],
        ["algo.whiten_rewards=true", "algo.rollout_batch_size=16", "algo.num_minibatches=2", "algo.value_clip_ratio=null"],
        ["scheduler=cosine", "scheduler.warmup_steps=1", "generation.top_k=20", "generation.top_p=0.9"],
        ["reward=model", "generation.missing_eos_penalty=1.0", "algo.target_kl=0.0001"],
    ],
)
def test_algorithm_variants_run(tmp_path, extra):
    history = build_run(compose_cfg(FAST + extra + ["trainer.save_final=false"]), tmp_path).fit()
    assert all(torch.isfinite(torch.tensor(m["loss/total"])) for m in history)


def test_target_kl_stops_the_iteration_early(tmp_path):
    history = build_run(compose_cfg(FAST + ["algo.target_kl=1e-9", "trainer.save_final=false"]), tmp_path).fit()
    # the first minibatch has approx_kl 0 (<= limit); the step moves the policy, so the second stops it
    assert history[0]["policy/early_stopped"] == 1.0 and history[0]["policy/optimizer_steps"] < 4
    # 2 minibatches of 4 per epoch: only the rows of the steps taken count, each once.
    assert history[0]["samples/trained"] == min(history[0]["policy/optimizer_steps"], 2) * 4


def test_adaptive_kl_coefficient_moves(tmp_path):
    history = build_run(compose_cfg(FAST + ["algo.kl_control=adaptive", "algo.kl_target=0.001", "trainer.max_steps=3", "trainer.save_final=false"]), tmp_path).fit()
    assert history[0]["kl/coef"] == 0.02
    for prev, cur in zip(history, history[1:]):
        error = min(max(prev["kl/ref"] / 0.001 - 1, -0.2), 0.2)
        assert cur["kl/coef"] == pytest.approx(prev["kl/coef"] * (1 + error * 8 / 10000), rel=1e-9)
    assert history[-1]["kl/coef"] != 0.02


def test_reward_rises_on_the_builtin_task(tmp_path):
    """The learning test: a fixed seed and 40 default-size iterations lift the letters reward."""
    cfg = compose_cfg(["trainer.max_steps=40", "logging=plain", "trainer.save_final=false"])
    history = build_run(cfg, tmp_path).fit()
    start = sum(m["reward/mean"] for m in history[:5]) / 5
    end = sum(m["reward/mean"] for m in history[-5:]) / 5
    assert end > start + 0.15, (start, end)
