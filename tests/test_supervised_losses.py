"""The supervised stages' losses against hand values (rlhand/core/supervised.py)."""

import math

import pytest
import torch

from rlhand.core.supervised import bradley_terry_loss, preference_figures, preference_sums, sft_loss


def softplus(x):
    return math.log1p(math.exp(x))  # -log sigmoid(-x)


def test_bradley_terry_loss_is_the_mean_negative_log_sigmoid_of_the_score_gap():
    chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    # gaps +1 and -1: softplus(-1) = 0.3132617, softplus(1) = 1.3132617
    assert bradley_terry_loss(chosen, rejected, 2).item() == pytest.approx(0.8132617, abs=1e-6)
    assert bradley_terry_loss(chosen, rejected, 2).item() == pytest.approx((softplus(-1) + softplus(1)) / 2, abs=1e-7)


def test_a_margin_is_subtracted_from_the_gap_and_the_centring_term_pulls_scores_to_zero():
    chosen, rejected = torch.tensor([2.0, 0.0]), torch.tensor([1.0, 1.0])
    with_margin = bradley_terry_loss(chosen, rejected, 2, margin=torch.tensor([0.5, 0.0]))
    assert with_margin.item() == pytest.approx((softplus(-0.5) + softplus(1)) / 2, abs=1e-6)  # 0.8936693
    centred = bradley_terry_loss(chosen, rejected, 2, center_coef=0.01)
    assert centred.item() == pytest.approx(0.8132617 + 0.01 * (3**2 + 1**2) / 2, abs=1e-6)


def test_bradley_terry_gradient_against_hand_values():
    chosen = torch.tensor([2.0, 0.0], requires_grad=True)
    rejected = torch.tensor([1.0, 1.0], requires_grad=True)
    bradley_terry_loss(chosen, rejected, 2, center_coef=0.01).backward()
    # d/dr_chosen = -sigmoid(-gap) / N + coef * 2 (r_c + r_r) / N; d/dr_rejected = +sigmoid(-gap) / N + the same centring part
    sig = [1 / (1 + math.exp(1)), 1 / (1 + math.exp(-1))]  # sigmoid(-1) = 0.2689414, sigmoid(1) = 0.7310586
    centre = [0.01 * 2 * 3 / 2, 0.01 * 2 * 1 / 2]
    assert chosen.grad.tolist() == pytest.approx([-sig[0] / 2 + centre[0], -sig[1] / 2 + centre[1]], abs=1e-6)
    assert rejected.grad.tolist() == pytest.approx([sig[0] / 2 + centre[0], sig[1] / 2 + centre[1]], abs=1e-6)
    assert chosen.grad[0].item() == pytest.approx(-0.1044707, abs=1e-6)


def test_the_total_pair_count_normalises_so_that_shares_of_a_batch_add_up_to_the_batch():
    chosen, rejected = torch.tensor([2.0, 0.0, -1.0, 0.5]), torch.tensor([1.0, 1.0, 0.0, 0.5])
    whole = bradley_terry_loss(chosen, rejected, 4)
    halves = bradley_terry_loss(chosen[:2], rejected[:2], 4) + bradley_terry_loss(chosen[2:], rejected[2:], 4)
    assert halves.item() == pytest.approx(whole.item(), abs=1e-7)


def test_preference_figures_count_ties_as_half_right():
    stats = preference_figures(preference_sums(torch.tensor([2.0, 0.0, 1.0]), torch.tensor([1.0, 1.0, 1.0])))
    assert stats["accuracy"].item() == pytest.approx(0.5)  # right, wrong, tie
    assert stats["margin"].item() == pytest.approx(0.0)
    scores = torch.tensor([2.0, 0.0, 1.0, 1.0, 1.0, 1.0], dtype=torch.float64)
    assert stats["score_mean"].item() == pytest.approx(scores.mean().item())
    assert stats["score_std"].item() == pytest.approx(scores.std(unbiased=False).item())


def test_sft_loss_is_the_negative_log_likelihood_per_masked_token():
    logprobs = torch.tensor([[-1.0, -2.0, -3.0], [-0.5, -0.25, 0.0]])
    mask = torch.tensor([[0, 1, 1], [1, 1, 0]], dtype=torch.bool)
    assert sft_loss(logprobs, mask, 4).item() == pytest.approx((2 + 3 + 0.5 + 0.25) / 4)


def test_preference_sums_add_up_over_parts_to_the_whole_and_their_loss_is_the_objective():
    chosen, rejected, margin = torch.tensor([2.0, 0.0, -1.0, 0.5]), torch.tensor([1.0, 1.0, 0.0, 0.5]), torch.tensor([0.5, 0.0, 1.0, 0.0])
    whole = preference_sums(chosen, rejected, margin, center_coef=0.01)
    parts = [preference_sums(chosen[s], rejected[s], margin[s], center_coef=0.01) for s in (slice(0, 1), slice(1, 4))]
    for key, value in whole.items():
        assert (parts[0][key] + parts[1][key]).item() == pytest.approx(value.item(), rel=1e-12)
    loss = bradley_terry_loss(chosen, rejected, 4, margin, 0.01)
    assert preference_figures(whole)["loss"].item() == pytest.approx(loss.item(), rel=1e-6)
