import math

import pytest
import torch

from rlhand.core.losses import agg_loss, clipped_policy_loss, clipped_value_loss, entropy_from_logits


def pg(ratio, adv, low=0.2, high=0.2):
    lp = torch.tensor([[math.log(r) for r in ratio]], dtype=torch.float64, requires_grad=True)
    old = torch.zeros_like(lp)
    a = torch.tensor([adv], dtype=torch.float64)
    loss, stats = clipped_policy_loss(lp, old, a, torch.ones_like(a), clip_low=low, clip_high=high)
    return lp, loss, stats


@pytest.mark.parametrize(
    "adv, ratio, expected, clipped",
    [(1, 1.5, -1.2, True), (1, 0.5, -0.5, False), (-1, 0.5, 0.8, True), (-1, 1.5, 1.5, False)],
)
def test_clip_table(adv, ratio, expected, clipped):
    lp, loss, _ = pg([ratio], [adv])
    assert loss.item() == pytest.approx(expected)
    (grad,) = torch.autograd.grad(loss.sum(), lp)
    assert (grad.abs().item() == 0) == clipped


def test_clipfrac_is_active_clip_share():
    _, _, stats = pg([1.5, 0.5, 0.5, 1.5], [1, 1, -1, -1])
    assert stats["clipfrac"].item() == pytest.approx(0.5)


def test_ratio_one_is_vanilla_policy_gradient():
    torch.manual_seed(0)
    logits = torch.randn(5, 4, dtype=torch.float64, requires_grad=True)
    actions = torch.randint(0, 4, (5,))
    adv = torch.randn(1, 5, dtype=torch.float64)
    lp = torch.log_softmax(logits, -1)[torch.arange(5), actions].unsqueeze(0)
    loss, stats = clipped_policy_loss(lp, lp.detach(), adv, torch.ones_like(adv), clip_low=0.2, clip_high=0.2)
    (g_ppo,) = torch.autograd.grad(loss.mean(), logits, retain_graph=True)
    (g_pg,) = torch.autograd.grad((-adv * lp).mean(), logits)
    assert torch.equal(g_ppo, g_pg)
    assert stats["clipfrac"].item() == 0 and stats["approx_kl"].item() == 0


@pytest.mark.parametrize(
    "adv, ratio, expected, clipped",
    [(1, 1.25, -1.25, False), (1, 1.3, -1.28, True), (-1, 0.75, 0.8, True), (-1, 0.85, 0.85, False)],
)
def test_clip_higher(adv, ratio, expected, clipped):
    lp, loss, _ = pg([ratio], [adv], low=0.2, high=0.28)
    assert loss.item() == pytest.approx(expected)
    (grad,) = torch.autograd.grad(loss.sum(), lp)
    assert (grad.abs().item() == 0) == clipped


def test_symmetric_clip_higher_equals_plain_bitwise():
    torch.manual_seed(0)
    lp, old, adv = torch.randn(3, 7), torch.randn(3, 7), torch.randn(3, 7)
    mask = torch.ones(3, 7)
    a, _ = clipped_policy_loss(lp, old, adv, mask, clip_low=0.2, clip_high=0.2)
    b, _ = clipped_policy_loss(lp, old, adv, mask, clip_low=0.2, clip_high=0.2 + 0.0)
    assert torch.equal(a, b)


def test_extreme_log_ratio_is_finite():
    lp = torch.tensor([[100.0, -100.0]], requires_grad=True)
    loss, _ = clipped_policy_loss(lp, torch.zeros_like(lp), torch.tensor([[-1.0, 1.0]]), torch.ones(1, 2), clip_low=0.2, clip_high=0.2)
    (grad,) = torch.autograd.grad(loss.sum(), lp)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()


@pytest.mark.parametrize("new, old, ret, expected, clipfrac", [(1.0, 0.5, 1.0, 0.045, 1.0), (0.6, 0.5, 1.0, 0.08, 0.0), (0.0, 0.5, 1.0, 0.5, 0.0)])
def test_value_clipping(new, old, ret, expected, clipfrac):
    loss, stats = clipped_value_loss(torch.tensor([[new]]), torch.tensor([[old]]), torch.tensor([[ret]]), torch.ones(1, 1), clip_range=0.2)
    assert loss.item() == pytest.approx(expected)
    assert stats["clipfrac"].item() == clipfrac


def test_value_loss_without_clipping():
    loss, _ = clipped_value_loss(torch.tensor([[1.0]]), torch.tensor([[0.5]]), torch.tensor([[0.0]]), torch.ones(1, 1), clip_range=None)
    assert loss.item() == pytest.approx(0.5)


def test_entropy_values_and_temperature():
    assert entropy_from_logits(torch.zeros(4)).item() == pytest.approx(math.log(4), abs=1e-6)
    logits = torch.tensor([2.0, 1.0, 0.0], dtype=torch.float64)
    assert entropy_from_logits(logits).item() == pytest.approx(0.832396, abs=1e-6)
    assert entropy_from_logits(logits / 0.7).item() == pytest.approx(0.650573, abs=1e-6)


def test_aggregation_modes():
    # sequence 1: one token with loss 4; sequence 2: three tokens with loss 1
    losses = torch.tensor([[4.0, 0.0, 0.0], [1.0, 1.0, 1.0]])
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]])
    assert agg_loss(losses, mask, "token_mean").item() == pytest.approx(1.75)
    assert agg_loss(losses, mask, "seq_mean_token_mean").item() == pytest.approx(2.5)
    assert agg_loss(losses, mask, "seq_mean_token_sum").item() == pytest.approx(3.5)


def test_token_weights_of_each_mode():
    mask = torch.tensor([[1, 0, 0], [1, 1, 1]])
    losses = torch.zeros(2, 3, requires_grad=True)
    (g,) = torch.autograd.grad(agg_loss(losses, mask, "token_mean"), losses)
    assert torch.allclose(g[mask.bool()], torch.full((4,), 0.25))
    (g,) = torch.autograd.grad(agg_loss(losses, mask, "seq_mean_token_mean"), losses)
    assert torch.allclose(g[mask.bool()], torch.tensor([0.5, 1 / 6, 1 / 6, 1 / 6]))


def test_global_token_mean_across_micro_batches():
    # Two micro-batches normalised by the whole minibatch's token count add up to the full loss.
    first = agg_loss(torch.tensor([[4.0]]), torch.tensor([[1]]), "token_mean", num_tokens=4)
    second = agg_loss(torch.tensor([[1.0, 1.0, 1.0]]), torch.tensor([[1, 1, 1]]), "token_mean", num_tokens=4)
    assert (first + second).item() == pytest.approx(1.75)
    per_micro_mean = (agg_loss(torch.tensor([[4.0]]), torch.tensor([[1]]), "token_mean") + 1.0) / 2
    assert per_micro_mean.item() == pytest.approx(2.5)  # the classic bug this guards against


def test_pad_positions_change_nothing():
    torch.manual_seed(0)
    lp = torch.randn(2, 4, requires_grad=True)
    old, adv = torch.randn(2, 4), torch.randn(2, 4)
    mask = torch.tensor([[1, 1, 0, 0], [1, 1, 1, 0]])
    loss, _ = clipped_policy_loss(lp, old, adv, mask, clip_low=0.2, clip_high=0.2)
    total = agg_loss(loss, mask, "token_mean")
    (g1,) = torch.autograd.grad(total, lp)
    adv2 = adv.clone()
    adv2[mask == 0] = 1e6
    old2 = old.clone()
    old2[mask == 0] = -50
    loss2, _ = clipped_policy_loss(lp, old2, adv2, mask, clip_low=0.2, clip_high=0.2)
    total2 = agg_loss(loss2, mask, "token_mean")
    (g2,) = torch.autograd.grad(total2, lp)
    assert total.item() == total2.item() and torch.equal(g1, g2)
    assert (g1[mask == 0] == 0).all()


@pytest.mark.parametrize("log_ratio, expected", [(-2.0, 1.135335), (2.0, 4.389056), (0.0, 0.0)])
def test_approx_kl_is_k3_of_old_to_new(log_ratio, expected):
    # lr = log pi_new - log pi_old on a token sampled from pi_old: k3 of KL(pi_old || pi_new) is
    # (r - 1) - lr. The mirrored form exp(-lr) - 1 + lr gives 4.389 at lr = -2.
    _, _, stats = pg([math.exp(log_ratio)], [1.0])
    assert stats["approx_kl"].item() == pytest.approx(expected, abs=1e-6)


def test_approx_kl_is_unbiased_for_kl_old_to_new_by_enumeration():
    old = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    new = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    expected = 0.0
    for action in range(3):  # E over actions sampled from pi_old
        lp, old_lp = new[action].log().view(1, 1), old[action].log().view(1, 1)
        _, stats = clipped_policy_loss(lp, old_lp, torch.ones(1, 1, dtype=torch.float64), torch.ones(1, 1), clip_low=0.2, clip_high=0.2)
        expected += old[action].item() * stats["approx_kl"].item()
    true_kl = (old * (old.log() - new.log())).sum().item()
    assert true_kl == pytest.approx(0.2238047, abs=1e-6)
    assert expected == pytest.approx(true_kl, abs=1e-9)


def test_value_clipfrac_does_not_count_float_rounding():
    # Critic outputs near 0, new and old drawn apart: V_old + (V - V_old) differs from V in the last
    # bit on ~20% of tokens. Inside the clip range nothing is clipped and the loss is 0.5 (V - R)^2.
    generator = torch.Generator().manual_seed(0)
    values = torch.randn(100, 100, generator=generator) * 0.1 + 0.05
    old = torch.randn(100, 100, generator=generator) * 0.1
    returns = torch.randn(100, 100, generator=generator)
    inside = (values - old).abs() <= 0.2
    loss, stats = clipped_value_loss(values, old, returns, inside.long(), clip_range=0.2)
    assert stats["clipfrac"].item() == 0.0
    assert torch.equal(loss[inside], 0.5 * (values - returns)[inside] ** 2)
