"""trainer.concurrent_models: the policy's and the critic's update side by side on two worker threads."""

import copy
import threading

import pytest
import torch

from rlhand.config.schema import AlgoConfig
from rlhand.distributed.layout import resolve_layout
from rlhand.models.concurrent import ModelThreads, shared_model_threads
from rlhand.stages import build_run
from rlhand.stages.ppo import setup
from rlhand.stages.ppo.advantages import assign_advantages
from tests.conftest import FAST, compose_cfg
from tests.helpers import make_update
from tests.test_rollout import make_rollout


def test_workers_keep_their_own_thread_count_and_leave_the_callers():
    before = torch.get_num_threads()
    threads = ModelThreads(threads_each=1)
    counts = threads.run(torch.get_num_threads, torch.get_num_threads)
    names = threads.run(lambda: threading.current_thread().name, lambda: threading.current_thread().name)
    assert counts == [1, 1]
    assert all(name.startswith("rlhand-model") for name in names)
    assert torch.get_num_threads() == before


def test_jobs_run_under_the_callers_grad_mode_and_autocast():
    threads = shared_model_threads(1)
    probe = lambda: (torch.is_grad_enabled(), torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"))  # noqa: E731
    with torch.no_grad():
        assert threads.run(probe)[0][0] is False
    with torch.autocast("cpu", dtype=torch.bfloat16):
        assert threads.run(probe)[0] == (True, True, torch.bfloat16)
    assert threads.run(probe)[0][:2] == (True, False)


def test_a_failing_job_raises_after_the_other_finished():
    threads = shared_model_threads(1)
    finished = threading.Event()

    def slow():
        finished.wait(timeout=0.2)
        finished.set()

    def fail():
        raise RuntimeError("boom")

    with pytest.raises(RuntimeError, match="boom"):
        threads.run(fail, slow)
    assert finished.is_set()  # run() waited for the slow job before raising


@pytest.fixture
def one_thread():
    """Both paths on one intra-op thread per model, whatever the process default: the claim is the
    same math, and a different thread count alone moves float rounding (AdamW then turns ~1e-9 of
    gradient rounding into ~1e-6 of weight)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.mark.parametrize("grad_accum_steps", [1, 2])
@pytest.mark.parametrize("kl_placement", ["reward", "loss"])
def test_side_by_side_step_equals_the_sequential_one(grad_accum_steps, kl_placement, one_thread):
    models, _, rollout = make_rollout()
    algo = AlgoConfig(
        name="t", rollout_batch_size=8, num_minibatches=1, grad_accum_steps=grad_accum_steps, kl_placement=kl_placement,
        kl_estimator="k3", ent_coef=0.01, max_grad_norm=0.5,
    )
    rollout, _ = assign_advantages(rollout, algo, kl_coef=0.05)
    results = []
    for threads in (None, shared_model_threads(1)):
        trial = copy.deepcopy(models)
        update = make_update(trial, algo, lambda params: torch.optim.AdamW(params, lr=1e-3), threads=threads)
        stats = update.minibatch_step(rollout, kl_coef=0.05, temperature=0.7)
        params = [p.detach().clone() for m in (trial.policy, trial.critic.module) for p in m.parameters()]
        results.append((stats, params, update.timer.pop()))
    (seq_stats, seq_params, seq_phases), (par_stats, par_params, par_phases) = results
    assert seq_stats.keys() == par_stats.keys()
    for key in seq_stats:
        assert par_stats[key].item() == pytest.approx(seq_stats[key].item(), rel=1e-5, abs=1e-6), key
    moved = max((a - b).abs().max().item() for a, b in zip(seq_params, (p for m in (models.policy, models.critic.module) for p in m.parameters())))
    assert moved > 1e-5  # the step changed the weights, so equal weights below mean equal steps
    assert max((a - b).abs().max().item() for a, b in zip(seq_params, par_params)) < 1e-6
    assert set(par_phases) == set(seq_phases) == {"update_forward", "update_backward", "optimizer_step"}


def test_trainer_uses_workers_only_where_they_apply():
    cfg = compose_cfg(FAST)
    one = resolve_layout(cfg.trainer, 1)
    cpu = torch.device("cpu")
    previous = torch.get_num_threads()
    try:
        torch.set_num_threads(2)
        assert isinstance(setup.model_threads(cfg, cpu, one), ModelThreads)
        assert setup.model_threads(cfg, torch.device("cuda"), one) is None
        cfg.trainer.concurrent_models = False
        assert setup.model_threads(cfg, cpu, one) is None
        cfg.trainer.concurrent_models = True
        torch.set_num_threads(1)
        assert setup.model_threads(cfg, cpu, one) is None
    finally:
        torch.set_num_threads(previous)


def test_training_side_by_side_matches_one_model_at_a_time(tmp_path):
    overrides = FAST + ["trainer.save_final=false", "trainer.threads=2"]
    on = build_run(compose_cfg(overrides), tmp_path / "on")
    assert on.stage.update.threads is not None
    on_history = on.fit()
    off = build_run(compose_cfg(overrides + ["trainer.concurrent_models=false"]), tmp_path / "off")  # seeds the RNG again
    assert off.stage.update.threads is None
    for a, b in zip(on_history, off.fit()):
        for key in ("reward/mean", "loss/policy", "loss/value", "policy/approx_kl", "grad/critic_norm"):
            assert a[key] == pytest.approx(b[key], rel=1e-4, abs=1e-6), key
