import math

import pytest
import torch

from rlhand.core.kl import AdaptiveKLController, FixedKLController, kl_estimate, kl_shaped_rewards, last_valid_index


def logr_pair(ref_over_pi: float):
    """(logprobs, ref_logprobs) with pi_ref / pi = ref_over_pi."""
    return torch.tensor([0.0], dtype=torch.float64), torch.tensor([math.log(ref_over_pi)], dtype=torch.float64)


@pytest.mark.parametrize(
    "ratio, k1, k2, k3",
    [(0.5, 0.693147, 0.240227, 0.193147), (2.0, -0.693147, 0.240227, 0.306853)],
)
def test_estimators_hand_values(ratio, k1, k2, k3):
    lp, ref = logr_pair(ratio)
    assert kl_estimate(lp, ref, "k1").item() == pytest.approx(k1, abs=1e-6)
    assert kl_estimate(lp, ref, "k2").item() == pytest.approx(k2, abs=1e-6)
    assert kl_estimate(lp, ref, "k3").item() == pytest.approx(k3, abs=1e-6)


def test_small_log_ratio_values():
    lp, ref = torch.tensor([0.1], dtype=torch.float64), torch.tensor([0.0], dtype=torch.float64)
    assert kl_estimate(lp, ref, "k1").item() == pytest.approx(0.1)
    assert kl_estimate(lp, ref, "k2").item() == pytest.approx(0.005)
    assert kl_estimate(lp, ref, "k3").item() == pytest.approx(math.exp(-0.1) - 1 + 0.1)


def test_k2_k3_nonnegative_and_finite_on_extremes():
    logr = torch.linspace(-100, 100, 401, dtype=torch.float64)
    zeros = torch.zeros_like(logr)
    for est in ("k2", "k3"):
        out = kl_estimate(logr, zeros, est)
        assert (out >= 0).all() and torch.isfinite(out).all()
    k1 = kl_estimate(logr, zeros, "k1")
    assert (k1 < 0).any() and (k1 > 0).any()


def test_unbiasedness_by_enumeration():
    pi = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    ref = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    expect = {est: (pi * kl_estimate(pi.log(), ref.log(), est)).sum().item() for est in ("k1", "k2", "k3")}
    assert expect["k1"] == pytest.approx(0.2238047, abs=1e-6)
    assert expect["k3"] == pytest.approx(0.2238047, abs=1e-6)
    assert expect["k2"] == pytest.approx(0.2654788, abs=1e-6)


def test_reward_assembly_puts_score_on_eos_token():
    # response [t0, t1, EOS, PAD, PAD], beta = 0.1, k1 = [0.2, -0.1, 0.3]
    kl = torch.tensor([[0.2, -0.1, 0.3, 9.0, 9.0]], dtype=torch.float64)
    mask = torch.tensor([[1, 1, 1, 0, 0]])
    rewards = kl_shaped_rewards(torch.tensor([2.0], dtype=torch.float64), kl, mask, kl_coef=0.1)
    assert torch.allclose(rewards, torch.tensor([[-0.02, 0.01, -0.03 + 2.0, 0.0, 0.0]], dtype=torch.float64))


def test_last_valid_index():
    mask = torch.tensor([[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]])
    assert last_valid_index(mask).tolist() == [2, 3, 0]
    with pytest.raises(ValueError):
        last_valid_index(torch.tensor([[0, 0]]))


@pytest.mark.parametrize("kl, expected", [(12, 0.151536), (3, 0.148464), (6, 0.15), (6.6, 0.150768), (1000, 0.151536)])
def test_adaptive_kl_controller(kl, expected):
    ctl = AdaptiveKLController(0.15, target=6.0, horizon=10000)
    ctl.update(kl, 512)
    assert ctl.value == pytest.approx(expected, abs=1e-6)


def test_fixed_controller_never_moves_and_round_trips():
    ctl = FixedKLController(0.05)
    ctl.update(100.0, 512)
    assert ctl.value == 0.05
    other = AdaptiveKLController(0.1, 6.0, 10000)
    other.load_state_dict({"value": 0.3})
    assert other.value == 0.3
