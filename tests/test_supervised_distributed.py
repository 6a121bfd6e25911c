"""stage=sft and stage=reward_model on 2 ranks: each rank's share of a batch, normalised by every
rank's tokens (pairs: the whole batch's count, which each rank takes from the batch itself), gives
gradients that sum to the one-process gradient of the whole batch (DDP); FSDP2's reduce-scattered
gradients are the same as DDP's; the stage's own step on 2 ranks, in micro-batches, gives the weights
one process gives."""

import copy

import pytest
import torch

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
    share = batch[ctx.shard(len(batch))]
    for name, total in (("global", stage.count(batch)), ("per_rank", stage.count(share))):  # per_rank: what the test must catch
        stage.model = copy.deepcopy(initial)
        loss, _ = stage.losses(share, total)
        loss.backward()
        found = grads(stage.model)
        sum_over_ranks(list(found.values()), ctx)  # what the ddp learner does before its step
        out[name] = found
    if not ctx.is_main:
        return None
    stage.model, stage.dist = copy.deepcopy(initial), DistContext()  # one process, the whole batch
    loss, _ = stage.losses(batch, stage.count(batch))
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
        loss, _ = stage.losses(batch[ctx.shard(len(batch))], stage.count(batch))
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


MICRO = {"sft": "sft.micro_batch_tokens=60", "reward_model": "rm.micro_batch_tokens=120"}


def micro_step_worker(stage_name, run_dir):
    from rlhand.distributed import context
    from rlhand.distributed.sharding import full_state_dict
    from rlhand.stages import build_run
    from tests.conftest import compose_cfg

    ctx = context.current()
    stage = build_run(compose_cfg(OVERRIDES[stage_name] + ["trainer.strategy=fsdp", MICRO[stage_name], "logging=plain"]), run_dir).stage
    share = [stage.inputs.train[i] for i in stage.sampler.next_indices(stage.settings.batch_size)][ctx.shard(stage.settings.batch_size)]
    stage.sampler.load_state_dict({"epoch": 0, "position": 0})  # the step draws the same batch again
    parts = len(stage.micro_batches(share))
    stats = stage.step(1)
    state = full_state_dict(stage.model, ctx)
    if not ctx.is_main:
        return None
    return {"parts": parts, "loss": stats["train/loss"], "weights": {k: v.detach().numpy().copy() for k, v in state.items()}}  # numpy: torch tensors would travel as shared memory that dies with the rank


@pytest.mark.parametrize("stage_name", sorted(OVERRIDES))
def test_a_step_in_micro_batches_over_fsdp2_ranks_is_the_one_process_step(stage_name, tmp_path):
    from rlhand.stages import build_run
    from tests.conftest import compose_cfg

    result = run_ranks(micro_step_worker, stage_name, tmp_path / "ranks")[0]
    assert result["parts"] > 1  # each rank's share went through in several forwards
    stage = build_run(compose_cfg(OVERRIDES[stage_name] + ["logging=plain"]), tmp_path / "one").stage
    stats = stage.step(1)
    assert stats["train/loss"] == pytest.approx(result["loss"], rel=1e-5)
    ours = {k.replace("_fsdp_wrapped_module.", ""): torch.from_numpy(v) for k, v in result["weights"].items()}
    moved = 0.0
    for name, value in stage.model.state_dict().items():
        assert torch.allclose(ours[name], value, rtol=1e-4, atol=1e-6), name
    initial = build_run(compose_cfg(OVERRIDES[stage_name] + ["logging=plain"]), tmp_path / "initial").stage.model.state_dict()
    moved = max((stage.model.state_dict()[k] - initial[k]).abs().max().item() for k in initial)
    assert moved > 1e-4  # the step changed the weights: the comparison has teeth
