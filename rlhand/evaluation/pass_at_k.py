"""Accuracy with a grader, as pure functions: pass@k from n graded samples per prompt.

pass@k is the chance that at least one of k samples of a prompt is correct. With c correct of n
samples, the unbiased estimator (Chen et al. 2021, "Evaluating Large Language Models Trained on
Code") is 1 - C(n-c, k) / C(n, k), averaged over prompts; computed as 1 - prod_{i=n-c+1}^{n} (1 - k/i)
so that no binomial coefficient is ever formed. pass@1 is the mean correctness over all samples.
Its 95% interval is a seeded percentile bootstrap over prompts (each prompt's samples stay together).
"""

import numpy as np

from rlhand.evaluation.ab import bootstrap_interval


def pass_at_k(n: int, c: int, k: int) -> float:
    """The unbiased pass@k of one prompt with `c` correct samples of `n` (k <= n)."""
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n (n={n}, c={c}, k={k})")
    if n - c < k:
        return 1.0  # every k-subset holds a correct sample
    return float(1.0 - np.prod(1.0 - k / np.arange(n - c + 1, n + 1, dtype=np.float64)))


def per_prompt_pass_at_k(correct: np.ndarray, k: int) -> np.ndarray:
    """pass@k of each prompt; `correct` is (prompts, n) of bools, n samples each."""
    correct = np.asarray(correct, dtype=bool)
    if correct.ndim != 2:
        raise ValueError(f"correct must be (prompts, samples), not shape {correct.shape}")
    n = correct.shape[1]
    return np.array([pass_at_k(n, int(c), k) for c in correct.sum(axis=1)], dtype=np.float64)


def ks_for(n: int) -> list[int]:
    """The k reported for n samples: 1, the powers of 2 below n, and n."""
    ks, k = [1], 2
    while k < n:
        ks.append(k)
        k *= 2
    return ks + ([n] if n > 1 else [])


def pass_at_k_interval(
    correct: np.ndarray, k: int, seed: int = 0, resamples: int = 2000, level: float = 0.95
) -> tuple[float, float]:
    """The percentile bootstrap interval of pass@k, resampling prompts with replacement."""
    return bootstrap_interval(per_prompt_pass_at_k(correct, k), resamples=resamples, seed=seed, level=level)


def accuracy_summary(correct: np.ndarray, ungraded: int = 0, seed: int = 0) -> dict:
    """{"pass@k": estimate, "pass@k_ci": [low, high]} for each k of ks_for(n), "samples": n and
    "ungraded": how many samples the grader could not grade (counted as incorrect in `correct`)."""
    correct = np.asarray(correct, dtype=bool)
    out = {}
    for k in ks_for(correct.shape[1]):
        out[f"pass@{k}"] = float(per_prompt_pass_at_k(correct, k).mean())
        out[f"pass@{k}_ci"] = list(pass_at_k_interval(correct, k, seed=seed))
    return {**out, "samples": int(correct.shape[1]), "ungraded": int(ungraded)}


def accuracy_results(accuracy: dict):
    """(policy, grader, [(k, estimate, low, high), ...], ungraded) of a summary's "accuracy" part."""
    for policy, by_grader in accuracy.items():
        for grader, r in by_grader.items():
            ks = [int(key[5:]) for key in r if key.startswith("pass@") and not key.endswith("_ci")]
            yield policy, grader, [(k, r[f"pass@{k}"], *r[f"pass@{k}_ci"]) for k in ks], r["ungraded"]
