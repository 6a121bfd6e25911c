"""Critic-free estimators against hand-computed values: groups of unequal returns, a group of equal
returns, a group of one (rlhand/core/estimators.py)."""

import pytest
import torch

from rlhand.core.estimators import (
    grpo_advantages,
    informative_groups,
    returns_to_go,
    rloo_advantages,
    spread_over_tokens,
)


def t(*values):
    return torch.tensor(values, dtype=torch.float64)


def test_grpo_centres_and_scales_each_group_by_its_unbiased_std():
    # group 1: mean 0.5, unbiased std sqrt((0.25 + 0.25 + 0) / 2) = 0.5 -> (1, -1, 0);
    # group 2: mean 2, std sqrt((1 + 1 + 0) / 2) = 1 -> (1, 0, -1)
    adv = grpo_advantages(t(1.0, 0.0, 0.5, 3.0, 2.0, 1.0), 3, eps=0.0)
    assert torch.allclose(adv, t(1.0, -1.0, 0.0, 1.0, 0.0, -1.0))
    # with verl's epsilon the scale is std + 1e-6
    assert grpo_advantages(t(1.0, 0.0), 2)[0].item() == pytest.approx(0.5 / (0.5**0.5 + 1e-6))


def test_dr_grpo_only_centres():
    assert torch.allclose(grpo_advantages(t(1.0, 0.0, 0.5, 3.0, 2.0, 1.0), 3, scale_by_std=False), t(0.5, -0.5, 0.0, 1.0, 0.0, -1.0))


def test_rloo_subtracts_the_mean_of_the_others():
    # 1 - (0 + .5) / 2 = .75; 0 - (1 + .5) / 2 = -.75; .5 - (1 + 0) / 2 = 0
    assert torch.allclose(rloo_advantages(t(1.0, 0.0, 0.5), 3), t(0.75, -0.75, 0.0))
    # pairs: each against the other
    assert torch.allclose(rloo_advantages(t(2.0, -1.0), 2), t(3.0, -3.0))


@pytest.mark.parametrize("estimator", [grpo_advantages, lambda r, k: grpo_advantages(r, k, scale_by_std=False), rloo_advantages])
def test_a_group_of_equal_returns_gets_zero(estimator):
    adv = estimator(t(0.7, 0.7, 0.7, 0.7, 1.0, 0.0, 1.0, 0.0), 4)
    assert torch.equal(adv[:4], torch.zeros(4, dtype=torch.float64))  # exactly 0, not eps-sized
    assert adv[4:].abs().min() > 0


@pytest.mark.parametrize("estimator", [grpo_advantages, rloo_advantages])
def test_a_group_of_one_is_its_own_return(estimator):
    assert torch.equal(estimator(t(0.3, -2.0), 1), t(0.3, -2.0))  # no baseline: plain REINFORCE (verl's convention)


def test_returns_must_split_into_groups():
    with pytest.raises(ValueError, match="groups of 4"):
        grpo_advantages(t(1.0, 2.0, 3.0), 4)


def test_returns_to_go_discounts_and_stops_at_the_mask():
    rewards = torch.tensor([[0.0, 0.0, 1.0], [0.1, 1.0, 9.0]])
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    assert torch.allclose(returns_to_go(rewards, mask, gamma=0.5), torch.tensor([[0.25, 0.5, 1.0], [0.6, 1.0, 0.0]]))
    assert torch.allclose(returns_to_go(rewards, mask, gamma=1.0), torch.tensor([[1.0, 1.0, 1.0], [1.1, 1.0, 0.0]]))


def test_spreading_over_tokens():
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    assert torch.equal(spread_over_tokens(torch.tensor([2.0, -1.0]), mask), torch.tensor([[2.0, 2.0, 2.0], [-1.0, 0.0, 0.0]]))


def test_informative_groups_are_those_with_different_scores():
    assert informative_groups(t(1, 1, 0, 1, 0, 0, 0.5, 0.5), 2).tolist() == [False, True, False, False]
