"""What a PPO iteration reports of its rollout, over every rank's rows, and the run's last line."""

import torch

from rlhand.core.masked import LOCAL, Reducer, masked_mean, mean, std
from rlhand.rollout.batch import Rollout, concat_rollouts


def sampled_stats(sampled: list[Rollout], reducer: Reducer = LOCAL, with_values: bool = True) -> dict[str, float]:
    """Statistics of everything sampled this iteration (dynamic sampling: every round, dropped
    groups included, so reward/mean is the policy's, not the filter's)."""
    stats = rollout_stats(concat_rollouts(sampled, 0) if len(sampled) > 1 else sampled[0], reducer)
    if len(sampled) > 1:  # each round's own width, not the concatenation's padded one
        stats["response/generated_tokens"] = generated_tokens(sampled, reducer)
    if not with_values:
        del stats["value/mean"]
    return stats


def generated_tokens(rollouts: list[Rollout], reducer: Reducer = LOCAL) -> int:
    """Sampling steps x prompts, summed: the tokens the sampler produced (rows stop early only together)."""
    generated = torch.tensor(float(sum(rollout.response_ids.numel() for rollout in rollouts)))
    return int(reducer.sum(generated))


def rollout_stats(rollout: Rollout, reducer: Reducer = LOCAL) -> dict[str, float]:
    """The fresh rollout's statistics (over every rank's rows)."""
    lengths = rollout.response_mask.sum(dim=1).float()
    return {
        "reward/mean": mean(rollout.scores, reducer).item(),
        "reward/std": std(rollout.scores, reducer).item(),
        "reward/raw_mean": mean(rollout.raw_scores, reducer).item(),
        "response/length_mean": mean(lengths, reducer).item(),
        "response/eos_fraction": mean(rollout.ended.float(), reducer).item(),
        "response/generated_tokens": generated_tokens([rollout], reducer),
        "value/mean": masked_mean(rollout.values, rollout.response_mask, reducer=reducer).item(),
    }


def summary_line(history: list[dict], window: int = 10) -> str:
    if not history:
        return "no steps run"
    k = min(window, max(1, len(history) // 2))
    start = sum(m["reward/mean"] for m in history[:k]) / k
    end = sum(m["reward/mean"] for m in history[-k:]) / k
    seconds = sum(m["time/iteration_s"] for m in history)
    over = "first/last step" if k == 1 else f"mean of first/last {k} steps"
    line = f"reward/mean: start {start:+.3f} -> end {end:+.3f} ({over}); {len(history)} steps in {seconds:.1f}s"
    best = [m["val/reward"] for m in history if "val/reward" in m]
    if best:
        line += f"; best val/reward {max(best):+.3f}"
    return line
