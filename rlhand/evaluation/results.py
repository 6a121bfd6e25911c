"""rlhand-eval's results for one policy: its batches' samples gathered from every rank, laid out as
(prompts, samples) arrays, the rows of samples.jsonl and its accuracy by each grader."""

import numpy as np

from rlhand.evaluation.pass_at_k import accuracy_summary


def per_prompt(batches: list[tuple], pick) -> np.ndarray:
    """(prompts, samples): pick(one sample's results) per sample of every batch, in prompt order."""
    per_sample = [[np.asarray(pick(sample)) for sample in samples] for _, samples in batches]
    return np.concatenate([np.stack(batch, axis=1) for batch in per_sample], axis=0)


def policy_results(policy: str, batches: list[tuple], prompts: list, args, scorers: list[str], graders: list[str]) -> tuple[list[dict], dict, np.ndarray, dict]:
    """(samples.jsonl rows, {scorer: scores}, lengths, {grader: accuracy summary}) for one policy,
    from its batches in order; a sample is correct when its grade is at least --correct-at and the
    grader could grade it."""
    scores = {name: per_prompt(batches, lambda sample, name=name: sample[0][name]) for name in scorers}
    lengths = per_prompt(batches, lambda sample: sample[2])
    texts = per_prompt(batches, lambda sample: np.array(sample[3], dtype=object))
    grades = {name: per_prompt(batches, lambda sample, name=name: sample[1][name][0]) for name in graders}
    ungraded = {name: per_prompt(batches, lambda sample, name=name: sample[1][name][1]).astype(bool) for name in graders}
    correct = {name: (grades[name] >= args.correct_at) & ~ungraded[name] for name in graders}
    accuracy = {name: accuracy_summary(correct[name], int(ungraded[name].sum()), args.seed) for name in graders}
    rows = []
    for i, prompt in enumerate(prompts):
        for j in range(args.samples):
            row = {"policy": policy, "sample": j, "prompt": prompt.text if not prompt.is_conversation else prompt.messages, "response": texts[i, j]}
            if args.label_column and args.prompts:
                row["label"] = prompt.label
            row["scores"] = {name: float(values[i, j]) for name, values in scores.items()}
            if graders:
                row["correct"] = {name: bool(values[i, j]) for name, values in correct.items()}
                if any(values[i, j] for values in ungraded.values()):
                    row["ungraded"] = [name for name, values in ungraded.items() if values[i, j]]
            rows.append(row)
    return rows, scores, lengths, accuracy
