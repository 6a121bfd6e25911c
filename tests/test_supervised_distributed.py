"""stage=sft and stage=reward_model on 2 ranks: each rank's share of a batch, normalised by every
rank's tokens (pairs), gives gradients that sum to the one-process gradient of the whole batch
(DDP); FSDP2's reduce-scattered gradients are the same as DDP's."""

import copy

import pytest

from tests.distributed import run_ranks

OVERRIDES = {
    "sft": ["stage=sft", "sft.num_examples=64", "sft.batch_size=8", "sft.demo_quality=0.5"],
    "reward_model": ["stage=reward_model", "rm.num_pairs=64", "rm.batch_size=8"],
}


def grads(model):
    return {name: p.grad.detach().clone() for name, p in model.named_parameters() if p.grad is not None}


def worker(stage_name, run_dir):
    from rlhand.distributed import context
    from rlhand.distributed.context import DistContext
    from rlhand.run.learners import sum_over_ranks
    from rlhand.stages import build_run
    from tests.conftest import compose_cfg

    ctx = context.current()
    stage = build_run(compose_cfg(OVERRIDES[stage_name] + ["trainer.strategy=ddp", "logging=plain"]), run_dir).stage
    batch = [stage.inputs.train[i] for i in stage.sampler.next_indices(stage.settings.batch_size)]
    initial = copy.deepcopy(stage.model)
    out = {}
    for name, reducer in (("global", ctx), ("per_rank", DistContext())):  # per_rank: what the test must catch
        stage.model, stage.dist = copy.deepcopy(initial), reducer
        loss, _ = stage.losses(batch[ctx.shard(len(batch))])
        loss.backward()
        found = grads(stage.model)
        sum_over_ranks(list(found.values()), ctx)  # what the ddp learner does before its step
        out[name] = found
    if not ctx.is_main:
        return None
    stage.model, stage.dist = copy.deepcopy(initial), DistContext()  # one process, the whole batch
    loss, _ = stage.losses(batch)
    loss.backward()
    reference = grads(stage.model)
    gap = {name: max((found[k] - reference[k]).abs().max().item() for k in reference) for name, found in out.items()}
    return {"gap": gap, "scale": max(g.abs().max().item() for g in reference.values())}


@pytest.mark.parametrize("stage_name", sorted(OVERRIDES))
def test_two_ranks_give_the_one_process_gradient(stage_name, tmp_path):
    result = run_ranks(worker, stage_name, tmp_path)[0]
    assert result["gap"]["global"] < 1e-6, result
    # Normalising by this rank's count alone gives another gradient: the check above has teeth.
    assert result["gap"]["per_rank"] > 1e-4, result
    assert result["scale"] > 1e-3


def fsdp_worker(stage_name, run_dir):
    from rlhand.distributed import context
    from rlhand.run.learners import sum_over_ranks
    from rlhand.stages import build_run
    from tests.conftest import compose_cfg

    ctx = context.current()
    found = {}
    for strategy in ("ddp", "fsdp"):  # the same seed: the same initial weights and batch
        stage = build_run(compose_cfg(OVERRIDES[stage_name] + [f"trainer.strategy={strategy}", "logging=plain"]), run_dir / strategy).stage
        batch = [stage.inputs.train[i] for i in stage.sampler.next_indices(stage.settings.batch_size)]
        loss, _ = stage.losses(batch[ctx.shard(len(batch))])
        loss.backward()
        grads = {name: p.grad for name, p in stage.model.named_parameters() if p.grad is not None}
        if strategy == "ddp":
            sum_over_ranks(list(grads.values()), ctx)
        found[strategy] = {name.replace("_fsdp_wrapped_module.", ""): (g.full_tensor() if hasattr(g, "full_tensor") else g).detach().clone() for name, g in grads.items()}
    if not ctx.is_main:
        return None
    ddp, fsdp = found["ddp"], found["fsdp"]
    return {"same_keys": ddp.keys() == fsdp.keys(), "gap": max((ddp[k] - fsdp[k]).abs().max().item() for k in ddp), "scale": max(g.abs().max().item() for g in ddp.values())}


@pytest.mark.parametrize("stage_name", sorted(OVERRIDES))
def test_fsdp2_gives_ddp_s_gradient(stage_name, tmp_path):
    result = run_ranks(fsdp_worker, stage_name, tmp_path)[0]
    assert result["same_keys"] and result["gap"] < 1e-6 and result["scale"] > 1e-3, result
