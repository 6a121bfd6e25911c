"""The estimators inside the trainer: group sampling, critic-free runs, group-intact minibatches,
replay with a group estimator, DAPO's dynamic sampling (rlhand/stages/ppo/advantages.py,
rlhand/rollout/groups.py, rlhand/stages/ppo/update.py)."""

import pytest
import torch

from rlhand.config import ConfigError
from rlhand.config.schema import AlgoConfig, KLPlacement
from rlhand.rollout.batch import concat_rollouts
from rlhand.rollout.groups import DynamicSampling, repeat_groups
from rlhand.stages import build_run
from rlhand.stages.ppo.advantages import assign_advantages
from rlhand.stages.ppo.update import minibatch_indices
from tests.conftest import FAST, compose_cfg
from tests.test_replay_training import training_part
from tests.test_rollout import make_rollout

CRITIC_FREE = ["grpo", "dr_grpo", "rloo", "reinforce_pp"]


def grouped(rollout, scores):
    """The 8-row test rollout as 4 groups of 2 with these scores."""
    return rollout.replace(scores=torch.tensor(scores), raw_scores=torch.tensor(scores))


def test_group_estimators_spread_their_sequence_advantage_over_tokens():
    _, _, rollout = make_rollout()
    rollout = grouped(rollout, [1.0, 0.0, 0.5, 0.5, 2.0, -1.0, 0.0, 3.0])
    algo = AlgoConfig(name="t", rollout_batch_size=8, num_minibatches=2, estimator="rloo", kl_coef=0.0, whiten_advantages=False)
    out, _ = assign_advantages(rollout, algo, kl_coef=0.0, group_size=2)
    per_seq = torch.tensor([1.0, -1.0, 0.0, 0.0, 3.0, -3.0, -3.0, 3.0])  # each against the other of its pair
    assert torch.allclose(out.advantages, per_seq.unsqueeze(1) * rollout.response_mask)
    assert torch.allclose(out.returns - out.values, out.advantages)  # raw advantage = returns - values, as for gae


@pytest.mark.parametrize("estimator", ["grpo", "dr_grpo", "rloo"])
def test_with_the_kl_in_the_reward_a_group_of_equal_scores_gets_only_its_penalty(estimator):
    """The group statistics are over the scores; the KL penalty is added per token after, as its
    return-to-go. A group of equal scores is not scaled up from its members' KL differences: before
    this rule GRPO gave such a group advantages of order 1 ([-0.912, 1.421, -0.195, -0.315] in the
    review that found it)."""
    _, _, rollout = make_rollout()
    mask = rollout.response_mask
    torch.manual_seed(0)
    kl = torch.rand(mask.shape) * 0.3 * mask  # per-token KL up to 0.3, different in every response
    rollout = grouped(rollout, [1.0] * 8).replace(ref_logprobs=rollout.proximal_logprobs - kl)
    algo = AlgoConfig(name="t", rollout_batch_size=8, num_minibatches=2, estimator=estimator, whiten_advantages=False)
    out, _ = assign_advantages(rollout, algo, kl_coef=0.05, group_size=2)
    to_go = kl.flip(1).cumsum(1).flip(1) * mask  # sum of kl_t' for t' >= t
    torch.testing.assert_close(out.advantages, -0.05 * to_go, rtol=0, atol=1e-6)
    assert out.advantages.abs().max() <= 0.05 * 0.3 * mask.sum(dim=1).max()


@pytest.mark.parametrize("placement", ["reward", "loss"])
def test_grpo_group_statistics_are_over_the_scores_in_both_kl_placements(placement):
    _, _, rollout = make_rollout()
    mask = rollout.response_mask
    scores = [1.0, 0.0, 0.5, 0.5, 2.0, -1.0, 0.0, 3.0]
    kl = torch.full(mask.shape, 0.2) * mask
    rollout = grouped(rollout, scores).replace(ref_logprobs=rollout.proximal_logprobs - kl)
    algo = AlgoConfig(name="t", rollout_batch_size=8, num_minibatches=2, estimator="grpo", whiten_advantages=False, kl_placement=KLPlacement(placement))
    out, _ = assign_advantages(rollout, algo, kl_coef=0.1, group_size=2)
    std = torch.tensor([0.5**0.5, 0.0, 4.5**0.5, 4.5**0.5]).repeat_interleave(2)  # unbiased std of each pair
    centred = torch.tensor([0.5, -0.5, 0.0, 0.0, 1.5, -1.5, -1.5, 1.5])
    per_sequence = centred / (std + 1e-6)
    expected = per_sequence.unsqueeze(1) * mask
    if placement == "reward":
        expected = expected - 0.1 * 0.2 * mask.flip(1).cumsum(1).flip(1) * mask
    torch.testing.assert_close(out.advantages, expected, rtol=0, atol=1e-5)


def test_replayed_rows_of_a_group_estimator_keep_their_stored_advantages():
    _, _, fresh = make_rollout()
    fresh = grouped(fresh, [1.0, 0.0] * 4)
    stored = torch.full_like(fresh.behaviour_logprobs, 0.25) * fresh.response_mask
    replayed = fresh.replace(fresh=torch.zeros_like(fresh.fresh), stored_advantages=stored)
    fresh = fresh.replace(stored_advantages=torch.zeros_like(stored))
    algo = AlgoConfig(name="t", rollout_batch_size=8, num_minibatches=2, estimator="grpo", kl_coef=0.0, whiten_advantages=False)
    out, _ = assign_advantages(concat_rollouts([fresh, replayed], pad_id=0), algo, kl_coef=0.0, group_size=2)
    assert torch.equal(out.advantages[8:], stored)
    assert torch.allclose(out.advantages[:8, 0], torch.tensor([0.7071, -0.7071] * 4), atol=1e-4)  # +-0.5 / std 0.7071


def test_reinforce_pp_is_the_whitened_return_to_go():
    _, _, rollout = make_rollout()
    algo = AlgoConfig(name="t", rollout_batch_size=8, num_minibatches=2, estimator="reinforce_pp", kl_coef=0.0, whiten_advantages=False)
    out, _ = assign_advantages(rollout, algo, kl_coef=0.0)
    # kl 0, gamma 1: every token's return-to-go is the score
    assert torch.allclose(out.advantages, rollout.scores.unsqueeze(1) * rollout.response_mask)


def test_minibatches_keep_groups_whole_and_take_equal_replayed_shares():
    fresh = torch.tensor([True] * 12 + [False] * 4)
    torch.manual_seed(0)
    parts = minibatch_indices(fresh, 2, group_size=3)
    assert sorted(torch.cat(parts).tolist()) == list(range(16))
    for part in parts:
        rows = part.tolist()
        fresh_rows, replayed = [r for r in rows if r < 12], [r for r in rows if r >= 12]
        assert len(fresh_rows) == 6 and len(replayed) == 2
        assert sorted({r // 3 for r in fresh_rows}) == sorted(r // 3 for r in fresh_rows[::3])  # whole groups, consecutive
        for start in range(0, 6, 3):
            group = fresh_rows[start : start + 3]
            assert group == list(range(group[0], group[0] + 3))
    # and they are shuffled: over seeds the first minibatch does not always start with group 0
    firsts = {minibatch_indices(fresh, 2, group_size=3)[0][0].item() for _ in range(20)}
    assert len(firsts) > 1


def test_group_size_one_is_the_plain_shuffle():
    fresh = torch.ones(8, dtype=torch.bool)
    torch.manual_seed(5)
    got = minibatch_indices(fresh, 4)
    torch.manual_seed(5)
    assert all(torch.equal(a, b) for a, b in zip(got, torch.randperm(8).split(2)))


def test_each_prompt_is_sampled_samples_per_prompt_times_in_a_row(tmp_path):
    trainer = build_run(compose_cfg(FAST + ["estimator=grpo", "trainer.max_steps=1", "trainer.save_final=false"]), tmp_path)
    rollout = trainer.stage.collector.collect()
    prompts = [tuple(row[mask.bool()].tolist()) for row, mask in zip(rollout.prompt_ids, rollout.prompt_mask)]
    assert len(prompts) == 8 and all(prompts[i] == prompts[i - i % 4] for i in range(8)) and prompts[0] != prompts[4]
    assert repeat_groups([7, 2], 3) == [7, 7, 7, 2, 2, 2]


@pytest.mark.parametrize("estimator", CRITIC_FREE)
def test_a_critic_free_run_builds_saves_and_logs_no_critic(tmp_path, estimator):
    run = FAST + [f"estimator={estimator}", "checkpoint.every=2", "eval.every=2", "eval.num_prompts=4"]
    trainer = build_run(compose_cfg(run), tmp_path)
    assert trainer.stage.models.critic.module is None and trainer.stage.learners.critic is None
    history = trainer.fit()
    assert not any(key.startswith("value/") or key in ("loss/value", "grad/critic_norm") for row in history for key in row)
    assert (tmp_path / "final" / "policy").is_dir() and not (tmp_path / "final" / "critic").exists()
    assert not (tmp_path / "best" / "critic").exists()
    resumed = build_run(compose_cfg(run + ["trainer.max_steps=3", f"resume={tmp_path / 'checkpoints' / 'step_2'}"]), tmp_path / "again")
    assert resumed.step == 2 and resumed.stage.learners.critic is None


def test_a_critic_free_run_learns(tmp_path):
    """RLOO on the built-in task, no critic: the reward rises as with PPO's critic."""
    run = ["estimator=rloo", "trainer.max_steps=30", "logging=plain", "trainer.save_final=false"]
    history = build_run(compose_cfg(run), tmp_path).fit()
    start = sum(row["reward/mean"] for row in history[:5]) / 5
    end = sum(row["reward/mean"] for row in history[-5:]) / 5
    assert end > start + 0.12, (start, end)  # measured: -0.83 -> -0.63 (and +0.71 after 150 iterations)


def test_degenerate_replay_with_a_group_estimator_is_on_policy_bit_for_bit(tmp_path):
    degenerate = ["replay=priority", "replay.alpha=0", "replay.beta=1", "replay.staleness_threshold=0", "replay.max_reuse=1",
                  "replay.min_size=1", "replay.sample_size=2", "trainer.max_steps=4"]
    base = FAST + ["estimator=grpo", "generation.samples_per_prompt=2"]
    plain = build_run(compose_cfg(base + ["trainer.max_steps=4"]), tmp_path / "plain")
    a = plain.fit()
    replay = build_run(compose_cfg(base + degenerate), tmp_path / "replay")
    b = replay.fit()
    assert training_part(a) == training_part(b)
    for p, q in zip(plain.stage.models.policy.state_dict().values(), replay.stage.models.policy.state_dict().values()):
        assert torch.equal(p, q)


@pytest.mark.parametrize("estimator", ["grpo", "reinforce_pp"])
def test_replay_with_a_critic_free_estimator_is_anchored_to_the_proximal_policy(tmp_path, estimator):
    small = ["replay=standard", "replay.min_size=8", "replay.sample_size=4", "replay.buffer_size=64", "trainer.max_steps=6"]
    history = build_run(compose_cfg(FAST + [f"estimator={estimator}", "generation.samples_per_prompt=2"] + small + ["trainer.save_final=false"]), tmp_path).fit()
    replaying = [row for row in history if row["replay/sampled"] > 0]
    assert len(replaying) >= 3
    for row in replaying:
        assert row["policy/ratio_first_minibatch"] == pytest.approx(1.0, abs=1e-5)
        assert row["replay/tis_mean"] != pytest.approx(1.0, abs=1e-4)


def test_dynamic_sampling_keeps_groups_with_different_scores_and_fills_after_the_last_round():
    _, _, rollout = make_rollout()
    equal_first = grouped(rollout, [1.0, 1.0, 0.0, 1.0, 2.0, 2.0, 0.0, 0.5])  # groups: equal, mixed, equal, mixed
    dynamic = DynamicSampling(group_size=2, rows=8, pad_id=0)
    assert not dynamic.add(equal_first)  # 2 of 4 groups kept
    assert dynamic.add(grouped(rollout, [0.0, 1.0, 3.0, 3.0, 0.0, 1.0, 0.0, 1.0]))  # 3 more: enough
    batch = dynamic.batch()
    assert batch.scores.tolist() == [0.0, 1.0, 0.0, 0.5, 0.0, 1.0, 0.0, 1.0]  # the 2 kept of round 1, the first 2 of round 2
    assert dynamic.stats() == {"dynamic/rounds": 2, "dynamic/informative_frac": 5 / 8, "dynamic/filled_groups": 0.0}
    short = DynamicSampling(group_size=2, rows=8, pad_id=0)
    short.add(equal_first)
    batch = short.batch()  # the trainer stops after algo.dynamic_max_rounds: fill with dropped groups
    assert batch.scores.tolist() == [0.0, 1.0, 0.0, 0.5, 1.0, 1.0, 2.0, 2.0]
    assert short.stats()["dynamic/filled_groups"] == 2.0


def test_a_dynamic_sampling_run_counts_every_generated_sample_and_resumes_exactly(tmp_path):
    # A binary-ish reward on 2 samples per prompt: many groups are equal.
    run = FAST + ["estimator=grpo", "generation.samples_per_prompt=2", "algo.dynamic_sampling=true", "trainer.max_steps=4", "checkpoint.every=2"]
    expected = build_run(compose_cfg(run), tmp_path / "ref").fit()
    for row in expected:
        assert 1 <= row["dynamic/rounds"] <= 4
    assert expected[-1]["samples/generated"] == 8 * sum(row["dynamic/rounds"] for row in expected)
    got = build_run(compose_cfg(run + [f"resume={tmp_path / 'ref' / 'checkpoints' / 'step_2'}"]), tmp_path / "resumed").fit()
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith(("time/", "memory/"))} for r in rows]  # noqa: E731
    assert strip(got) == strip(expected)


@pytest.mark.parametrize(
    "overrides, field",
    [
        (["estimator=rloo", "generation.samples_per_prompt=1"], "generation.samples_per_prompt"),
        (["generation.samples_per_prompt=3"], "generation.samples_per_prompt"),  # 64 responses are not groups of 3
        (["generation.samples_per_prompt=32"], "algo.num_minibatches"),  # minibatches of 16 cannot hold a group of 32
        (["algo.dynamic_sampling=true"], "algo.dynamic_sampling"),  # gae has no groups
        (["estimator=grpo", "model.critic_backbone=shared"], "model.critic_backbone"),
        (["estimator=grpo", "replay=standard", "replay.sample_size=34"], "replay.sample_size"),
    ],
)
def test_group_settings_that_cannot_work_name_their_field(overrides, field):
    with pytest.raises(ConfigError, match=f"^{field}"):
        compose_cfg(overrides)
