"""Sum tree (and min tree) over item priorities: proportional sampling and updates in O(log N).

Leaves hold p_i^alpha in float64 (float32 sums drift); a leaf of 0 is an item that must never be
drawn (empty, stale, reuse-capped or evicted), and is +inf in the min tree so that it does not
set the buffer-wide IS-weight normalisation. Capacity is padded to a power of two so that heap
indexing keeps leaves in order for any capacity. Parents are recomputed from their children on
every update (not adjusted by differences), so the root is always the exact float64 sum.
"""

import numpy as np


class SumTree:
    def __init__(self, capacity: int):
        self.capacity = capacity
        self.size = 1 << max(0, (capacity - 1).bit_length())  # leaves, a power of two
        self.sums = np.zeros(2 * self.size, dtype=np.float64)
        self.mins = np.full(2 * self.size, np.inf, dtype=np.float64)

    @property
    def total(self) -> float:
        return float(self.sums[1])

    @property
    def min_positive(self) -> float:
        return float(self.mins[1])

    def leaves(self) -> np.ndarray:
        return self.sums[self.size : self.size + self.capacity]

    def set(self, indices, values) -> None:
        """Set leaves (last write wins for repeated indices), then recompute their ancestors."""
        indices = np.asarray(indices, dtype=np.int64).reshape(-1)
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        if indices.size == 0:
            return
        if (indices < 0).any() or (indices >= self.capacity).any():
            raise IndexError(f"sum tree index out of range 0..{self.capacity - 1}")
        if (values < 0).any() or not np.isfinite(values).all():
            raise ValueError("sum tree priorities must be finite and >= 0")
        nodes = indices + self.size
        self.sums[nodes] = values  # numpy assigns in order: the last duplicate wins
        self.mins[nodes] = np.where(values > 0, values, np.inf)
        nodes = np.unique(nodes // 2)
        while nodes[0] >= 1:
            self.sums[nodes] = self.sums[2 * nodes] + self.sums[2 * nodes + 1]
            self.mins[nodes] = np.minimum(self.mins[2 * nodes], self.mins[2 * nodes + 1])
            if nodes[0] == 1:
                break
            nodes = np.unique(nodes // 2)

    def find(self, masses) -> np.ndarray:
        """Leaf index for each prefix mass in [0, total): the first leaf whose cumulative sum exceeds
        it. A mass at or past the total (float drift, u == total) still lands on a positive leaf."""
        if self.total <= 0:
            raise ValueError("sum tree is empty: nothing can be drawn")
        masses = np.minimum(np.asarray(masses, dtype=np.float64).reshape(-1), np.nextafter(self.total, 0))
        nodes = np.ones(masses.shape, dtype=np.int64)
        while nodes[0] < self.size:
            left = 2 * nodes
            left_sum, right_sum = self.sums[left], self.sums[left + 1]
            go_right = ((masses >= left_sum) & (right_sum > 0)) | (left_sum <= 0)
            masses = np.where(go_right, np.minimum(masses - left_sum, np.nextafter(right_sum, 0)), masses)
            nodes = np.where(go_right, left + 1, left)
        return nodes - self.size

    def sample(self, rng: np.random.Generator) -> int:
        """One leaf drawn with probability leaf / total."""
        return int(self.find(rng.uniform(0.0, self.total))[0])

    def state_dict(self) -> dict:
        return {"leaves": self.leaves().copy()}

    def load_state_dict(self, state: dict) -> None:
        leaves = np.asarray(state["leaves"], dtype=np.float64)
        self.sums[:] = 0.0
        self.mins[:] = np.inf
        self.set(np.arange(self.capacity), leaves)
