import torch

from rlhand.core.advantages import compute_gae


def t(*rows):
    return torch.tensor(rows, dtype=torch.float64)


def gae(rewards, values, mask=None, *, gamma, lam):
    mask = torch.ones_like(rewards) if mask is None else mask
    return compute_gae(rewards, values, mask, gamma=gamma, lam=lam)


def test_gamma1_lambda1_is_monte_carlo():
    adv, ret = gae(t([0, 0, 1]), t([0.5, 0.5, 0.5]), gamma=1.0, lam=1.0)
    assert torch.allclose(adv, t([0.5, 0.5, 0.5]))
    assert torch.allclose(ret, t([1.0, 1.0, 1.0]))


def test_lambda_095():
    # delta = [0, 0, 0.5]; A2 = .5, A1 = .95 * .5 = .475, A0 = .95 * .475 = .45125
    adv, ret = gae(t([0, 0, 1]), t([0.5, 0.5, 0.5]), gamma=1.0, lam=0.95)
    assert torch.allclose(adv, t([0.45125, 0.475, 0.5]))
    assert torch.allclose(ret, t([0.95125, 0.975, 1.0]))


def test_lambda0_is_one_step_td():
    # delta_t = r_t + 0.9 V_{t+1} - V_t = [1 + 1.8 - 1, 0 + 2.7 - 2, 2 + 0 - 3]
    adv, ret = gae(t([1, 0, 2]), t([1, 2, 3]), gamma=0.9, lam=0.0)
    assert torch.allclose(adv, t([1.8, 0.7, -1.0]))
    assert torch.allclose(ret, t([2.8, 2.7, 2.0]))


def test_mixed_rewards():
    adv, ret = gae(t([0.5, -0.2, 1.0]), t([0.1, 0.2, 0.3]), gamma=1.0, lam=0.95)
    assert torch.allclose(adv, t([1.13675, 0.565, 0.7]))
    assert torch.allclose(ret, t([1.23675, 0.765, 1.0]))


def test_right_padding_is_invisible():
    base_adv, base_ret = gae(t([0.5, -0.2, 1.0]), t([0.1, 0.2, 0.3]), gamma=1.0, lam=0.95)
    mask = t([1, 1, 1, 0, 0, 0])
    for garbage in (7.0, -100.0):
        rewards = t([0.5, -0.2, 1.0, garbage, garbage, garbage])
        values = t([0.1, 0.2, 0.3, garbage, -garbage, garbage])
        adv, ret = gae(rewards, values, mask, gamma=1.0, lam=0.95)
        assert torch.equal(adv[:, :3], base_adv) and torch.equal(ret[:, :3], base_ret)
        assert (adv[:, 3:] == 0).all() and (ret[:, 3:] == 0).all()


def test_terminal_step_has_no_bootstrap():
    torch.manual_seed(0)
    rewards, values = torch.randn(4, 5, dtype=torch.float64), torch.randn(4, 5, dtype=torch.float64)
    mask = torch.ones(4, 5, dtype=torch.float64)
    mask[1, 3:] = 0
    for gamma, lam in ((1.0, 0.95), (0.5, 0.3)):
        adv, _ = gae(rewards, values, mask, gamma=gamma, lam=lam)
        assert torch.allclose(adv[0, 4], rewards[0, 4] - values[0, 4])
        assert torch.allclose(adv[1, 2], rewards[1, 2] - values[1, 2])


def test_vectorised_matches_reference_loop():
    torch.manual_seed(1)
    rewards, values = torch.randn(3, 6, dtype=torch.float64), torch.randn(3, 6, dtype=torch.float64)
    adv, ret = gae(rewards, values, gamma=0.97, lam=0.9)
    for b in range(3):
        running, expected = 0.0, [0.0] * 6
        for i in reversed(range(6)):
            next_v = values[b, i + 1].item() if i + 1 < 6 else 0.0
            running = rewards[b, i].item() + 0.97 * next_v - values[b, i].item() + 0.97 * 0.9 * running
            expected[i] = running
        assert torch.allclose(adv[b], torch.tensor(expected, dtype=torch.float64))
    assert torch.allclose(ret, adv + values)
