"""The trainer core on 2 ranks of a real gloo process group: the same gradients and statistics as one
process on the whole batch, whatever the split. Each case would fail if a normalisation or a
statistic were per rank: the ranks' shares are built to differ (in tokens, rewards, values)."""

import copy
import itertools

import pytest
import torch

from tests.distributed import run_ranks

# Every loss aggregation under both layouts, each once plain and once with everything on: gradient
# accumulation, the KL as a loss term and replay weights (decoupled-PPO IS x PER). (The full product,
# 48 cases, passed too; it takes a minute.)
GRADIENT_CASES = [
    (strategy, loss_agg, *extras)
    for strategy, loss_agg, extras in itertools.product(
        ["fsdp", "ddp"], ["token_mean", "seq_mean_token_mean", "seq_mean_token_sum"], [(1, "reward", False), (2, "loss", True)]
    )
]


def _whole_batch(loss_agg, accum, kl_placement, replay_weights):
    """The same 8-row batch on every rank, rows sorted by response length so that rank 0's half
    holds more tokens than rank 1's."""
    from rlhand.config.schema import AlgoConfig
    from rlhand.stages.ppo.advantages import assign_advantages
    from tests.test_rollout import make_rollout

    models, _, rollout = make_rollout()
    rollout = rollout.select(torch.argsort(rollout.response_mask.sum(dim=1), descending=True, stable=True))
    algo = AlgoConfig(
        name="t", rollout_batch_size=8, num_minibatches=1, grad_accum_steps=accum, loss_agg=loss_agg, kl_placement=kl_placement,
        kl_estimator="k3", ent_coef=0.01, max_grad_norm=None, clip_ratio_high=0.28,
    )
    rollout, _ = assign_advantages(rollout, algo, kl_coef=0.05)
    generator = torch.Generator().manual_seed(7)
    # Ratios away from 1 (clipping active) and, for replay, detached weights of different sizes.
    rollout = rollout.replace(proximal_logprobs=rollout.proximal_logprobs - 0.2 * torch.rand(rollout.proximal_logprobs.shape, generator=generator))
    if replay_weights:
        rollout = rollout.replace(
            policy_weights=(0.2 + torch.rand(rollout.response_mask.shape, generator=generator)) * rollout.response_mask,
            value_weights=0.2 + torch.rand(len(rollout), generator=generator),
        )
    return models, rollout, algo


def _weights_after_one_step(models, update, batch):
    """Stats of one minibatch step with SGD(lr=1) (so new weights = old - gradient), and the whole
    new weights on rank 0."""
    from rlhand.distributed import context
    from rlhand.distributed.sharding import full_state_dict

    stats = update.minibatch_step(batch, kl_coef=0.05, temperature=0.7)
    ctx = context.current()
    weights = {}
    for name, module in (("policy", models.policy), ("critic", models.critic.module)):
        state = full_state_dict(module, ctx)
        if state is not None:
            weights.update({f"{name}.{k}": v.detach().clone() for k, v in state.items()})
    return stats, weights


def gradient_equivalence_worker(cases):
    from rlhand.core.masked import LOCAL
    from rlhand.distributed import context
    from rlhand.distributed.sharding import shard_model
    from rlhand.reporting.timer import PhaseTimer
    from rlhand.run.learners import Learner, Learners
    from rlhand.stages.ppo.update import PPOUpdate
    from tests.helpers import make_update

    ctx = context.current()
    sgd = lambda params: torch.optim.SGD(params, lr=1.0)  # noqa: E731
    out = []
    for strategy, loss_agg, accum, kl_placement, replay_weights in cases:
        models, batch, algo = _whole_batch(loss_agg, accum, kl_placement, replay_weights)
        half = len(batch) // ctx.world_size
        local = batch.select(torch.arange(ctx.rank * half, (ctx.rank + 1) * half))
        tokens = [int(batch.select(torch.arange(r * half, (r + 1) * half)).response_mask.sum()) for r in range(ctx.world_size)]
        # One process, the whole batch: the reference.
        whole = copy.deepcopy(models)
        ref_stats, ref_weights = _weights_after_one_step(whole, make_update(whole, algo, sgd), batch)
        results = {}
        for name, reducer in (("global", ctx), ("per_rank", LOCAL)):  # per_rank: what the test must catch
            split = copy.deepcopy(models)
            if strategy == "fsdp":
                shard_model(split.policy, ctx, torch.device("cpu"))
                shard_model(split.critic.module, ctx, torch.device("cpu"))
            learners = Learners.of(
                policy=Learner(split.policy, sgd(split.policy.parameters()), None, ctx, sum_gradients=strategy == "ddp"),
                critic=Learner(split.critic.module, sgd(split.critic.module.parameters()), None, ctx, sum_gradients=strategy == "ddp"),
            )
            update = PPOUpdate(learners, split.critic, algo, timer=PhaseTimer(torch.device("cpu")), reducer=reducer)
            stats, weights = _weights_after_one_step(split, update, local)
            partial = {k: v.detach().float() for k, v in stats.items() if not k.startswith("grad/")}
            summed = {k: ctx.sum(v).item() for k, v in partial.items()}
            results[name] = (summed, weights, {k: stats[k].item() for k in ("grad/policy_norm", "grad/critic_norm")})
        if ctx.is_main:
            def gap(weights):
                return max((weights[k] - ref_weights[k]).abs().max().item() for k in ref_weights)

            out.append({
                "case": (strategy, loss_agg, accum, kl_placement, replay_weights),
                "tokens": tokens,
                "global_gap": gap(results["global"][1]),
                "per_rank_gap": gap(results["per_rank"][1]),
                "stats": results["global"][0],
                "ref_stats": {k: v.item() for k, v in ref_stats.items() if not k.startswith("grad/")},
                "norms": results["global"][2],
                "ref_norms": {k: ref_stats[k].item() for k in ("grad/policy_norm", "grad/critic_norm")},
            })
    return out


@pytest.fixture(scope="module")
def gradient_results():
    return run_ranks(gradient_equivalence_worker, GRADIENT_CASES)[0]


def test_two_ranks_give_the_one_process_gradient_in_every_mode(gradient_results):
    assert len(gradient_results) == len(GRADIENT_CASES)
    for result in gradient_results:
        case = result["case"]
        assert result["tokens"][0] > result["tokens"][1], case  # the split is uneven in tokens
        assert result["global_gap"] < 1e-6, (case, result["global_gap"])
        # Per-rank normalisation gives another gradient: the check above has teeth in every mode.
        assert result["per_rank_gap"] > 1e-4, (case, result["per_rank_gap"])
        for key, value in result["ref_stats"].items():
            assert result["stats"][key] == pytest.approx(value, rel=1e-5, abs=1e-6), (case, key)
        for key, value in result["ref_norms"].items():
            assert result["norms"][key] == pytest.approx(value, rel=1e-5), (case, key)


def statistics_worker():
    """Every statistic a rank computes from its own share, reduced, against the one-process value on
    the whole. The shares differ in rewards, lengths, values and KL."""
    from rlhand.config.schema import AlgoConfig, GenerationConfig, ReplayConfig
    from rlhand.core.masked import explained_variance, masked_whiten
    from rlhand.distributed import context
    from rlhand.evaluation.validate import validate
    from rlhand.replay.buffer import ReplayBuffer
    from rlhand.replay.mixer import ExperienceReplay
    from rlhand.reporting.timer import PhaseTimer
    from rlhand.stages.ppo.advantages import assign_advantages
    from rlhand.stages.ppo.statistics import rollout_stats
    from tests.test_rollout import make_rollout

    ctx = context.current()
    models, tok, whole = make_rollout(penalty=0.5)
    whole = whole.select(torch.argsort(whole.response_mask.sum(dim=1), descending=True, stable=True))
    drift = torch.rand(whole.ref_logprobs.shape, generator=torch.Generator().manual_seed(3)) * torch.arange(8)[:, None] / 8
    whole = whole.replace(ref_logprobs=whole.ref_logprobs - drift * whole.response_mask)  # a KL that differs row by row
    mine = torch.arange(ctx.rank * 4, ctx.rank * 4 + 4)
    local = whole.select(mine)
    algo = AlgoConfig(name="t", rollout_batch_size=8, num_minibatches=1, whiten_rewards=True)
    checks = {}

    # Advantages (reward and advantage whitening over every rank's tokens) and the KL statistics.
    ref_batch, ref_kl = assign_advantages(whole, algo, kl_coef=0.05)
    got_batch, got_kl = assign_advantages(local, algo, kl_coef=0.05, reducer=ctx)
    width = got_batch.advantages.shape[1]
    checks["advantages"] = (got_batch.advantages - ref_batch.advantages[mine, :width]).abs().max().item()
    checks["kl_stats"] = max(abs(got_kl[k] - ref_kl[k]) for k in ref_kl)
    x, mask = whole.values + 3 * whole.scores[:, None], whole.response_mask
    checks["whiten"] = (masked_whiten(x[mine], mask[mine], reducer=ctx) - masked_whiten(x, mask)[mine]).abs().max().item()
    checks["explained_variance"] = abs(
        explained_variance(ref_batch.values[mine], ref_batch.returns[mine], mask[mine], reducer=ctx).item()
        - explained_variance(ref_batch.values, ref_batch.returns, mask).item()
    )
    # The rollout's own figures.
    ref_stats, got_stats = rollout_stats(whole), rollout_stats(local, ctx)
    checks["rollout_stats"] = max(abs(got_stats[k] - ref_stats[k]) for k in ref_stats)

    # Validation: each rank validates its half of the prompts; the global figures weigh them right.
    texts = ("abc=", "hello world=", "xy=", "q=", "longer prompt here=", "z=", "mn=", "pqrs=")
    prompt_ids = [tok(t)["input_ids"] for t in texts]
    gen = GenerationConfig(max_new_tokens=8, temperature=0.7)
    kw = dict(batch_size=2, eos_ids=tok.eos_token_id, pad_id=tok.pad_token_id, seed=5, device=torch.device("cpu"), timer=PhaseTimer(torch.device("cpu")))
    from rlhand.rewards.function import FunctionScorer

    scorer = FunctionScorer(lambda prompts, responses, **_: [len(r) - len(p) for p, r in zip(prompts, responses)], tok)
    got_val = validate(models, scorer, prompt_ids[ctx.rank * 4 : ctx.rank * 4 + 4], gen, reducer=ctx, **kw)
    halves = [validate(models, scorer, prompt_ids[r * 4 : r * 4 + 4], gen, **kw) for r in range(2)]
    tokens = [h["val/response_length"] * 4 for h in halves]
    ref_val = {
        "val/reward": sum(h["val/reward"] for h in halves) / 2,
        "val/response_length": sum(h["val/response_length"] for h in halves) / 2,
        "val/kl": sum(h["val/kl"] for h in halves) / 2,
        "val/entropy": sum(h["val/entropy"] * t for h, t in zip(halves, tokens)) / sum(tokens),
    }
    checks["validation"] = max(abs(got_val[k] - ref_val[k]) for k in ref_val)

    # Replay: each rank's own buffer, drawn and described together.
    cfg = ReplayConfig(name="t", enabled=True, buffer_size=8, min_size=1, sample_size=4, max_reuse=3, prioritized=True)
    buffer = ReplayBuffer(cfg, prompt_width=32, response_width=8, vocab_size=len(tok), with_ref=True, seed=ctx.rank)
    stored = ref_batch.select(mine).replace(behaviour_logprobs=ref_batch.select(mine).behaviour_logprobs - 0.3 * (ctx.rank + 1))
    buffer.add(stored, step=1 + ctx.rank, priorities=torch.rand(4) + 0.1)
    replay = ExperienceReplay(cfg, buffer, tok.pad_token_id, torch.device("cpu"), ctx)
    fresh = make_rollout()[2].select(torch.arange(4))
    mixed, stats = replay.mix(fresh, step=3, models=models, temperature=0.7, timer=PhaseTimer(torch.device("cpu")))
    batch = mixed.batch
    replayed = batch.select(torch.nonzero(~batch.fresh).squeeze(1))
    tis = torch.exp((replayed.proximal_logprobs - replayed.behaviour_logprobs).clamp(max=torch.log(torch.tensor(2.0))))
    mine_parts = {
        "tis": (tis * replayed.response_mask).sum().item(), "tokens": replayed.response_mask.sum().item(),
        "w": (replayed.policy_weights * replayed.response_mask).sum().item(), "w2": (replayed.policy_weights**2 * replayed.response_mask).sum().item(),
        "per": replayed.value_weights.sum().item(), "rows": len(replayed),
    }
    buffer_parts = {"count": buffer.count, "reuse": buffer.data["reuse"][: buffer.count].float().sum().item(),
                    "reuse_max": buffer.data["reuse"][: buffer.count].max().item(), "age": (3 - buffer.data["step"][: buffer.count].float()).sum().item(),
                    "oldest": buffer.data["step"][: buffer.count].min().item()}
    parts = ctx.all_gather_object((mine_parts, buffer_parts))
    total = {k: sum(p[0][k] for p in parts) for k in mine_parts}
    expected_draw = {
        "replay/sampled": total["rows"], "replay/tis_mean": total["tis"] / total["tokens"],
        "replay/ess": total["w"] ** 2 / (total["tokens"] * total["w2"]), "replay/is_weight_mean": total["per"] / total["rows"],
    }
    checks["replay_draw"] = max(abs(stats[k] - v) for k, v in expected_draw.items())
    described = replay.buffer.stats(3, ctx)
    count = sum(p[1]["count"] for p in parts)
    expected_buffer = {
        "replay/buffer_size": count, "replay/avg_reuse": sum(p[1]["reuse"] for p in parts) / count,
        "replay/max_reuse": max(p[1]["reuse_max"] for p in parts), "replay/avg_age": sum(p[1]["age"] for p in parts) / count,
        "replay/oldest_step": min(p[1]["oldest"] for p in parts),
    }
    checks["replay_buffer"] = max(abs(described[k] - v) for k, v in expected_buffer.items())
    # reward.normalize=running: the running statistics of every rank's scores (two batches of 8 rows,
    # each rank holding its 4), as one process's over the whole batches.
    from rlhand.core.running import RunningMoments

    scores = (torch.arange(16, dtype=torch.float32) ** 1.5).view(2, 8)
    whole_moments, global_moments, local_moments = RunningMoments(), RunningMoments(), RunningMoments()
    for batch in scores:
        whole_moments.update(batch)
        global_moments.update(batch[mine], ctx)
        local_moments.update(batch[mine])
    checks["running_moments"] = abs(global_moments.mean - whole_moments.mean) + abs(global_moments.std - whole_moments.std)
    # And the check has teeth: the per-rank value of each differs from the global one.
    checks["per_rank_differs"] = min(
        (assign_advantages(local, algo, kl_coef=0.05)[0].advantages - ref_batch.advantages[mine, :width]).abs().max().item(),
        abs(assign_advantages(local, algo, kl_coef=0.05)[1]["kl/ref"] - ref_kl["kl/ref"]),
        abs(rollout_stats(local)["reward/mean"] - ref_stats["reward/mean"]),
        abs(replay.buffer.stats(3)["replay/avg_age"] - expected_buffer["replay/avg_age"]),
        abs(local_moments.mean - whole_moments.mean) + abs(local_moments.std - whole_moments.std),
    )
    return checks


def test_every_statistic_is_over_all_ranks():
    checks = run_ranks(statistics_worker)
    for rank_checks in checks:
        differs = rank_checks.pop("per_rank_differs")
        assert differs > 1e-4, differs
        for name, gap in rank_checks.items():
            assert gap < 1e-5, (name, gap)


def test_a_slurm_task_finds_its_rank_and_the_job_s_first_host(monkeypatch):
    import os

    from rlhand.distributed.context import export_slurm_env

    # A private environment: the exported RANK, WORLD_SIZE, MASTER_ADDR ... must not reach the
    # processes that later tests start (they would try to join this made-up job).
    environ = {"SLURM_JOB_ID": "123", "SLURM_JOB_NODELIST": "gpu[07-08]", "SLURM_PROCID": "3", "SLURM_NTASKS": "4",
               "SLURM_LOCALID": "1", "SLURM_JOB_NUM_NODES": "2", "SLURM_NODEID": "1"}
    monkeypatch.setattr(os, "environ", environ)
    export_slurm_env()
    assert (environ["RANK"], environ["WORLD_SIZE"], environ["LOCAL_RANK"], environ["MASTER_ADDR"]) == ("3", "4", "1", "gpu07")
    assert int(environ["MASTER_PORT"]) > 1024


def _reshard_flags_after_sampling():
    """FSDP2's own layout, then after a rollout's `gathered` block: does each module reshard after forward?"""
    from rlhand.distributed import context
    from rlhand.distributed.sharding import fsdp_modules, gathered, reshards_after_forward, shard_model
    from tests.helpers import prompt_batch, tiny_models

    models, tokenizer = tiny_models()
    ctx = context.current()
    shard_model(models.policy, ctx, torch.device("cpu"))
    shard_model(models.ref, ctx, torch.device("cpu"))
    ids, mask = prompt_batch(tokenizer)

    def flags():
        return [reshards_after_forward(m) for m in fsdp_modules(models.policy)]

    models.policy(input_ids=ids, attention_mask=mask).logits.sum().backward()  # FSDP2's lazy init: its own choice
    before = flags()
    with gathered([models.policy]):
        models.policy(input_ids=ids, attention_mask=mask)
    with torch.no_grad():
        models.ref(input_ids=ids, attention_mask=mask)
    return before, flags(), reshards_after_forward(models.ref)


def test_after_sampling_the_policy_reshards_as_fsdp2_has_it_and_a_frozen_model_frees_its_root():
    """The root (embeddings, tied output layer) is not resharded after forward, which would gather it
    again in every backward; the blocks are. A frozen sharded model has no backward: its root
    reshards after each forward, or it stays gathered."""
    for before, after, frozen_root in run_ranks(_reshard_flags_after_sampling):
        assert before[0] is False and all(before[1:])  # the root first (fsdp_modules order), then the blocks
        assert after == before
        assert frozen_root is True
