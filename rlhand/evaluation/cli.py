"""rlhand-eval: generate with one or more policies on the same prompts (the same seeds: common random
numbers), score every response with the chosen scorers, and compare each policy with the first:
mean scores, A/B win rate per scorer with ties, a bootstrap 95% interval and the length-controlled
win rate (rlhand/evaluation/ab.py). With --grader (a reward function scoring 1 for a correct
response against --label-column's ground truth) and --samples K, also accuracy: pass@1 and pass@k up
to K with bootstrap 95% intervals over prompts (rlhand/evaluation/pass_at_k.py). Writes
<out>/samples.jsonl and <out>/summary.json, never into a training run's folder.

    rlhand-eval --policy rl=runs/ppo --policy sft=runs/sft/final/policy --task letters \\
        --scorer gold=rlhand.tasks.letters.letters_reward --reward-model rm=runs/rm/final/reward_model \\
        --remote served=http://127.0.0.1:5000/get_reward --out eval/rl_vs_sft
    rlhand-eval --policy rl=runs/ppo --prompts math.jsonl --label-column answer \\
        --grader math=rlhand.rewards.graders.math.math_reward --samples 8 --out eval/math
"""

import argparse
import functools
import json
import math
import sys
from pathlib import Path

import numpy as np
import torch

from rlhand.config.schema import ChatTemplate, Truncation
from rlhand.data.prompts import Prompt, PromptFormat, builtin_prompt, encode_prompts, read_prompt_file
from rlhand.data.sampler import left_pad
from rlhand.data.tokenizer import load_tokenizer, stop_token_ids
from rlhand.distributed import context
from rlhand.errors import UserError
from rlhand.evaluation.ab import ab_results, ab_summary
from rlhand.evaluation.pass_at_k import accuracy_results
from rlhand.evaluation.results import policy_results
from rlhand.models.sources import loading
from rlhand.rewards import specs
from rlhand.rewards.unscored import Unscored
from rlhand.rollout.sampler import sample_responses
from rlhand.tasks import BUILTIN_PROMPTS
from rlhand.user_code import import_from_working_directory, quiet_library_progress


class EvalError(UserError):
    """A bad rlhand-eval argument; the message names it."""


def named(values: list[str], flag: str) -> dict[str, str]:
    out = {}
    for value in values:
        name, sep, target = value.partition("=")
        if not sep or not name or not target:
            raise EvalError(f"{flag} {value!r}: give NAME=VALUE")
        if name in out:
            raise EvalError(f"{flag} {name}: named twice")
        out[name] = target
    return out


def policy_folder(path: str) -> Path:
    """A transformers folder, or a run folder (its final/policy)."""
    folder = Path(path)
    if (folder / "final" / "policy" / "config.json").is_file():
        return folder / "final" / "policy"
    if not (folder / "config.json").is_file():
        raise EvalError(f"--policy {path}: neither a transformers model folder nor a run folder with final/policy")
    return folder


def read_prompts(args) -> list[Prompt]:
    if args.prompts:
        prompts = read_prompt_file(args.prompts, PromptFormat(args.prompt_column, args.label_column, ChatTemplate(args.chat_template), args.system_prompt))
    else:
        if args.task not in BUILTIN_PROMPTS:
            raise EvalError(f"--task {args.task}: no built-in task (have {sorted(BUILTIN_PROMPTS)})")
        # A seed of its own: prompts apart from the training run's (task.num_prompts drawn with seed=cfg.seed).
        texts = BUILTIN_PROMPTS[args.task](args.num_prompts, 8, 1_000_000 + args.seed)
        prompts = [builtin_prompt(f"task {args.task}: prompt {i}", t) for i, t in enumerate(texts)]
    return prompts[: args.num_prompts]


def sample_seed(seed: int, batch: int, sample: int) -> int:
    """The generator seed of sample `sample` of batch `batch`: the same for every policy and any
    number of ranks (common random numbers); sample 0 draws what a run with one sample draws."""
    if sample == 0:
        return seed * 1_000_003 + batch
    return int(np.random.SeedSequence([seed % 2**64, batch, sample]).generate_state(1, np.uint64)[0])


@torch.no_grad()
def answer_and_score(name: str, folder: Path, prompts: list[Prompt], args, device: torch.device, prepared: dict, models: dict, graders: dict) -> list[tuple]:
    """This rank's batches of the policy's responses, scored and graded: (batch index, [one
    (scores, grades, lengths, texts) per sample]) each, scores {scorer: [score]} and grades
    {grader: ([score], [ungraded])}. Batch b (args.batch_size prompts) goes to rank b % world size;
    its sample j draws from a generator of its own seeded by (--seed, b, j): the same responses for
    every policy and on any number of ranks (common random numbers)."""
    from transformers import AutoModelForCausalLM

    with loading(f"--policy {name}", str(folder)):
        tokenizer = load_tokenizer(str(folder))
        model = AutoModelForCausalLM.from_pretrained(str(folder)).to(device).eval()
    scorers = {scorer: specs.build(p, tokenizer, device, model=models[scorer]) for scorer, p in prepared.items()}
    grading = {grader: specs.build(p, tokenizer, device) for grader, p in graders.items()}
    ids = encode_prompts(tokenizer, prompts, args.max_prompt_tokens, Truncation.left, "--max-prompt-tokens", ChatTemplate(args.chat_template), args.system_prompt)
    stops = stop_token_ids(tokenizer, str(folder))
    ctx, done = context.current(), []
    for b in range(ctx.rank, -(-len(ids) // args.batch_size), ctx.world_size):
        part = slice(b * args.batch_size, (b + 1) * args.batch_size)
        prompt_ids, prompt_mask = (t.to(device) for t in left_pad(ids[part], tokenizer.pad_token_id))
        samples = []
        for j in range(args.samples):
            generator = torch.Generator(device=device).manual_seed(sample_seed(args.seed, b, j))
            s = sample_responses(
                model, prompt_ids, prompt_mask, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                top_k=1 if args.greedy else args.top_k, top_p=args.top_p, eos_ids=stops, pad_id=tokenizer.pad_token_id, generator=generator,
            )  # fmt: skip
            batch = (prompt_ids, prompt_mask, s.response_ids, s.response_mask, s.ended)
            scores = {n: scorer(*batch, rows=prompts[part]).cpu().tolist() for n, scorer in scorers.items()}
            grades = {}
            for n, grader in grading.items():
                values = grader(*batch, rows=prompts[part]).cpu().tolist()
                unscored = graders[n].function.unscored or [False] * len(values)
                grades[n] = (values, [u or math.isnan(v) for u, v in zip(unscored, values)])
            texts = tokenizer.batch_decode([r[m.bool()].tolist() for r, m in zip(s.response_ids, s.response_mask)], skip_special_tokens=True)
            samples.append((scores, grades, s.response_mask.sum(dim=1).tolist(), texts))
        done.append((b, samples))
    return done


def recording_unscored(fn):
    """A grader's function that scores an Unscored sample 0 and keeps, in .unscored, which samples of
    its last call were (the scorer layer sees numbers only). Its signature is fn's: the scorer passes
    it what fn names."""
    unscored: list[bool] = []

    @functools.wraps(fn)
    def graded(*args, **kwargs):
        result = fn(*args, **kwargs)
        unscored[:] = [isinstance(x, Unscored) for x in result] if isinstance(result, (list, tuple)) else []
        return [0.0 if isinstance(x, Unscored) else x for x in result] if any(unscored) else result

    graded.unscored = unscored
    return graded


def prepared_graders(args) -> dict[str, specs.PreparedScorer]:
    """--grader's reward functions, checked before any model loads; each needs the prompts' labels."""
    graders = named(args.grader, "--grader")
    for name in graders:
        if not args.label_column or not args.prompts:
            raise EvalError(f"--grader {name} needs --prompts with a --label-column: the ground truth it grades against")
    out = {}
    for name, target in graders.items():
        prepared = specs.prepare({"_target_": target}, f"--grader {name}")
        prepared.function = recording_unscored(prepared.function)
        out[name] = prepared
    return out


def prepared_scorers(args) -> dict[str, specs.PreparedScorer]:
    """--scorer, --reward-model and --remote as one set of named scorers (rlhand/rewards/specs.py),
    checked before any model loads; a name given twice, across the flags too, is an error."""
    given = [("--scorer", "_target_", args.scorer), ("--reward-model", "model", args.reward_model), ("--remote", "url", args.remote)]
    out = {}
    for flag, key, values in given:
        for name, value in named(values, flag).items():
            if name in out:
                raise EvalError(f"{flag} {name}: the name of another scorer")
            out[name] = specs.prepare({key: value}, f"{flag} {name}")
    return out


def evaluate(args) -> dict | None:
    policies = {name: policy_folder(path) for name, path in named(args.policy, "--policy").items()}
    out = Path(args.out)
    run = next((f for f in [out, *out.resolve().parents] if (f / "training_config.json").exists() or (f / "logs" / "metrics.jsonl").exists()), None)
    if run is not None:
        inside = "" if run == out else f" (inside the training run {run})"
        raise EvalError(f"--out {out}: a training run's folder{inside}; rlhand-eval writes a folder of its own")
    prepared = prepared_scorers(args)
    graders = prepared_graders(args)
    if not prepared and not graders:
        raise EvalError("give at least one --scorer, --reward-model, --remote or --grader")
    if args.num_prompts < 1 or args.batch_size < 1 or args.samples < 1:
        raise EvalError("--num-prompts, --batch-size and --samples must be at least 1")
    if args.greedy and args.samples > 1:
        raise EvalError(f"--samples {args.samples} with --greedy: every sample would be the same response")
    prompts = read_prompts(args)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise EvalError("--device cuda: no CUDA device here")
    ctx = context.current()
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = ctx.cuda_device() if cuda else torch.device("cpu")
    models = {name: specs.load_model(p, device) for name, p in prepared.items()}  # loaded once for every policy
    mine = {policy: answer_and_score(policy, folder, prompts, args, device, prepared, models, graders) for policy, folder in policies.items()}
    everyone = ctx.all_gather_object(mine)  # [mine] in one process
    if not ctx.is_main:
        return None  # rank 0 writes
    rows, scores, lengths, accuracy = [], {}, {}, {}  # scores and lengths (prompts, samples) per policy
    for policy in policies:
        batches = sorted((part for rank in everyone for part in rank[policy]), key=lambda part: part[0])
        policy_rows, scores[policy], lengths[policy], graded = policy_results(policy, batches, prompts, args, list(prepared), list(graders))
        rows += policy_rows
        if graders:
            accuracy[policy] = graded
    first = next(iter(policies))
    summary = {
        "prompts": len(prompts),
        "samples": args.samples,
        "seed": args.seed,
        "mean_scores": {p: {n: float(v.mean()) for n, v in s.items()} for p, s in scores.items()},
        "mean_length": {p: float(np.mean(v)) for p, v in lengths.items()},
        # With --samples K > 1 a prompt's outcome compares the two policies' mean scores over its K
        # samples (and its length is their mean length): the bootstrap still resamples prompts.
        "ab": {
            f"{other} vs {first}": {
                n: ab_summary(scores[other][n].mean(axis=1), scores[first][n].mean(axis=1), lengths[other].mean(axis=1), lengths[first].mean(axis=1), args.seed)
                for n in scores[first]
            }
            for other in policies
            if other != first
        },
        "accuracy": accuracy,
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "samples.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False, default=str) + "\n" for r in rows), encoding="utf-8")
    (out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return summary


def report(summary: dict) -> str:
    samples = summary.get("samples", 1)
    lines = [f"{summary['prompts']} prompts" + (f" x {samples} samples" if samples > 1 else "") + f", seed {summary['seed']}"]
    for policy, means in summary["mean_scores"].items():
        lines.append(f"{policy}: " + ", ".join(f"{n} {v:+.4f}" for n, v in means.items()) + f", length {summary['mean_length'][policy]:.1f}")
    for pair, scorer, win, low, high, ties, controlled in ab_results(summary["ab"]):
        lines.append(f"{pair} by {scorer}: win rate {win:.3f} [{low:.3f}, {high:.3f}], ties {ties:.2f}, length-controlled {controlled:.3f}")
    for policy, grader, passes, ungraded in accuracy_results(summary.get("accuracy", {})):
        shown = ", ".join(f"pass@{k} {v:.3f} [{low:.3f}, {high:.3f}]" for k, v, low, high in passes)
        lines.append(f"{policy} accuracy by {grader}: {shown}" + (f", ungraded {ungraded}" if ungraded else ""))
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rlhand-eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", action="append", required=True, help="NAME=FOLDER (a transformers folder or a run folder); the first is the baseline")
    p.add_argument("--scorer", action="append", default=[], help="NAME=module.function, a reward function")
    p.add_argument("--reward-model", action="append", default=[], help="NAME=FOLDER, a *ForSequenceClassification reward model")
    p.add_argument("--remote", action="append", default=[], help="NAME=URL, a reward server (OpenRLHF's protocol; rlhand-serve-reward)")
    p.add_argument("--grader", action="append", default=[], help="NAME=module.function, a reward function scoring 1 for a correct response (needs --label-column): accuracy, pass@k")
    p.add_argument("--correct-at", type=float, default=1.0, help="a grader's score at or above which a sample is correct")
    p.add_argument("--samples", type=int, default=1, help="responses per prompt (pass@k for k up to it); each draws its own seeded stream")
    p.add_argument("--prompts", help="a prompt file (.jsonl, .csv, .parquet, datasets folder)")
    p.add_argument("--prompt-column", default="prompt")
    p.add_argument("--label-column", help="the ground-truth column reward functions get as labels (a dotted path reads a nested one)")
    p.add_argument("--chat-template", default="auto", choices=["auto", "on", "off"], help="as task.chat_template: message lists rendered by each policy's template (on: text too)")
    p.add_argument("--system-prompt", help="a system turn before every rendered conversation without one")
    p.add_argument("--task", default="letters", help="a built-in task's prompts when --prompts is not given")
    p.add_argument("--num-prompts", type=int, default=128)
    p.add_argument("--max-prompt-tokens", type=int, default=512)
    p.add_argument("--max-new-tokens", type=int, default=16)
    p.add_argument("--temperature", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--greedy", action="store_true", help="the most likely token each step")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--out", required=True, help="a folder of its own for samples.jsonl and summary.json")
    return p


def main(argv: list[str] | None = None) -> None:
    """Under torchrun each rank answers its share of the prompts; rank 0 writes and reports."""
    args = parser().parse_args(argv)
    import_from_working_directory()
    quiet_library_progress()
    ctx = context.init_from_env()
    try:
        summary = evaluate(args)
    except UserError as err:
        if ctx.is_main:
            print(f"rlhand-eval: error: {err}", file=sys.stderr)
        context.shutdown(wait_for_others=False)
        sys.exit(2)
    context.shutdown()
    if summary is not None:
        print(report(summary))


if __name__ == "__main__":
    main()
