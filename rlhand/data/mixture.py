"""Data mixtures: several files, each with a weight, for any stage (task.mixture for RL prompts,
sft.mixture, rm.mixture: name -> {path, weight}). Each item of a batch comes from a source drawn
in proportion to the weights by a seeded generator of that batch, then the next item of that
source's own seeded shuffled passes; the state (batches drawn, each source's position, counts) is
part of the resumable state, so a resumed run draws what the uninterrupted one would have."""

import numpy as np

from rlhand.data.sampler import PromptSampler


def source_of_each(counts: list[int]) -> list[int]:
    return [i for i, n in enumerate(counts) for _ in range(n)]


class MixtureSampler:
    """Indices into the sources' items concatenated in order (`labels[i]`: item i's source)."""

    def __init__(self, labels: list[int], weights: list[float], seed: int):
        self.seed = seed
        self.members = [[i for i, label in enumerate(labels) if label == s] for s in range(len(weights))]
        if any(not m for m in self.members):
            raise ValueError("a mixture source has no items")
        self.weights = np.asarray(weights, dtype=np.float64) / np.sum(weights)
        self.samplers = [PromptSampler(len(m), seed + 1009 * (s + 1)) for s, m in enumerate(self.members)]
        self.batches, self.counts = 0, [0] * len(weights)

    def next_indices(self, count: int) -> list[int]:
        draws = np.random.default_rng([self.seed, 4099, self.batches]).choice(len(self.weights), size=count, p=self.weights)
        self.batches += 1
        out = []
        for source in draws.tolist():
            position = self.samplers[source].next_indices(1)[0]
            out.append(self.members[source][position])
            self.counts[source] += 1
        return out

    def state_dict(self) -> dict:
        return {"batches": self.batches, "counts": list(self.counts), "sources": [s.state_dict() for s in self.samplers]}

    def load_state_dict(self, state: dict) -> None:
        self.batches, self.counts = state["batches"], list(state["counts"])
        for sampler, saved in zip(self.samplers, state["sources"]):
            sampler.load_state_dict(saved)


def build_sampler(labels: list[int] | None, weights: list[float] | None, count: int, seed: int):
    """A MixtureSampler for several sources, else the plain seeded passes over `count` items."""
    if labels is None or weights is None or len(weights) < 2:
        return PromptSampler(count, seed)
    return MixtureSampler(labels, weights, seed)


def load_mixture(mixture: dict, load_one) -> tuple[list, list[int], list[str], list[float]]:
    """(items of every source in order, each item's source, source names, weights); load_one(path)
    reads one source's items."""
    items, labels = [], []
    for s, spec in enumerate(mixture.values()):
        found = load_one(spec["path"])
        items += found
        labels += [s] * len(found)
    return items, labels, list(mixture), [float(spec["weight"]) for spec in mixture.values()]


def mixture_counts(sampler, names: list[str]) -> dict[str, int]:
    """data/<source>: items drawn from each source so far (mixtures only)."""
    if not isinstance(sampler, MixtureSampler):
        return {}
    return {f"data/{name}": n for name, n in zip(names, sampler.counts)}
