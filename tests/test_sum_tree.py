"""Sum-tree invariants from the algorithm checklist (D46-D48, D51, D54 edge cases)."""

import numpy as np
import pytest

from rlhand.replay.sum_tree import SumTree


def tree_with(priorities, capacity=None):
    tree = SumTree(capacity or len(priorities))
    tree.set(np.arange(len(priorities)), priorities)
    return tree


def test_root_is_the_sum_d46():
    tree = tree_with(np.array([1.0, 2.0, 3.0, 4.0]) ** 0.6)
    assert tree.total == pytest.approx(6.746295, abs=1e-6)
    rng = np.random.default_rng(0)
    tree = SumTree(1000)
    for _ in range(10_000):
        tree.set(rng.integers(0, 1000, size=3), rng.uniform(0, 5, size=3))
    assert tree.total == pytest.approx(tree.leaves().sum(), rel=1e-9)
    assert tree.min_positive == tree.leaves()[tree.leaves() > 0].min()


@pytest.mark.parametrize("capacity", [4, 3, 5])
def test_prefix_descent_d47(capacity):
    tree = tree_with([1.0] * capacity)
    masses = [i + 0.5 for i in range(capacity)]
    assert tree.find(masses).tolist() == list(range(capacity))
    assert tree.find([1.0, 2.0]).tolist() == [1, 2]  # a mass equal to a left sum goes right
    edge = tree.find([tree.total, np.nextafter(tree.total, 0), tree.total * 2])
    assert (edge == capacity - 1).all()  # never a padded leaf


def test_zero_priority_leaves_are_never_returned_d47():
    tree = tree_with([1.0, 0.0, 1.0, 0.0])
    rng = np.random.default_rng(1)
    draws = tree.find(rng.uniform(0, tree.total, size=100_000))
    assert set(draws.tolist()) == {0, 2}
    # A trailing zero leaf at the total boundary, and a non-power-of-two capacity.
    tree = tree_with([1.0, 1.0, 0.0])
    assert tree.find([tree.total, 1.9999999999]).tolist() == [1, 1]


def chi_square(counts, probs):
    expected = probs * counts.sum()
    return float(((counts - expected) ** 2 / expected).sum())


@pytest.mark.parametrize(
    "alpha, expected",
    [(0.6, [0.148230, 0.224674, 0.286555, 0.340542]), (0.0, [0.25] * 4), (1.0, [0.1, 0.2, 0.3, 0.4])],
)
def test_sampling_frequencies_d48(alpha, expected):
    tree = tree_with(np.array([1.0, 2.0, 3.0, 4.0]) ** alpha)
    probs = tree.leaves() / tree.total
    assert probs.tolist() == pytest.approx(expected, abs=1e-6)
    rng = np.random.default_rng(1234)
    counts = np.bincount(tree.find(rng.uniform(0, tree.total, size=100_000)), minlength=4)
    assert chi_square(counts, probs) < 16.27  # df=3, p=0.001
    # sample() is the single-draw form the buffer uses.
    counts = np.bincount([tree.sample(rng) for _ in range(20_000)], minlength=4)
    assert chi_square(counts, probs) < 16.27


def test_chi_square_catches_a_biased_descent():
    """The statistic used above has teeth: a <= instead of < at node boundaries skews integer masses."""
    tree = tree_with([1.0, 1.0, 1.0, 1.0])
    rng = np.random.default_rng(0)
    masses = rng.integers(0, 4, size=40_000).astype(float)  # all masses on boundaries
    counts = np.bincount(tree.find(masses), minlength=4)
    assert chi_square(counts, np.full(4, 0.25)) < 16.27
    biased = np.bincount(np.clip(tree.find(masses) - (masses % 1 == 0) * (masses > 0), 0, 3), minlength=4)
    assert chi_square(biased, np.full(4, 0.25)) > 16.27


def test_updates_touch_one_leaf_and_last_write_wins_d51():
    tree = tree_with([1.0, 2.0, 3.0, 4.0])
    tree.set([1, 1], [5.0, 7.0])
    assert tree.leaves().tolist() == [1.0, 7.0, 3.0, 4.0] and tree.total == 15.0
    with pytest.raises(ValueError):
        tree.set([0], [-1.0])
    with pytest.raises(IndexError):
        tree.set([4], [1.0])


def test_zeroed_leaf_leaves_the_min_tree_d52():
    tree = tree_with([0.5, 2.0, 3.0])
    assert tree.min_positive == 0.5
    tree.set([0], [0.0])
    assert tree.min_positive == 2.0 and tree.total == 5.0


def test_empty_tree_refuses_to_sample():
    with pytest.raises(ValueError, match="empty"):
        SumTree(4).find([0.0])


def test_state_round_trip():
    tree = tree_with([1.0, 0.0, 2.5])
    other = SumTree(3)
    other.load_state_dict(tree.state_dict())
    assert other.total == tree.total and other.min_positive == tree.min_positive
