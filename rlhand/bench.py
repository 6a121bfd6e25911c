"""rlhand-bench: time PPO iterations on a fixed configuration (conf/experiment/bench.yaml).

A benchmark, not a test: it runs `--warmup` untimed and `--iters` timed iterations of the real
trainer and prints the median wall time per iteration, generated tokens per second, peak RSS and
the phase split; `--json` keeps the raw figures, `--compare` prints the ratio to a TRL peer JSON
(../shared/peers/trl_ppo/bench_trl_ppo.py --json). Hydra overrides follow the options:

    rlhand-bench --iters 5 --json outputs/bench/rlhand.json model.n_layer=8 algo.ppo_epochs=2
"""

import argparse
import json
import platform
import statistics
import sys
import tempfile
from pathlib import Path

import torch
from hydra import compose, initialize_config_dir
from hydra.core.global_hydra import GlobalHydra

PHASES = [
    ("rollout_s", "rollout (sample + score)"),
    ("generate_s", "  generate (KV cache)"),
    ("score_ref_s", "  reference forward"),
    ("score_value_s", "  value forward"),
    ("score_reward_s", "  reward forward"),
    ("advantages_s", "advantages (KL reward, GAE, whitening)"),
    ("update_s", "update (epochs x minibatches)"),
    ("update_forward_s", "  forward (policy + critic)"),
    ("update_backward_s", "  backward"),
    ("optimizer_step_s", "  optimizer step"),
]


def compose_bench_config(overrides: list[str]):
    from rlhand.config import load_config, register_configs
    from rlhand.train import conf_dir

    register_configs()
    GlobalHydra.instance().clear()
    with initialize_config_dir(config_dir=conf_dir(), version_base="1.3"):
        return load_config(compose(config_name="train", overrides=["experiment=bench", *overrides]))


def run_bench(overrides: list[str], iters: int, warmup: int) -> dict:
    from rlhand.reporting.memory import memory_stats, reset_peak_memory
    from rlhand.stages import build_run

    cfg = compose_bench_config(overrides)
    with tempfile.TemporaryDirectory() as run_dir:
        run = build_run(cfg, Path(run_dir))
        rows = []
        reset_peak_memory(run.device)
        for step in range(1, warmup + iters + 1):
            rows.append({**run.stage.step(step), **memory_stats(run.device)})
        run.stage.close()
    timed = rows[warmup:]

    def median(key: str) -> float:
        return statistics.median(row.get(f"time/{key}", 0.0) for row in timed)

    wall = [row["time/iteration_s"] for row in timed]
    tokens = statistics.median(row["response/generated_tokens"] for row in timed)
    return {
        "config": {"overrides": overrides, "iters": iters, "warmup": warmup, "threads": torch.get_num_threads()},
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "cpu": platform.processor() or platform.machine()},
        "iterations": [{k: v for k, v in row.items() if k.startswith(("time/", "response/", "memory/"))} for row in timed],
        "summary": {
            "median_wall_s_per_iter": statistics.median(wall),
            "mean_wall_s_per_iter": statistics.fmean(wall),
            "min_wall_s_per_iter": min(wall),
            "max_wall_s_per_iter": max(wall),
            "gen_tokens_per_iter": tokens,
            "median_gen_tok_per_s_end_to_end": tokens / statistics.median(wall),
            "median_gen_tok_per_s_generate_only": tokens / median("generate_s"),
            "median_phase_s": {key: median(key) for key, _ in PHASES},
            "optimizer_steps_per_iter": statistics.median(row["policy/optimizer_steps"] for row in timed),
            "peak_rss_mib": max(row["memory/rss_peak_mb"] for row in timed),
        },
    }


def report(result: dict, trl: dict | None) -> str:
    s = result["summary"]
    wall = s["median_wall_s_per_iter"]
    lines = [
        f"wall s / PPO iteration (median): {wall:.3f}  [mean {s['mean_wall_s_per_iter']:.3f}, "
        f"min {s['min_wall_s_per_iter']:.3f}, max {s['max_wall_s_per_iter']:.3f}]",
        f"generated tokens / iteration   : {s['gen_tokens_per_iter']:.0f}",
        f"generated tokens / s end-to-end: {s['median_gen_tok_per_s_end_to_end']:.1f}",
        f"generated tokens / s (generate only): {s['median_gen_tok_per_s_generate_only']:.1f}",
    ]
    for key, label in PHASES:
        seconds = s["median_phase_s"][key]
        lines.append(f"  {label:<40} {seconds:7.3f} s  ({100 * seconds / wall:5.1f}% of median wall)")
    lines.append(f"optimizer steps / iteration    : {s['optimizer_steps_per_iter']:.0f}")
    lines.append(f"peak RSS                       : {s['peak_rss_mib']:.1f} MiB")
    if trl is not None:
        peer = trl["summary"]["median_wall_s_per_iter"]
        lines.append(f"TRL PPOTrainer (peer JSON)     : {peer:.3f} s / iteration -> rlhand is {peer / wall:.2f}x TRL's iterations per second")
    return "\n".join(lines)


def rounds_table(folder: Path) -> str:
    """A markdown table from interleaved rounds (scripts/bench_rounds.sh): files named
    r<round>_<setting>.json, one of the settings `trl`. Each run is compared with the TRL run of
    its own round, because the machine's speed drifts between rounds."""
    runs: dict[str, dict[int, dict]] = {}
    for path in sorted(Path(folder).glob("r*_*.json")):
        head, _, setting = path.stem.partition("_")
        runs.setdefault(setting, {})[int(head[1:])] = json.loads(path.read_text(encoding="utf-8"))["summary"]
    if "trl" not in runs:
        raise ValueError(f"{folder}: no r<N>_trl.json to compare with")
    rounds = sorted(runs["trl"])
    lines = [
        "| setting | s / iteration, per round | median | vs TRL, per round | median vs TRL | peak RSS |",
        "| --- | --- | --- | --- | --- | --- |",
    ]

    def median_wall(setting: str) -> float:
        return statistics.median(summary["median_wall_s_per_iter"] for summary in runs[setting].values())

    for setting in sorted(runs, key=median_wall, reverse=True):  # slowest first
        by_round = runs[setting]
        common = [r for r in rounds if r in by_round]
        walls = [by_round[r]["median_wall_s_per_iter"] for r in common]
        ratios = [runs["trl"][r]["median_wall_s_per_iter"] / by_round[r]["median_wall_s_per_iter"] for r in common]
        rss = max(by_round[r]["peak_rss_mib"] for r in common)
        lines.append(
            f"| {setting} | {', '.join(f'{w:.3f}' for w in walls)} | {statistics.median(walls):.3f} | "
            f"{', '.join(f'{x:.2f}x' for x in ratios)} | **{statistics.median(ratios):.2f}x** | {rss:.0f} MiB |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlhand-bench", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=5, help="timed PPO iterations")
    parser.add_argument("--warmup", type=int, default=1, help="untimed iterations first")
    parser.add_argument("--json", type=Path, default=None, help="write the raw figures here")
    parser.add_argument("--compare", type=Path, default=None, help="a TRL peer JSON to compare with")
    parser.add_argument("--table", type=Path, default=None, help="only print the table of a rounds folder (scripts/bench_rounds.sh)")
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, e.g. model.n_layer=8")
    args = parser.parse_args(argv)
    if args.table:
        try:
            print(rounds_table(args.table))
        except (OSError, ValueError, KeyError) as err:
            print(f"rlhand-bench: error: {err}", file=sys.stderr)
            return 2
        return 0
    trl = json.loads(args.compare.read_text()) if args.compare else None
    try:
        result = run_bench(args.overrides, args.iters, args.warmup)
    except ValueError as err:  # config and input errors: one line, as rlhand-train
        print(f"rlhand-bench: error: {err}", file=sys.stderr)
        return 2
    print(report(result, trl))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=1), encoding="utf-8")
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
