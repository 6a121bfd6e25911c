"""Group estimators over ranks: dynamic sampling's figures and REINFORCE++'s batch whitening are
over every rank's rows, not each rank's own."""

import torch

from rlhand.config.schema import AlgoConfig
from rlhand.rollout.batch import concat_rollouts
from rlhand.rollout.groups import DynamicSampling
from rlhand.stages.ppo.advantages import assign_advantages
from tests.distributed import run_ranks


def groups_worker():
    from rlhand.distributed import context
    from tests.test_rollout import make_rollout

    ctx = context.current()
    _, _, base = make_rollout()  # the same 8 rows on both ranks (same seed)
    # Rank 0's groups of 2 are all equal, rank 1's all differ: local shares 0 and 1, global 1/2.
    scores = [[1.0, 1.0, 0.0, 0.0, 2.0, 2.0, 3.0, 3.0], [1.0, 0.0, 0.0, 2.0, 2.0, 3.0, 3.0, 1.0]]
    mine = base.replace(scores=torch.tensor(scores[ctx.rank]), raw_scores=torch.tensor(scores[ctx.rank]))
    dynamic = DynamicSampling(group_size=2, rows=8, pad_id=0)
    dynamic.add(mine)
    dynamic.batch()
    local, global_ = dynamic.stats(), dynamic.stats(ctx)

    # REINFORCE++ whitens over the batch: every rank's rows together.
    algo = AlgoConfig(name="t", rollout_batch_size=16, num_minibatches=2, estimator="reinforce_pp", whiten_advantages=True)
    both = [base.replace(scores=torch.tensor(s), raw_scores=torch.tensor(s)) for s in scores]
    whole, _ = assign_advantages(concat_rollouts(both, pad_id=0), algo, kl_coef=0.05)
    shared, _ = assign_advantages(mine, algo, kl_coef=0.05, reducer=ctx)
    alone, _ = assign_advantages(mine, algo, kl_coef=0.05)
    rows = slice(8 * ctx.rank, 8 * ctx.rank + 8)
    width = mine.response_ids.shape[1]
    return {
        "local_frac": local["dynamic/informative_frac"],
        "global_frac": global_["dynamic/informative_frac"],
        "global_filled": global_["dynamic/filled_groups"],
        "whitened_gap": (shared.advantages - whole.advantages[rows, :width]).abs().max().item(),
        "alone_gap": (alone.advantages - whole.advantages[rows, :width]).abs().max().item(),
    }


def test_group_statistics_and_whitening_are_over_all_ranks():
    ranks = run_ranks(groups_worker)
    assert [r["local_frac"] for r in ranks] == [0.0, 1.0]
    for r in ranks:
        assert r["global_frac"] == 0.5 and r["global_filled"] == 4.0  # rank 0 filled its 4 groups with dropped ones
        assert r["whitened_gap"] < 1e-5
        assert r["alone_gap"] > 1e-3  # and the check has teeth: one rank's own whitening differs
