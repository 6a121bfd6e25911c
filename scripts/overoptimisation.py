"""Reward over-optimisation on the offline pipeline: proxy and gold against √KL for reward models
trained on different numbers of pairs, and with rlhand's KL controls: a fixed coefficient, the adaptive
controller (two horizons) and the KL as a loss term (docs/results/overoptimisation.md).

    python scripts/overoptimisation.py --seeds 0 1 2 --out outputs/overoptimisation
"""

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from pipeline import RM, SFT, rows, train  # noqa: E402

PPO = ["trainer.max_steps=150", "eval.every=10", "eval.num_prompts=64", "eval.before_training=true", "eval.samples=0",
       "+eval.scorers.gold._target_=rlhand.tasks.letters.letters_reward"]  # fmt: skip
CONDITIONS = {
    "rm_1024_fixed": (1024, ["algo.kl_coef=0.02"]),
    "rm_8192_fixed": (8192, ["algo.kl_coef=0.02"]),
    "rm_8192_adaptive": (8192, ["algo.kl_coef=0.02", "algo.kl_control=adaptive", "algo.kl_target=2.0"]),
    # The same controller able to move: 0.2 x 64 / 1000 a step, up to ~7x over the run (10000: ~1.2x).
    "rm_8192_adaptive_h1000": (8192, ["algo.kl_coef=0.02", "algo.kl_control=adaptive", "algo.kl_target=2.0", "algo.kl_horizon=1000"]),
    # The KL as a loss term (GRPO's placement) instead of a token reward, same coefficient.
    "rm_8192_kl_loss": (8192, ["algo.kl_coef=0.02", "algo.kl_placement=loss"]),
}


def curve(run: Path) -> list[dict]:
    start = json.loads((run / "logs" / "val_before_training.json").read_text())
    points = [{"step": 0, "proxy": start["val/reward"], "gold": start["val/reward_gold"], "kl": start.get("val/kl", 0.0)}]
    points += [{"step": r["step"], "proxy": r["val/reward"], "gold": r["val/reward_gold"], "kl": r["val/kl"]} for r in rows(run) if "val/reward" in r]
    return points


def one_seed(seed: int, out: Path) -> dict:
    base = out / f"seed_{seed}"
    train(base / "sft", SFT + [f"seed={seed}"])
    policy = base / "sft" / "final" / "policy"
    results, accuracy = {}, {}
    for pairs in sorted({p for p, _ in CONDITIONS.values()}):
        rm_run = base / f"rm_{pairs}"
        train(rm_run, [o for o in RM if not o.startswith("rm.num_pairs")] + [f"rm.num_pairs={pairs}", f"seed={seed}", "model=hf", f"model.policy={policy}"])
        accuracy[pairs] = [r for r in rows(rm_run) if "val/accuracy" in r][-1]["val/accuracy"]
    for name, (pairs, extra) in CONDITIONS.items():
        run = base / name
        rm = base / f"rm_{pairs}" / "final" / "reward_model"
        train(run, PPO + extra + [f"seed={seed}", "model=hf", f"model.policy={policy}", "reward=model", f"model.reward_model={rm}"])
        results[name] = {"rm_pairs": pairs, "rm_accuracy": accuracy[pairs], "curve": curve(run)}
    return results


def summary(all_seeds: list[dict]) -> str:
    lines = ["| condition | RM accuracy | start gold | peak gold (√KL) | last gold (√KL) | start proxy | last proxy |", "|---|---|---|---|---|---|---|"]
    for name in CONDITIONS:
        runs = [s[name] for s in all_seeds]
        def avg(f):
            return statistics.mean(f(r) for r in runs)
        peak = [max(r["curve"], key=lambda p: p["gold"]) for r in runs]
        lines.append(
            f"| {name} | {avg(lambda r: r['rm_accuracy']):.3f} | {avg(lambda r: r['curve'][0]['gold']):+.3f} | "
            f"{statistics.mean(p['gold'] for p in peak):+.3f} ({statistics.mean(math.sqrt(max(p['kl'], 0)) for p in peak):.2f}) | "
            f"{avg(lambda r: r['curve'][-1]['gold']):+.3f} ({avg(lambda r: math.sqrt(max(r['curve'][-1]['kl'], 0))):.2f}) | "
            f"{avg(lambda r: r['curve'][0]['proxy']):+.3f} | {avg(lambda r: r['curve'][-1]['proxy']):+.3f} |"
        )
    return "\n".join(lines)


def plot(all_seeds: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    cols = 3
    rows = math.ceil(len(CONDITIONS) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(CONDITIONS) :]:
        ax.axis("off")
    for ax, name in zip(axes.flat, CONDITIONS):
        for s, seed_runs in enumerate(all_seeds):
            points = seed_runs[name]["curve"]
            x = [math.sqrt(max(p["kl"], 0)) for p in points]
            ax.plot(x, [p["gold"] for p in points], "o-", color="C0", alpha=0.7, label="gold" if s == 0 else None)
            ax.plot(x, [p["proxy"] for p in points], "s--", color="C1", alpha=0.7, label="proxy (reward model)" if s == 0 else None)
        ax.set_title(name)
        ax.set_xlabel("√KL to the SFT reference (nats per response)")
        ax.set_ylabel("score")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--out", type=Path, default=Path("outputs/overoptimisation"))
    args = parser.parse_args()
    all_seeds = []
    for seed in args.seeds:
        all_seeds.append(one_seed(seed, args.out))
        print(f"seed {seed} done", flush=True)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "overoptimisation.json").write_text(json.dumps(all_seeds, indent=1))
    plot(all_seeds, args.out / "overoptimisation.png")
    print(summary(all_seeds))


if __name__ == "__main__":
    main()
