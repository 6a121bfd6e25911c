"""rlhand-eval: generate with one or more policies on the same prompts (the same seeds: common random
numbers), score every response with the chosen scorers, and compare each policy with the first:
mean scores, A/B win rate per scorer with ties, a bootstrap 95% interval and the length-controlled
win rate (rlhand/evaluation/ab.py). Writes <out>/samples.jsonl and <out>/summary.json, never into a
training run's folder.

    rlhand-eval --policy rl=runs/ppo --policy sft=runs/sft/final/policy --task letters \\
        --scorer gold=rlhand.tasks.letters.letters_reward --reward-model rm=runs/rm/final/reward_model \\
        --remote served=http://127.0.0.1:5000/get_reward --out eval/rl_vs_sft
"""

import argparse
import json
import sys
from pathlib import Path

import numpy as np
import torch

from rlhand.config.schema import ChatTemplate, Truncation
from rlhand.data.prompts import Prompt, PromptFormat, encode_prompts, read_prompt_file
from rlhand.data.sampler import left_pad
from rlhand.data.tokenizer import load_tokenizer, stop_token_ids
from rlhand.distributed import context
from rlhand.errors import UserError
from rlhand.evaluation.ab import ab_results, ab_summary
from rlhand.models.sources import loading
from rlhand.rewards import specs
from rlhand.rollout.sampler import sample_responses
from rlhand.tasks import BUILTIN_PROMPTS


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
        prompts = [Prompt(f"task {args.task}: prompt {i}", t) for i, t in enumerate(texts)]
    return prompts[: args.num_prompts]


@torch.no_grad()
def answer_and_score(name: str, folder: Path, prompts: list[Prompt], args, device: torch.device, prepared: dict, models: dict) -> list[tuple]:
    """This rank's batches of the policy's responses, scored: (batch index, {scorer: scores},
    lengths, texts) each. Batch b (args.batch_size prompts) goes to rank b % world size and draws
    from a generator of its own seeded by (--seed, b): the same responses for every policy and on any
    number of ranks (common random numbers)."""
    from transformers import AutoModelForCausalLM

    with loading(f"--policy {name}", str(folder)):
        tokenizer = load_tokenizer(str(folder))
        model = AutoModelForCausalLM.from_pretrained(str(folder)).to(device).eval()
    scorers = {scorer: specs.build(p, tokenizer, device, model=models[scorer]) for scorer, p in prepared.items()}
    ids = encode_prompts(tokenizer, prompts, args.max_prompt_tokens, Truncation.left, "--max-prompt-tokens", ChatTemplate(args.chat_template), args.system_prompt)
    stops = stop_token_ids(tokenizer, str(folder))
    ctx, done = context.current(), []
    for b in range(ctx.rank, -(-len(ids) // args.batch_size), ctx.world_size):
        part = slice(b * args.batch_size, (b + 1) * args.batch_size)
        prompt_ids, prompt_mask = (t.to(device) for t in left_pad(ids[part], tokenizer.pad_token_id))
        generator = torch.Generator(device=device).manual_seed(args.seed * 1_000_003 + b)
        s = sample_responses(
            model, prompt_ids, prompt_mask, max_new_tokens=args.max_new_tokens, temperature=args.temperature,
            top_k=1 if args.greedy else args.top_k, top_p=args.top_p, eos_ids=stops, pad_id=tokenizer.pad_token_id, generator=generator,
        )  # fmt: skip
        scores = {n: scorer(prompt_ids, prompt_mask, s.response_ids, s.response_mask, s.ended, rows=prompts[part]).cpu().tolist() for n, scorer in scorers.items()}
        texts = tokenizer.batch_decode([r[m.bool()].tolist() for r, m in zip(s.response_ids, s.response_mask)], skip_special_tokens=True)
        done.append((b, scores, s.response_mask.sum(dim=1).tolist(), texts))
    return done


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
    if (out / "training_config.json").exists() or (out / "logs" / "metrics.jsonl").exists():
        raise EvalError(f"--out {out}: a training run's folder; rlhand-eval writes its own")
    prepared = prepared_scorers(args)
    if not prepared:
        raise EvalError("give at least one --scorer, --reward-model or --remote")
    if args.num_prompts < 1 or args.batch_size < 1:
        raise EvalError("--num-prompts and --batch-size must be at least 1")
    prompts = read_prompts(args)
    if args.device == "cuda" and not torch.cuda.is_available():
        raise EvalError("--device cuda: no CUDA device here")
    ctx = context.current()
    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    device = ctx.cuda_device() if cuda else torch.device("cpu")
    models = {name: specs.load_model(p, device) for name, p in prepared.items()}  # loaded once for every policy
    mine = {policy: answer_and_score(policy, folder, prompts, args, device, prepared, models) for policy, folder in policies.items()}
    everyone = ctx.all_gather_object(mine)  # [mine] in one process
    if not ctx.is_main:
        return None  # rank 0 writes
    rows, scores, lengths = [], {}, {}
    for policy in policies:
        batches = sorted((part for rank in everyone for part in rank[policy]), key=lambda part: part[0])
        scores[policy] = {name: np.array([x for _, s, _, _ in batches for x in s[name]]) for name in prepared}
        lengths[policy] = [n for _, _, counts, _ in batches for n in counts]
        rows += [{"policy": policy, "response": t} for _, _, _, texts in batches for t in texts]
    for i, row in enumerate(rows):
        prompt = prompts[i % len(prompts)]
        row["prompt"] = prompt.text if not prompt.is_conversation else prompt.messages
        row["scores"] = {name: float(values[i % len(prompts)]) for name, values in scores[row["policy"]].items()}
    first = next(iter(policies))
    summary = {
        "prompts": len(prompts),
        "seed": args.seed,
        "mean_scores": {p: {n: float(v.mean()) for n, v in s.items()} for p, s in scores.items()},
        "mean_length": {p: float(np.mean(v)) for p, v in lengths.items()},
        "ab": {
            f"{other} vs {first}": {n: ab_summary(scores[other][n], scores[first][n], lengths[other], lengths[first], args.seed) for n in scores[first]}
            for other in policies
            if other != first
        },
    }
    out.mkdir(parents=True, exist_ok=True)
    (out / "samples.jsonl").write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows), encoding="utf-8")
    (out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    return summary


def report(summary: dict) -> str:
    lines = [f"{summary['prompts']} prompts, seed {summary['seed']}"]
    for policy, means in summary["mean_scores"].items():
        lines.append(f"{policy}: " + ", ".join(f"{n} {v:+.4f}" for n, v in means.items()) + f", length {summary['mean_length'][policy]:.1f}")
    for pair, scorer, win, low, high, ties, controlled in ab_results(summary["ab"]):
        lines.append(f"{pair} by {scorer}: win rate {win:.3f} [{low:.3f}, {high:.3f}], ties {ties:.2f}, length-controlled {controlled:.3f}")
    return "\n".join(lines)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="rlhand-eval", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--policy", action="append", required=True, help="NAME=FOLDER (a transformers folder or a run folder); the first is the baseline")
    p.add_argument("--scorer", action="append", default=[], help="NAME=module.function, a reward function")
    p.add_argument("--reward-model", action="append", default=[], help="NAME=FOLDER, a *ForSequenceClassification reward model")
    p.add_argument("--remote", action="append", default=[], help="NAME=URL, a reward server (OpenRLHF's protocol; rlhand-serve-reward)")
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
