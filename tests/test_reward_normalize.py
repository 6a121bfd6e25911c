"""reward.normalize=running and reward.clip: running statistics of every score so far (the batch being
scored included), frozen during validation, clipped, logged as reward/unnormalized; exact resume is in
test_resume.py (its runs normalise this way), every rank's scores in test_distributed.py."""

import pytest
import torch

from rlhand.config.load import ConfigError
from rlhand.core.running import RunningMoments
from rlhand.rewards.normalize import NormalizedScorer
from rlhand.stages import build_run
from tests.conftest import FAST, compose_cfg


def test_running_moments_equal_the_statistics_of_every_score_so_far():
    torch.manual_seed(0)
    batches = [torch.randn(5) * 3 + 1, torch.randn(1) * 10, torch.randn(12) - 4]
    moments = RunningMoments()
    for i, batch in enumerate(batches):
        moments.update(batch)
        seen = torch.cat(batches[: i + 1]).double()
        assert moments.mean == pytest.approx(seen.mean().item(), abs=1e-12)
        assert moments.std == pytest.approx(seen.std(unbiased=False).item() if len(seen) > 1 else 0.0, abs=1e-12)
    again = RunningMoments()
    again.load_state_dict(moments.state_dict())
    assert (again.count, again.mean, again.std) == (moments.count, moments.mean, moments.std)


ARGS = (None,) * 5  # prompt and response ids and masks, ended: the fixed scorer reads none of them


class Fixed:
    """A scorer that hands out the next batch of scores each call."""

    def __init__(self, *batches):
        self.batches = list(batches)

    def __call__(self, *_, **__):
        return self.batches.pop(0)


def test_scores_are_standardised_by_all_so_far_frozen_in_validation_and_clipped():
    first, second, during_validation = torch.tensor([1.0, 3.0]), torch.tensor([5.0, 7.0]), torch.tensor([100.0, 4.0])
    scorer = NormalizedScorer(Fixed(first, during_validation, second), running=True)
    assert torch.allclose(scorer(*ARGS), torch.tensor([-1.0, 1.0]))  # mean 2, std 1
    with scorer.frozen():
        assert torch.allclose(scorer(*ARGS), (during_validation - 2.0) / 1.0)
    assert scorer.moments.count == 2  # validation's scores did not count
    everything = torch.tensor([1.0, 3.0, 5.0, 7.0])
    assert torch.allclose(scorer(*ARGS), (second - everything.mean()) / everything.std(unbiased=False))
    assert scorer.unnormalized_mean() == {"reward/unnormalized": pytest.approx(4.0)}  # the training batches, before normalising
    clipped = NormalizedScorer(Fixed(torch.tensor([-3.0, 0.5, 9.0])), clip=1.5)
    assert torch.equal(clipped(*ARGS), torch.tensor([-1.5, 0.5, 1.5]))
    assert NormalizedScorer(Fixed(torch.tensor([2.0])), running=True)(*ARGS).item() == 0.0  # one score: no division by 0
    before_training = NormalizedScorer(Fixed(torch.tensor([0.3, 0.7])), running=True)
    with before_training.frozen():  # eval.before_training: no statistics yet, the scores as they are
        assert torch.equal(before_training(*ARGS), torch.tensor([0.3, 0.7]))


def test_a_run_normalising_by_running_statistics_trains_and_logs_the_raw_reward(tmp_path):
    history = build_run(compose_cfg(FAST + ["reward.normalize=running", "reward.clip=3.0", "trainer.max_steps=3"]), tmp_path).fit()
    for row in history:
        assert -1 <= row["reward/unnormalized"] <= 1  # the letters reward's range
        assert -3 <= row["reward/mean"] <= 3
    assert abs(history[0]["reward/mean"]) < 1e-5  # the first batch standardised by itself


def test_bad_normalisation_settings_are_one_line():
    with pytest.raises(ConfigError, match=r"^reward.normalize: saved: a reward model's statistics, needs reward=model"):
        compose_cfg(["reward.normalize=saved"])
    with pytest.raises(ConfigError, match=r"^reward.clip: must be > 0"):
        compose_cfg(["reward.clip=0"])
