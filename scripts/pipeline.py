"""The offline RLHF pipeline, end to end on built-in synthetic data (make pipeline):

  1. stage=sft on demonstrations of the letters task that are right in `demo_quality` of their letters;
  2. stage=reward_model on preference pairs labelled by the task's gold score (letters_reward), with
     `label_noise` of the labels flipped: the reward model sees only the labels, never the score;
  3. stage=ppo from the SFT policy (and kept near it: it is the reference) against the learned reward
     model, with the gold score logged beside the proxy at every validation (eval.scorers.gold).

For each seed it reports the reward model's held-out accuracy, the gold (and proxy) score of the SFT
policy (validated before the first RL step) and of the RL policy, and the curves during RL, into
<out>/pipeline.json and a markdown table on stdout (docs/results/pipeline.md).

With --chat the same data goes through a chat model and the layouts users bring: a tiny ChatML model
folder (tests/chat_model.py: Qwen2.5's template, pad = EOS, two EOS ids) starts from random weights;
the demonstrations are `messages` rows, the pairs TRL's conversational preference layout, the RL
prompts a verl parquet whose ground truth (the prompt's letters) the gold score reads as `labels`.

    python scripts/pipeline.py --seeds 0 1 2 --out outputs/pipeline
    python scripts/pipeline.py --chat --seeds 0 --out outputs/pipeline_chat
"""

import argparse
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.chat_model for --chat

SFT = ["stage=sft", "trainer.max_steps=1000", "sft.num_examples=8192", "sft.batch_size=64", "sft.lr=3e-3", "sft.demo_quality=0.8", "eval.every=250", "eval.num_prompts=256"]
RM = ["stage=reward_model", "trainer.max_steps=1500", "rm.num_pairs=8192", "rm.batch_size=32", "rm.lr=3e-3", "eval.every=500", "eval.num_prompts=512"]
PPO = ["trainer.max_steps=100", "algo.kl_coef=0.1", "eval.every=20", "eval.num_prompts=64", "eval.before_training=true", "+eval.scorers.gold._target_=rlhand.tasks.letters.letters_reward"]
# Stated before running: the reward model must beat chance (0.5) on held-out pairs by at least this much.
RM_MARGIN_OVER_CHANCE = 0.1


def train(run_dir: Path, overrides: list[str]) -> float:
    started = time.perf_counter()
    cmd = [sys.executable, "-m", "rlhand.train", *overrides, f"hydra.run.dir={run_dir}", "logging=plain", "logging.plots=false"]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        sys.exit(f"pipeline: {' '.join(cmd)} failed:\n{out.stderr[-3000:]}")
    return time.perf_counter() - started


def rows(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "logs" / "metrics.jsonl").read_text().splitlines() if line.strip()]


def chat_data(out: Path, seed: int) -> dict[str, list[str]]:
    """The built-in letters data in the layouts users bring, and a chat model folder: each stage's overrides."""
    from rlhand.tasks.letters import letters_demonstrations, letters_preferences, make_letter_prompts
    from tests.chat_model import write_chat_model, write_jsonl
    from tests.test_data_layouts import write_parquet

    out.mkdir(parents=True, exist_ok=True)
    folder = write_chat_model(out / "chat_model", seed=seed)
    user = lambda text: [{"role": "user", "content": text}]  # noqa: E731
    reply = lambda text: [{"role": "assistant", "content": text}]  # noqa: E731
    demos = write_jsonl(out / "demos.jsonl", [{"messages": user(p) + reply(c)} for p, c in letters_demonstrations(8192, 8, 0.8, seed)])
    pairs = write_jsonl(out / "pairs.jsonl", [{"prompt": user(p), "chosen": reply(c), "rejected": reply(r)} for p, c, r in letters_preferences(8192, 8, 0.1, seed)])
    rows = [{"data_source": "letters", "prompt": user(p), "reward_model": {"style": "rule", "ground_truth": p.rstrip("=")}} for p in make_letter_prompts(2048, 8, seed)]
    prompts = write_parquet(out / "prompts.parquet", rows)
    drop = ("sft.num_examples", "sft.demo_quality", "rm.num_pairs")
    return {
        "sft": [o for o in SFT if not o.startswith(drop)] + ["model=hf", f"model.policy={folder}", f"sft.path={demos}"],
        "rm": [o for o in RM if not o.startswith(drop)] + [f"rm.path={pairs}"],
        "ppo": [o.replace("letters_reward", "letters_label_reward") for o in PPO]
        + ["task=file", f"task.path={prompts}", "task.label_column=reward_model.ground_truth", "task.max_prompt_tokens=64"],
    }


def one_seed(seed: int, out: Path, chat: bool = False) -> dict:
    base = out / f"seed_{seed}"
    stages = chat_data(base / "data", seed) if chat else {"sft": SFT, "rm": RM, "ppo": PPO}
    seconds = {"sft": train(base / "sft", stages["sft"] + [f"seed={seed}"])}
    policy, reward_model = base / "sft" / "final" / "policy", base / "rm" / "final" / "reward_model"
    # The reward model starts from the SFT policy's weights (a fresh score head), as in InstructGPT.
    seconds["reward_model"] = train(base / "rm", stages["rm"] + [f"seed={seed}", "model=hf", f"model.policy={policy}"])
    ppo = stages["ppo"] + [f"seed={seed}", "model=hf", f"model.policy={policy}", "reward=model", f"model.reward_model={reward_model}"]
    seconds["ppo"] = train(base / "ppo", ppo)
    rm_val = [r for r in rows(base / "rm") if "val/accuracy" in r][-1]
    before = json.loads((base / "ppo" / "logs" / "val_before_training.json").read_text())
    curve = [{"step": r["step"], "proxy": r["val/reward"], "gold": r["val/reward_gold"], "kl": r.get("val/kl")} for r in rows(base / "ppo") if "val/reward" in r]
    return {
        "seed": seed,
        "rm_val_accuracy": rm_val["val/accuracy"],
        "sft_val_loss": [r for r in rows(base / "sft") if "val/loss" in r][-1]["val/loss"],
        "sft_gold": before["val/reward_gold"],
        "sft_proxy": before["val/reward"],
        "rl_gold": curve[-1]["gold"],
        "rl_proxy": curve[-1]["proxy"],
        "rl_kl": curve[-1]["kl"],
        "curve": curve,
        "seconds": seconds,
    }


def table(results: list[dict]) -> str:
    lines = [
        "| seed | RM held-out accuracy | SFT gold | RL gold | SFT proxy | RL proxy | KL to SFT | minutes |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        lines.append(
            f"| {r['seed']} | {r['rm_val_accuracy']:.3f} | {r['sft_gold']:+.3f} | {r['rl_gold']:+.3f} | {r['sft_proxy']:+.3f} | "
            f"{r['rl_proxy']:+.3f} | {r['rl_kl']:.2f} | {sum(r['seconds'].values()) / 60:.1f} |"
        )
    for key in ("rm_val_accuracy", "sft_gold", "rl_gold"):
        values = [r[key] for r in results]
        spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
        lines.append(f"\n{key}: mean {statistics.mean(values):+.3f}{spread}")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("outputs/pipeline"))
    parser.add_argument("--chat", action="store_true", help="a chat model with message-list data (TRL's and verl's layouts)")
    args = parser.parse_args()
    results = []
    for seed in args.seeds:
        results.append(one_seed(seed, args.out, args.chat))
        print(f"seed {seed}: " + json.dumps({k: v for k, v in results[-1].items() if k != "curve"}), flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "pipeline.json").write_text(json.dumps(results, indent=1))
    print(table(results))
    beats = all(r["rm_val_accuracy"] >= 0.5 + RM_MARGIN_OVER_CHANCE for r in results)
    improves = all(r["rl_gold"] > r["sft_gold"] for r in results)
    print(f"\nreward model beats chance by >= {RM_MARGIN_OVER_CHANCE} on every seed: {beats}; RL gold > SFT gold on every seed: {improves}")


if __name__ == "__main__":
    main()
