"""A/B statistics between two policies answering the same prompts, as pure functions.

An outcome per prompt is 1 (A's response scores higher), 0 (B's) or 0.5 (a tie). The win rate is
their mean; its 95% interval is a seeded percentile bootstrap over prompts. The length-controlled
win rate (AlpacaEval LC's idea) fits P(A wins) = sigmoid(a + b * length difference / its std) by
logistic regression and reports sigmoid(a): the win rate had both responses been the same length.
"""

import numpy as np


def outcomes(scores_a: np.ndarray, scores_b: np.ndarray, tie: float = 1e-9) -> np.ndarray:
    """1, 0 or 0.5 per prompt: A's score above, below or within `tie` of B's."""
    diff = np.asarray(scores_a, dtype=np.float64) - np.asarray(scores_b, dtype=np.float64)
    return np.where(np.abs(diff) <= tie, 0.5, (diff > 0).astype(np.float64))


def bootstrap_interval(values: np.ndarray, resamples: int = 2000, seed: int = 0, level: float = 0.95) -> tuple[float, float]:
    """The percentile bootstrap interval of the mean of `values` (resampled with replacement)."""
    values = np.asarray(values, dtype=np.float64)
    rng = np.random.default_rng(seed)
    means = values[rng.integers(0, len(values), size=(resamples, len(values)))].mean(axis=1)
    tail = (1 - level) / 2
    return float(np.quantile(means, tail)), float(np.quantile(means, 1 - tail))


def length_controlled(outcome: np.ndarray, length_diff: np.ndarray, slope_penalty: float = 1.0, iterations: int = 100) -> float:
    """sigmoid(a) of the logistic fit outcome ~ sigmoid(a + b * z), z the standardised length
    difference (ties as 0.5 targets), by Newton's method with an L2 penalty on the slope b (a unit
    Gaussian prior): when length alone separates wins from losses the unpenalised fit has no finite
    answer, the penalised one does. The plain win rate when lengths never differ."""
    y = np.asarray(outcome, dtype=np.float64)
    diff = np.asarray(length_diff, dtype=np.float64)
    if diff.std() == 0:
        return float(y.mean())
    x = np.stack([np.ones_like(diff), diff / diff.std()], axis=1)
    penalty = np.diag([0.0, slope_penalty])
    w = np.zeros(2)
    for _ in range(iterations):
        p = 1 / (1 + np.exp(-(x @ w)))
        grad = x.T @ (p - y) + penalty @ w
        hessian = x.T @ (x * (p * (1 - p))[:, None]) + penalty + 1e-9 * np.eye(2)
        step = np.linalg.solve(hessian, grad)
        w -= step
        if np.abs(step).max() < 1e-10:
            break
    return float(1 / (1 + np.exp(-w[0])))


def ab_summary(scores_a, scores_b, lengths_a, lengths_b, seed: int = 0) -> dict:
    result = outcomes(scores_a, scores_b)
    low, high = bootstrap_interval(result, seed=seed)
    return {
        "win_rate": float(result.mean()),
        "interval_95": [low, high],
        "ties": float((result == 0.5).mean()),
        "length_controlled_win_rate": length_controlled(result, np.asarray(lengths_a) - np.asarray(lengths_b)),
        "prompts": int(len(result)),
    }


def ab_results(ab: dict):
    """(pair, scorer, win rate, interval low, high, ties, length-controlled win rate) of a summary's
    "ab" part, in order: what rlhand-eval prints and rlhand-compare tables."""
    for pair, by_scorer in ab.items():
        for scorer, r in by_scorer.items():
            yield pair, scorer, r["win_rate"], *r["interval_95"], r["ties"], r["length_controlled_win_rate"]
