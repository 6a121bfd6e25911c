"""Gradient accumulation: k micro-batches give the one-batch gradient (whole-minibatch normalisation)."""

import pytest
import torch

from rlhand.config.schema import AlgoConfig
from rlhand.stages.ppo.advantages import assign_advantages
from tests.helpers import make_update
from tests.test_rollout import make_rollout


def grads_after_step(models, rollout, algo):
    # lr=0 SGD: the step changes nothing, and the accumulated .grad stays readable afterwards.
    stats = make_update(models, algo).minibatch_step(rollout, kl_coef=0.05, temperature=0.7)
    grads = [p.grad.clone() for m in (models.policy, models.critic.module) for p in m.parameters() if p.grad is not None]
    return grads, stats


@pytest.mark.parametrize("loss_agg", ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum"])
@pytest.mark.parametrize("kl_placement", ["reward", "loss"])
def test_accumulated_gradient_equals_one_batch(loss_agg, kl_placement):
    models, _, rollout = make_rollout()
    kw = dict(name="t", rollout_batch_size=8, num_minibatches=1, loss_agg=loss_agg, kl_placement=kl_placement, kl_estimator="k3", ent_coef=0.01, max_grad_norm=None)
    rollout, _ = assign_advantages(rollout, AlgoConfig(**kw), kl_coef=0.05)
    lengths = rollout.response_mask.sum(dim=1)
    assert lengths.unique().numel() > 1  # unequal lengths: the case where per-micro-batch means go wrong
    one, one_stats = grads_after_step(models, rollout, AlgoConfig(**kw, grad_accum_steps=1))
    four, four_stats = grads_after_step(models, rollout, AlgoConfig(**kw, grad_accum_steps=4))
    assert max((a - b).abs().max().item() for a, b in zip(one, four)) < 1e-6
    for key in ("loss/total", "loss/policy", "policy/clipfrac", "policy/entropy"):
        assert four_stats[key].item() == pytest.approx(one_stats[key].item(), abs=1e-6)


def test_grad_accum_must_divide_the_minibatch():
    from tests.conftest import FAST, compose_cfg

    with pytest.raises(ValueError, match="algo.grad_accum_steps: minibatches of 4 responses do not split into 3 micro-batches"):
        compose_cfg(FAST + ["algo.rollout_batch_size=8", "algo.num_minibatches=2", "algo.grad_accum_steps=3"])


def test_grad_norm_is_measured_without_clipping_and_clipped_when_asked():
    from rlhand.run.learners import grad_norm

    layer = torch.nn.Linear(3, 2)
    layer(torch.ones(4, 3)).pow(2).sum().backward()
    before = [p.grad.clone() for p in layer.parameters()]
    expected = torch.cat([g.flatten() for g in before]).norm()
    assert torch.allclose(grad_norm(layer, None), expected)
    assert all(torch.equal(p.grad, g) for p, g in zip(layer.parameters(), before))
    assert torch.allclose(grad_norm(layer, 0.5), expected)
    assert torch.allclose(torch.cat([p.grad.flatten() for p in layer.parameters()]).norm(), torch.tensor(0.5), atol=1e-5)
