"""stage=reward_model: a Bradley-Terry reward model on preference pairs. Each pair's chosen and
rejected sides are scored in one forward at their last token (the EOS, where reward=model reads a
response's score), and the loss is -log sigmoid(r_chosen - r_rejected - margin) per pair over all
ranks' pairs, plus an optional centring term (rlhand/core/supervised.py). final/reward_model is a
*ForSequenceClassification folder with num_labels=1 that reward=model loads, with score_stats.json:
the scores' mean and std over the held-out pairs (else up to 1024 training pairs)."""

import torch

from rlhand.core.kl import last_valid_index
from rlhand.core.supervised import bradley_terry_loss, preference_stats
from rlhand.data.preferences import Pair, load_preferences
from rlhand.data.sampler import left_pad, right_pad
from rlhand.models.build import build_reward_model_to_train
from rlhand.models.forward import sequence_inputs, sequence_scores
from rlhand.rewards.model import STATS_FILE
from rlhand.stages.supervised import SupervisedStage


class RewardModelStage(SupervisedStage):
    section, learner = "rm", "reward_model"

    @classmethod
    def load(cls, cfg, tokenizer, path):
        return load_preferences(cfg, tokenizer, path)

    @staticmethod
    def length(item: Pair) -> int:
        return max(len(p) + len(c) for p, c in (item.chosen, item.rejected))

    def build_model(self, cfg, tokenizer, device):
        return build_reward_model_to_train(cfg.model, tokenizer, device)

    def scores(self, batch: list[Pair]) -> tuple[torch.Tensor, torch.Tensor]:
        """(r_chosen, r_rejected), both sides of every pair in one forward."""
        sides = [p.chosen for p in batch] + [p.rejected for p in batch]
        pad, device = self.inputs.tokenizer.pad_token_id, self.env.device
        prompt_ids, prompt_mask = left_pad([prompt for prompt, _ in sides], pad)
        ids, mask = right_pad([completion for _, completion in sides], pad)
        inputs = sequence_inputs(prompt_ids.to(device), prompt_mask.to(device), ids.to(device), mask.to(device))
        scores = sequence_scores(self.model, inputs, last_valid_index(mask.to(device)))
        return scores[: len(batch)], scores[len(batch) :]

    def losses(self, batch):
        chosen, rejected = self.scores(batch)
        pairs = self.dist.sum(torch.tensor(float(len(batch)), dtype=torch.float64, device=chosen.device))
        margin = torch.tensor([p.margin for p in batch], device=chosen.device) if self.settings.margin_column else None
        loss = bradley_terry_loss(chosen, rejected, pairs, margin, self.settings.center_coef)
        return loss, {"loss": self.dist.sum(loss.detach().double()), **preference_stats(chosen, rejected, self.dist)}

    def sums(self, batch):
        chosen, rejected = self.scores(batch)
        diff, both = (chosen - rejected).double(), torch.cat([chosen, rejected]).double()
        margin = torch.tensor([p.margin for p in batch], device=chosen.device, dtype=torch.float64) if self.settings.margin_column else 0.0
        return {
            "pairs": torch.tensor(float(len(batch)), dtype=torch.float64, device=diff.device),
            "right": ((diff > 0).double() + 0.5 * (diff == 0).double()).sum(),
            "margin": diff.sum(),
            "nll": -torch.nn.functional.logsigmoid(diff - margin).sum(),
            "score": both.sum(),
            "square": both.pow(2).sum(),
        }

    def from_sums(self, summed, keys):
        t = dict(zip(keys, summed))
        mean = t["score"] / (2 * t["pairs"])
        return {
            "loss": t["nll"] / t["pairs"],
            "accuracy": t["right"] / t["pairs"],
            "margin": t["margin"] / t["pairs"],
            "score_mean": mean,
            "score_std": (t["square"] / (2 * t["pairs"]) - mean**2).clamp_min(0).sqrt(),
        }

    @torch.no_grad()
    def extra_files(self) -> dict[str, dict]:
        pairs = self.inputs.val or self.inputs.train[:1024]
        pairs = pairs[: len(pairs) // self.dist.world_size * self.dist.world_size]
        mine = pairs[self.dist.shard(len(pairs))]
        rows = self.settings.batch_size // self.dist.world_size
        sums = torch.zeros(3, dtype=torch.float64, device=self.env.device)
        with self.env.autocast():
            for start in range(0, len(mine), rows):
                chosen, rejected = self.scores(mine[start : start + rows])
                both = torch.cat([chosen, rejected]).double()
                sums += torch.stack([torch.tensor(float(len(both)), dtype=torch.float64, device=both.device), both.sum(), both.pow(2).sum()])
        count, total, squares = self.dist.sum(sums).tolist()
        mean = total / count
        std = max(squares / count - mean**2, 0.0) ** 0.5
        source = "held-out pairs" if self.inputs.val else "training pairs"
        return {STATS_FILE: {"mean": mean, "std": std, "scores": int(count), "over": source}}
