"""The replay store: one row per (prompt, response) sample, in compact CPU tensors.

Per sample: prompt and response token ids (int16 when the vocabulary fits, else int32) with their
lengths, behaviour log-probs as sampled (never overwritten), cached reference log-probs, values
and advantages at generation time, score, EOS flag, the iteration it was generated at, its
reuse count, its prompt row (where its conversation, columns and label are), and its priority (in
the sum tree). Eligibility is enforced in the tree before
any draw: a stale or reuse-capped sample has a leaf of 0 and cannot be drawn.
"""

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from rlhand.config.schema import ReplayConfig
from rlhand.core.importance import annealed_beta, per_is_weights
from rlhand.core.masked import LOCAL, Reducer
from rlhand.replay.sum_tree import SumTree
from rlhand.rollout.batch import Rollout

PER_TOKEN = ("behaviour_logprobs", "ref_logprobs", "values", "advantages")
PER_SAMPLE = ("scores", "raw_scores")


@dataclass
class Draw:
    indices: np.ndarray  # (S,) buffer rows, duplicates allowed
    weights: Tensor  # (S,) PER importance weights, <= 1 (all 1 for uniform sampling)
    beta: float


class ReplayBuffer:
    def __init__(self, cfg: ReplayConfig, *, prompt_width: int, response_width: int, vocab_size: int, with_ref: bool, seed: int):
        self.cfg, self.capacity = cfg, cfg.buffer_size
        id_dtype = torch.int16 if vocab_size <= torch.iinfo(torch.int16).max else torch.int32
        n, p, r = self.capacity, prompt_width, response_width
        self.data = {
            "prompt_ids": torch.zeros(n, p, dtype=id_dtype),
            "prompt_len": torch.zeros(n, dtype=torch.int16),
            "response_ids": torch.zeros(n, r, dtype=id_dtype),
            "response_len": torch.zeros(n, dtype=torch.int16),
            "ended": torch.zeros(n, dtype=torch.bool),
            "step": torch.zeros(n, dtype=torch.int32),
            "reuse": torch.zeros(n, dtype=torch.int16),
            "source_row": torch.full((n,), -1, dtype=torch.int32),  # -1: not tracked
            **{name: torch.zeros(n, r, dtype=torch.float32) for name in PER_TOKEN if with_ref or name != "ref_logprobs"},
            **{name: torch.zeros(n, dtype=torch.float32) for name in PER_SAMPLE},
        }
        self.tree = SumTree(self.capacity)
        # Each row's leaf value while it may be drawn: a row leaves the tree (leaf 0) at its reuse cap
        # or when stale, and comes back with it if an adaptive cap rises again (replay.adaptive_reuse).
        self.stored_leaves = np.zeros(self.capacity, dtype=np.float64)
        self.max_reuse = cfg.max_reuse  # the cap now; ExperienceReplay adapts it
        self.count = 0  # rows filled
        self.next = 0  # row the next sample goes to (oldest first once full)
        self.draws = 0  # for beta annealing
        self.rng = np.random.default_rng([seed, 0x5EED])

    @property
    def bytes_per_sample(self) -> int:
        return sum(t[0].numel() * t.element_size() for t in self.data.values()) + 2 * 8  # + two float64 tree leaves

    def add(self, rollout: Rollout, step: int, priorities: Tensor) -> None:
        """Store a rollout's rows (their behaviour log-probs, values and advantages) with their priorities."""
        rows = (self.next + np.arange(len(rollout))) % self.capacity
        self.next = int((self.next + len(rollout)) % self.capacity)
        self.count = min(self.capacity, self.count + len(rollout))
        d, index = self.data, torch.from_numpy(rows)
        prompt_len = rollout.prompt_mask.sum(dim=1).cpu()
        response_len = rollout.response_mask.sum(dim=1).cpu()
        prompt_width = d["prompt_ids"].shape[1]
        # Prompts are stored right-aligned (as left-padded), responses left-aligned.
        prompts = rollout.prompt_ids.cpu()[:, -prompt_width:]
        d["prompt_ids"][index] = torch.nn.functional.pad(prompts, (prompt_width - prompts.shape[1], 0)).to(d["prompt_ids"].dtype)
        d["prompt_len"][index] = prompt_len.to(torch.int16)
        width = rollout.response_ids.shape[1]
        d["response_ids"][index] = 0
        d["response_ids"][index, :width] = rollout.response_ids.cpu().to(d["response_ids"].dtype)
        d["response_len"][index] = response_len.to(torch.int16)
        d["ended"][index] = rollout.ended.cpu()
        d["step"][index] = step
        d["reuse"][index] = 0
        d["source_row"][index] = -1 if rollout.source_row is None else rollout.source_row.cpu().to(torch.int32)
        for name in PER_TOKEN:
            if name in d:
                source = getattr(rollout, name)
                d[name][index] = 0.0
                d[name][index, :width] = (source * rollout.response_mask).float().cpu()
        for name in PER_SAMPLE:
            d[name][index] = getattr(rollout, name).float().cpu()
        leaves = self._leaf(priorities.double().cpu().numpy())
        self.stored_leaves[rows] = leaves
        self.tree.set(rows, leaves)

    def _leaf(self, priorities: np.ndarray) -> np.ndarray:
        return priorities**self.cfg.alpha if self.cfg.prioritized else np.ones_like(priorities)

    def eligible(self, step: int) -> np.ndarray:
        """Rows that may be drawn at `step`: filled, generated at most staleness_threshold ago, under the reuse cap."""
        filled = np.arange(self.capacity) < self.count
        age = step - self.data["step"].numpy()
        fresh_enough = age <= self.cfg.staleness_threshold
        under_cap = self.data["reuse"].numpy() < self.max_reuse
        return filled & fresh_enough & under_cap

    def retire_ineligible(self, step: int) -> np.ndarray:
        """Zero the leaves of rows that can no longer be drawn (staleness only grows, reuse only
        rises), and give back their leaves to rows under a cap that rose (adaptive reuse); returns
        the eligible mask, whose rows are then exactly the positive leaves."""
        eligible = self.eligible(step)
        leaves = self.tree.leaves()
        dead = ~eligible & (leaves > 0)
        self.tree.set(np.flatnonzero(dead), np.zeros(int(dead.sum())))
        revived = np.flatnonzero(eligible & (leaves == 0))
        if len(revived):
            self.tree.set(revived, self.stored_leaves[revived])
        return eligible

    def set_reuse_cap(self, cap: int) -> None:
        self.max_reuse = int(cap)

    def ready(self, count: int, step: int) -> bool:
        """Whether `count` rows can be drawn at `step`: at least min_size rows eligible, with enough
        remaining reuses between them."""
        eligible = self.retire_ineligible(step)
        remaining = (self.max_reuse - self.data["reuse"].numpy()[eligible].astype(np.int64)).sum()
        return int(eligible.sum()) >= max(1, self.cfg.min_size) and remaining >= count

    def draw(self, count: int, step: int) -> Draw | None:
        """`count` rows drawn with replacement, proportionally to the tree (uniform when not prioritized),
        or None while the buffer is not `ready`. Each draw counts as a reuse; a row reaching
        max_reuse leaves the tree at once, so not even a duplicate within this draw can exceed the cap."""
        if not self.ready(count, step):
            return None
        num_items = int(self.eligible(step).sum())  # positive leaves; falls by one whenever a row reaches its cap
        beta = annealed_beta(self.cfg.beta, self.cfg.beta_increment, self.draws)
        self.draws += 1
        indices = np.empty(count, dtype=np.int64)
        weights = np.empty(count, dtype=np.float64)
        reuse = self.data["reuse"]
        for k in range(count):
            total = self.tree.total
            row = self.tree.sample(self.rng)
            indices[k] = row
            if self.cfg.prioritized:
                prob = self.tree.leaves()[row] / total
                weights[k] = per_is_weights(np.float64(prob), num_items, beta, self.tree.min_positive / total)
            else:
                weights[k] = 1.0
            reuse[row] += 1
            if reuse[row] >= self.max_reuse:
                self.tree.set([row], [0.0])
                num_items -= 1
        return Draw(indices=indices, weights=torch.from_numpy(weights).float(), beta=beta)

    def update_priorities(self, indices: np.ndarray, priorities: Tensor) -> None:
        """New priorities for rows just used; rows that reached the reuse cap stay at 0."""
        alive = self.data["reuse"].numpy()[indices] < self.max_reuse
        leaves = self._leaf(priorities.double().cpu().numpy())
        self.stored_leaves[indices] = leaves  # also for capped rows: if the cap rises, they return with it
        self.tree.set(indices[alive], leaves[alive])

    def rollout(self, indices: np.ndarray, device: torch.device, pad_id: int) -> Rollout:
        """Rows as a Rollout on `device`: prompts left-padded and responses right-padded to the
        longest among them; `logprobs` holds the behaviour log-probs."""
        d, index = self.data, torch.from_numpy(indices)
        prompt_len, response_len = d["prompt_len"][index].long(), d["response_len"][index].long()
        prompt_width, response_width = int(prompt_len.max()), int(response_len.max())
        prompt_ids = d["prompt_ids"][index][:, -prompt_width:].long()
        prompt_mask = (torch.arange(prompt_width) >= prompt_width - prompt_len.unsqueeze(1)).long()
        response_mask = (torch.arange(response_width) < response_len.unsqueeze(1)).long()
        response_ids = d["response_ids"][index][:, :response_width].long()
        prompt_ids = prompt_ids.masked_fill(prompt_mask == 0, pad_id)
        response_ids = response_ids.masked_fill(response_mask == 0, pad_id)
        per_token = {name: d[name][index][:, :response_width] for name in PER_TOKEN if name in d}
        rollout = Rollout(
            prompt_ids=prompt_ids,
            prompt_mask=prompt_mask,
            response_ids=response_ids,
            response_mask=response_mask,
            behaviour_logprobs=per_token["behaviour_logprobs"],
            proximal_logprobs=per_token["behaviour_logprobs"],  # until the mixer recomputes them
            ref_logprobs=per_token.get("ref_logprobs"),
            values=per_token["values"],
            stored_advantages=per_token["advantages"],
            scores=d["scores"][index],
            raw_scores=d["raw_scores"][index],
            ended=d["ended"][index],
            fresh=torch.zeros(len(indices), dtype=torch.bool),
            source_row=d["source_row"][index].long(),  # -1: a row stored untracked (a checkpoint from before prompt rows)
        )
        return rollout.to(device)

    def stats(self, step: int, reducer: Reducer = LOCAL) -> dict[str, float]:
        """The buffer's figures, over every rank's buffer (each rank keeps its own share)."""
        filled = slice(0, self.count)
        reuse = self.data["reuse"][filled].float()
        generated = self.data["step"][filled]
        sums = reducer.sum(torch.tensor([self.count, int(self.eligible(step).sum()), self.count * self.bytes_per_sample / 2**20], dtype=torch.float64))
        # float32 sums, divided in float32: in one process the means are reuse.mean() to the bit
        means = reducer.sum(torch.stack([reuse.sum(), (step - generated.float()).sum()]))
        largest = reducer.max(reuse.max() if self.count else torch.zeros(()))
        oldest = reducer.min(generated.min().double() if self.count else torch.tensor(float("inf"), dtype=torch.float64))
        count = int(sums[0])
        if count == 0:
            return {"replay/buffer_size": 0}
        return {
            "replay/buffer_size": count,
            "replay/eligible": int(sums[1]),
            "replay/avg_reuse": (means[0] / count).item(),
            "replay/max_reuse": largest.item(),
            "replay/avg_age": (means[1] / count).item(),
            "replay/oldest_step": int(oldest),
            "replay/buffer_mb": sums[2].item(),
        }

    def state_dict(self) -> dict:
        return {
            "data": {name: t.clone() for name, t in self.data.items()},
            "tree": {"leaves": torch.from_numpy(self.tree.leaves().copy())},
            "count": self.count,
            "next": self.next,
            "draws": self.draws,
            "rng": self.rng.bit_generator.state,
            "stored_leaves": torch.from_numpy(self.stored_leaves.copy()),
            "max_reuse": self.max_reuse,
        }

    def load_state_dict(self, state: dict) -> None:
        for name, tensor in state["data"].items():
            self.data[name].copy_(tensor)
        self.tree.load_state_dict({"leaves": state["tree"]["leaves"].numpy()})
        self.count, self.next, self.draws = state["count"], state["next"], state["draws"]
        self.rng.bit_generator.state = state["rng"]
        # Checkpoints from before adaptive reuse: the tree's leaves, the configured cap.
        self.stored_leaves[:] = state["stored_leaves"].numpy() if "stored_leaves" in state else self.tree.leaves()
        self.max_reuse = state.get("max_reuse", self.cfg.max_reuse)
