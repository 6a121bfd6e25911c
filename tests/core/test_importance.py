"""IS weights against the hand-computed values of the algorithm checklist (D49, D50, D56-D59)."""

import math

import pytest
import torch

from rlhand.core.importance import annealed_beta, effective_sample_size, per_is_weights, truncated_is_weights
from rlhand.core.losses import clipped_policy_loss

P = torch.tensor([0.148230, 0.224674, 0.286555, 0.340542], dtype=torch.float64)  # [1,2,3,4]^0.6, normalised


def test_per_weights_d49():
    w = per_is_weights(P, 4, beta=0.4, min_prob=float(P.min()))
    assert w.tolist() == pytest.approx([1.0, 0.846745, 0.768229, 0.716978], abs=1e-5)
    assert per_is_weights(P, 4, beta=0.0, min_prob=float(P.min())).tolist() == [1.0] * 4
    uniform = torch.full((4,), 0.25, dtype=torch.float64)
    assert per_is_weights(uniform, 4, beta=0.7, min_prob=0.25).tolist() == pytest.approx([1.0] * 4)


def test_beta_schedule_d50():
    # beta0 0.4 reaching 1 after T = 100 draws is an increment of 0.006 per draw.
    assert [annealed_beta(0.4, 0.006, t) for t in (0, 50, 100, 200)] == pytest.approx([0.4, 0.7, 1.0, 1.0])


def test_truncation_d58():
    rho = torch.tensor([2.0, 0.5, 1.0])
    w = truncated_is_weights(rho.log(), torch.zeros(3), rho_bar=1.0)
    assert w.tolist() == pytest.approx([1.0, 0.5, 1.0])
    huge = truncated_is_weights(torch.tensor([100.0, -100.0]), torch.zeros(2), rho_bar=2.0)
    assert torch.isfinite(huge).all() and huge[0] == pytest.approx(2.0)
    assert truncated_is_weights(torch.tensor([3.0]), torch.zeros(1), rho_bar=None).item() == pytest.approx(math.e**3)


def test_fresh_samples_get_weight_one_exactly():
    lp = torch.randn(3, 5)
    assert torch.equal(truncated_is_weights(lp, lp.clone(), rho_bar=2.0), torch.ones(3, 5))


def test_ess_d59():
    ones = torch.ones(1, 4)
    assert effective_sample_size(torch.tensor([[1.0, 1, 1, 1]]), ones).item() == pytest.approx(1.0)
    assert effective_sample_size(torch.tensor([[2.0, 0, 0, 0]]), ones).item() == pytest.approx(0.25)


def test_decoupled_stale_sample_gradient_d56():
    """pi_behav(a)=0.15, pi = pi_prox = 0.3, A=+1, eps=0.2: naive PPO gives no gradient; decoupled
    PPO gives loss -2.0 and logit gradient [-1.4, +1.4]; with rho_bar=1 the loss is -1.0."""

    def loss_and_grad(old_logprob, weight):
        logits = torch.tensor([math.log(0.3), math.log(0.7)], requires_grad=True)
        logprob = torch.log_softmax(logits, dim=-1)[0].reshape(1, 1)
        per_token, _ = clipped_policy_loss(
            logprob, old_logprob.reshape(1, 1), torch.ones(1, 1), torch.ones(1, 1), clip_low=0.2, clip_high=0.2
        )
        loss = (weight * per_token).sum()
        loss.backward()
        return loss.item(), logits.grad.tolist()

    behaviour, prox = torch.tensor(math.log(0.15)), torch.tensor(math.log(0.3))
    naive_loss, naive_grad = loss_and_grad(behaviour, 1.0)
    assert naive_loss == pytest.approx(-1.2) and naive_grad == pytest.approx([0.0, 0.0])
    w = truncated_is_weights(prox, behaviour, rho_bar=None)
    loss, grad = loss_and_grad(prox, w)
    assert w.item() == pytest.approx(2.0) and loss == pytest.approx(-2.0) and grad == pytest.approx([-1.4, 1.4])
    loss_truncated, _ = loss_and_grad(prox, truncated_is_weights(prox, behaviour, rho_bar=1.0))
    assert loss_truncated == pytest.approx(-1.0)


def test_untruncated_is_weights_reweight_behaviour_samples_to_the_proximal_policy():
    # Direction check by enumeration: E_behav[w(a) f(a)] = E_prox[f(a)] with w = pi_prox / pi_behav.
    behaviour = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    prox = torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)
    f = torch.tensor([1.0, -2.0, 5.0], dtype=torch.float64)
    w = truncated_is_weights(prox.log(), behaviour.log(), rho_bar=None)
    assert (behaviour * w * f).sum().item() == pytest.approx((prox * f).sum().item(), abs=1e-12)
