"""stage=reward_model: a Bradley-Terry reward model on preference pairs. Each pair's chosen and
rejected sides are scored in one forward at their last token (a text's EOS, a rendered turn's end of
turn: where reward=model reads a response's score), and the loss is -log sigmoid(r_chosen -
r_rejected - margin) per pair over the whole batch's pairs, plus an optional centring term
(rlhand/core/supervised.py). final/reward_model is a *ForSequenceClassification folder with
num_labels=1 that reward=model loads, with score_stats.json: the scores' mean and std over the
held-out pairs (else up to 1024 training pairs).

A tokenizer whose pad is one of its EOS ids (many Llama and Mistral fine-tunes) gets a pad of its own
here (rlhand/data/tokenizer.py distinct_pad), saved with the model and in its config.pad_token_id:
transformers' sequence classifiers read a padded batch at the last token that is not the pad id, so
plain transformers (or a server built on it) reads the same token rlhand trained at."""

import torch

from rlhand.core.kl import last_valid_index
from rlhand.core.supervised import bradley_terry_loss, preference_figures, preference_sums
from rlhand.data.preferences import Pair, load_preferences
from rlhand.data.sampler import left_pad, right_pad
from rlhand.data.tokenizer import distinct_pad
from rlhand.models.build import build_reward_model_to_train
from rlhand.models.forward import sequence_inputs, sequence_scores
from rlhand.rewards.model import STATS_FILE
from rlhand.stages.supervised import SupervisedStage


class RewardModelStage(SupervisedStage):
    section, learner = "rm", "reward_model"

    @classmethod
    def load(cls, cfg, tokenizer, path, stop_ids):
        return load_preferences(cfg, tokenizer, path, stop_ids)

    @classmethod
    def stage_tokenizer(cls, cfg):
        tokenizer, stop_ids = super().stage_tokenizer(cfg)
        distinct_pad(tokenizer, stop_ids)
        return tokenizer, stop_ids

    @staticmethod
    def length(item: Pair) -> int:
        return max(len(p) + len(c) for p, c in (item.chosen, item.rejected))

    def build_model(self, cfg, tokenizer, device):
        return build_reward_model_to_train(cfg.model, tokenizer, device)

    def count(self, items: list[Pair]) -> float:
        return float(len(items))

    def padded_tokens(self, items: list[Pair]) -> int:
        sides = [p.chosen for p in items] + [p.rejected for p in items]
        return len(sides) * (max(len(p) for p, _ in sides) + max(len(c) for _, c in sides))

    def scores(self, batch: list[Pair]) -> tuple[torch.Tensor, torch.Tensor]:
        """(r_chosen, r_rejected), both sides of every pair in one forward."""
        sides = [p.chosen for p in batch] + [p.rejected for p in batch]
        pad, device = self.inputs.tokenizer.pad_token_id, self.env.device
        prompt_ids, prompt_mask = left_pad([prompt for prompt, _ in sides], pad)
        ids, mask = right_pad([completion for _, completion in sides], pad)
        inputs = sequence_inputs(prompt_ids.to(device), prompt_mask.to(device), ids.to(device), mask.to(device))
        scores = sequence_scores(self.model, inputs, last_valid_index(mask.to(device)))
        return scores[: len(batch)], scores[len(batch) :]

    def losses(self, batch, total):
        chosen, rejected = self.scores(batch)
        margin = torch.tensor([p.margin for p in batch], device=chosen.device) if self.settings.margin_column else None
        loss = bradley_terry_loss(chosen, rejected, total, margin, self.settings.center_coef)
        return loss, preference_sums(chosen, rejected, margin, self.settings.center_coef)

    def from_sums(self, summed, keys):
        return preference_figures(dict(zip(keys, summed)))

    @torch.no_grad()
    def extra_files(self) -> dict[str, dict]:
        pairs = self.inputs.val or self.inputs.train[:1024]
        pairs = pairs[: len(pairs) // self.dist.world_size * self.dist.world_size]
        mine = pairs[self.dist.shard(len(pairs))]
        rows = self.settings.batch_size // self.dist.world_size
        sums = torch.zeros(3, dtype=torch.float64, device=self.env.device)
        with self.env.autocast():
            for start in range(0, len(mine), rows):
                for part in self.micro_batches(mine[start : start + rows]):
                    chosen, rejected = self.scores(part)
                    both = torch.cat([chosen, rejected]).double()
                    sums += torch.stack([torch.tensor(float(len(both)), dtype=torch.float64, device=both.device), both.sum(), both.pow(2).sum()])
        count, total, squares = self.dist.sum(sums).tolist()
        mean = total / count
        std = max(squares / count - mean**2, 0.0) ** 0.5
        source = "held-out pairs" if self.inputs.val else "training pairs"
        return {STATS_FILE: {"mean": mean, "std": std, "scores": int(count), "over": source}}
