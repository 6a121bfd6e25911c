"""Replay inside real (tiny) runs: decoupled PPO reduces to plain PPO, uses the proximal policy as
its anchor, keeps the KL controller on fresh samples, and resumes exactly (D55, D61-D64)."""

import pytest
import torch

from rlhand.config import ConfigError
from rlhand.config.schema import AlgoConfig
from rlhand.rollout.batch import concat_rollouts
from rlhand.stages import build_run
from rlhand.stages.ppo.advantages import assign_advantages
from rlhand.stages.ppo.update import ppo_losses
from tests.conftest import FAST, compose_cfg
from tests.test_rollout import make_rollout

SMALL_REPLAY = ["replay=standard", "replay.min_size=8", "replay.sample_size=4", "replay.buffer_size=64", "trainer.max_steps=6"]


def training_part(rows):
    return [{k: v for k, v in r.items() if not k.startswith(("replay/", "time/", "memory/"))} for r in rows]


def test_seed_scenarios_have_the_seed_values():
    expected = {
        "standard": (1000, 100, 32, False, 4, 100),
        "high_efficiency": (2000, 200, 64, False, 8, 200),
        "priority": (1000, 100, 32, True, 4, 100),
        "conservative": (500, 50, 16, False, 2, 50),
    }
    for name, values in expected.items():
        r = compose_cfg([f"replay={name}"]).replay
        assert r.enabled and (r.buffer_size, r.min_size, r.sample_size, r.prioritized, r.max_reuse, r.staleness_threshold) == values
    p = compose_cfg(["replay=priority"]).replay
    assert (p.alpha, p.beta, p.beta_increment) == (0.6, 0.4, 0.001)
    assert not compose_cfg(["replay=off"]).replay.enabled
    v2 = compose_cfg(["algo=ppo_v2"])
    assert v2.replay.name == "standard" and v2.checkpoint.every > 0
    assert compose_cfg(["algo=ppo_v2", "replay=priority"]).replay.prioritized


def test_batch_must_split_into_minibatches():
    with pytest.raises(ConfigError, match="replay.sample_size"):
        compose_cfg(["replay=standard", "replay.sample_size=30"])  # 64 + 30 into 4 minibatches


def test_degenerate_replay_is_plain_ppo_d63(tmp_path):
    """alpha=0, staleness 0, reuse cap 1: nothing old can be drawn, so every update is fresh-only
    and the run must equal plain PPO exactly, weights and metrics."""
    degenerate = ["replay=priority", "replay.alpha=0", "replay.beta=1", "replay.staleness_threshold=0", "replay.max_reuse=1",
                  "replay.min_size=1", "replay.sample_size=2", "trainer.max_steps=4"]
    # One after the other: a trainer seeds torch's global generator when it is built.
    plain = build_run(compose_cfg(FAST + ["trainer.max_steps=4"]), tmp_path / "plain")
    a = plain.fit()
    replay = build_run(compose_cfg(FAST + degenerate), tmp_path / "replay")
    b = replay.fit()
    assert training_part(a) == training_part(b)
    assert all(row["replay/sampled"] == 0 for row in b) and b[-1]["replay/buffer_size"] == 32
    for (name, p), q in zip(plain.stage.models.policy.state_dict().items(), replay.stage.models.policy.state_dict().values()):
        assert torch.equal(p, q), name


def test_unit_weights_give_the_plain_ppo_loss_d55():
    models, _, rollout = make_rollout()
    algo = AlgoConfig(name="t", rollout_batch_size=8, num_minibatches=2, clip_ratio_high=0.28)
    rollout, _ = assign_advantages(rollout, algo, kl_coef=0.05)
    away = rollout.proximal_logprobs - 0.1 * torch.rand_like(rollout.proximal_logprobs)
    rollout = rollout.replace(proximal_logprobs=away)  # ratios away from 1: clipping active

    def loss_and_grads(batch):
        models.policy.zero_grad(), models.critic.module.zero_grad()
        losses, _ = ppo_losses(models.policy, models.critic, batch, algo, kl_coef=0.05, temperature=0.7)
        losses["total"].backward()
        return losses["total"].item(), [p.grad.clone() for p in models.policy.parameters() if p.grad is not None]

    plain_loss, plain_grads = loss_and_grads(rollout)
    weighted = rollout.replace(policy_weights=rollout.response_mask.float(), value_weights=torch.ones(len(rollout)))
    weighted_loss, weighted_grads = loss_and_grads(weighted)
    assert weighted_loss == plain_loss and all(torch.equal(g, h) for g, h in zip(plain_grads, weighted_grads))
    doubled = weighted.replace(policy_weights=weighted.policy_weights * 2)  # and the weights do act
    assert loss_and_grads(doubled)[0] != plain_loss


def test_replayed_samples_are_anchored_to_the_proximal_policy_d61_d62(tmp_path):
    history = build_run(compose_cfg(FAST + SMALL_REPLAY + ["trainer.save_final=false"]), tmp_path).fit()
    replaying = [row for row in history if row["replay/sampled"] > 0]
    assert len(replaying) >= 3
    for row in replaying:
        # The ratio on the first minibatch is pi/pi_prox: 1 before any step, although replayed
        # samples came from older policies (their IS weights pi_prox/pi_behav are not 1).
        assert row["policy/ratio_first_minibatch"] == pytest.approx(1.0, abs=1e-5)
        assert row["replay/tis_mean"] != pytest.approx(1.0, abs=1e-4)
        assert 0 < row["replay/ess"] <= 1
    assert history[-1]["replay/max_reuse"] <= 4
    last = history[-1]
    assert last["replay/sample_efficiency"] == last["samples/trained"] / last["samples/generated"] > 1.0


def test_kl_stats_come_from_the_fresh_rows_only_d64():
    _, _, fresh = make_rollout()
    _, _, other = make_rollout(penalty=1.0)
    # A very different KL on the "replayed" rows, which are not fresh.
    other = other.replace(ref_logprobs=other.ref_logprobs - 1.0, fresh=torch.zeros_like(other.fresh))
    algo = AlgoConfig(name="t", rollout_batch_size=8, num_minibatches=2)
    batch = concat_rollouts([fresh, other], pad_id=0)
    _, fresh_only = assign_advantages(fresh, algo, kl_coef=0.05)
    _, mixed = assign_advantages(batch, algo, kl_coef=0.05)
    assert mixed["kl/ref"] == pytest.approx(fresh_only["kl/ref"], abs=1e-6)
    all_fresh = batch.replace(fresh=torch.ones_like(batch.fresh))
    assert assign_advantages(all_fresh, algo, kl_coef=0.05)[1]["kl/ref"] != pytest.approx(fresh_only["kl/ref"], abs=1e-3)


def test_replay_run_resumes_exactly(tmp_path):
    run = FAST + SMALL_REPLAY + ["replay=priority", "trainer.max_steps=6", "checkpoint.every=3"]
    reference = build_run(compose_cfg(run), tmp_path / "ref")
    expected = reference.fit()
    resumed = build_run(compose_cfg(run + [f"resume={tmp_path / 'ref' / 'checkpoints' / 'step_3'}"]), tmp_path / "resumed")
    assert resumed.stage.replay.buffer.count == 3 * 8
    got = resumed.fit()
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith(("time/", "memory/"))} for r in rows]  # noqa: E731
    assert strip(got) == strip(expected)
    for p, q in zip(reference.stage.models.policy.state_dict().values(), resumed.stage.models.policy.state_dict().values()):
        assert torch.equal(p, q)
    # A checkpoint without a buffer cannot resume a replay run.
    plain = build_run(compose_cfg(FAST + ["trainer.max_steps=3", "checkpoint.every=3"]), tmp_path / "plain")
    plain.fit()
    with pytest.raises(ValueError, match="has no replay buffer"):
        build_run(compose_cfg(run + [f"resume={tmp_path / 'plain' / 'checkpoints' / 'step_3'}"]), tmp_path / "x")


def test_truncated_share_counts_the_replayed_tokens_above_the_cap():
    """replay/tis_truncated_frac: the share of replayed tokens whose pi_prox / pi_behaviour exceeds
    is_truncation (it read 0 whatever the ratios, when it compared the recomputed log-probs with themselves)."""
    import math

    from rlhand.config.schema import ReplayConfig
    from rlhand.models.forward import response_logits, sequence_inputs, token_logprobs
    from rlhand.replay.buffer import ReplayBuffer
    from rlhand.replay.mixer import ExperienceReplay
    from rlhand.reporting.timer import PhaseTimer

    models, tok, rollout = make_rollout()
    inputs = sequence_inputs(rollout.prompt_ids, rollout.prompt_mask, rollout.response_ids, rollout.response_mask)
    with torch.no_grad():
        current = token_logprobs(response_logits(models.policy, inputs, 0.7), rollout.response_ids) * rollout.response_mask
    older = torch.zeros(len(rollout), 1)
    older[:4] = math.log(3.0)  # rows 0-3 were 3x less likely under the policy that sampled them
    stored = rollout.replace(behaviour_logprobs=(current - older) * rollout.response_mask, advantages=torch.zeros_like(current))
    cfg = ReplayConfig(name="t", enabled=True, buffer_size=8, min_size=1, sample_size=8, max_reuse=1)
    buffer = ReplayBuffer(cfg, prompt_width=32, response_width=8, vocab_size=len(tok), with_ref=True, seed=0)
    buffer.add(stored, step=1, priorities=torch.ones(8))
    replay = ExperienceReplay(cfg, buffer, tok.pad_token_id, torch.device("cpu"), is_truncation=2.0)
    mixed, stats = replay.mix(rollout, step=2, models=models, temperature=0.7, timer=PhaseTimer(torch.device("cpu")))
    batch = mixed.batch
    replayed = batch.select(torch.nonzero(~batch.fresh).squeeze(1))
    expected = (replayed.response_mask * (replayed.proximal_logprobs - replayed.behaviour_logprobs > math.log(2.0))).sum() / replayed.response_mask.sum()
    assert 0.2 < stats["replay/tis_truncated_frac"] < 0.8
    assert stats["replay/tis_truncated_frac"] == pytest.approx(expected.item())
    assert batch.num_fresh == 8 and len(batch) == 16
