"""rlhand-compare DIR... : plots and a markdown table comparing the runs found under DIRs, and the
A/B tables of any rlhand-eval results found there."""

import argparse
import sys
from pathlib import Path

from rlhand.compare.evaluations import ab_tables, find_evaluations
from rlhand.compare.plots import plot_comparison
from rlhand.compare.runs import distinguishing_keys, find_runs, group_runs
from rlhand.compare.summary import markdown_table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="rlhand-compare", description=__doc__)
    parser.add_argument("dirs", nargs="+", type=Path, help="run folders, sweep folders, or folders holding them")
    parser.add_argument(
        "--group-by",
        default=None,
        help="config keys, comma-separated (default: every key whose value differs between the runs, except the seed)",
    )
    parser.add_argument("--threshold", type=float, default=0.25, help="reward/mean threshold for samples/seconds-to-threshold")
    parser.add_argument("--window", type=int, default=5, help="moving-average window (iterations)")
    parser.add_argument("--out", type=Path, default=Path("outputs/compare"))
    args = parser.parse_args(argv)
    missing = [str(d) for d in args.dirs if not d.exists()]
    if missing:
        print(f"rlhand-compare: error: no such folder: {', '.join(missing)}", file=sys.stderr)
        return 2
    runs, evaluations = find_runs(args.dirs), find_evaluations(args.dirs)
    if not runs and evaluations:
        return write_summary(ab_tables(evaluations), args.out, [])
    if not runs:
        print(f"rlhand-compare: error: no runs (logs/metrics.jsonl + training_config.json) under {', '.join(map(str, args.dirs))}", file=sys.stderr)
        return 2
    supervised = [run for run in runs if run.config.get("stage", "ppo") != "ppo"]
    if supervised:
        # Their figures are losses and accuracies, not rewards: each run's own plots/ and metrics.jsonl have them.
        print(f"rlhand-compare: note: skipping {len(supervised)} run(s) of stage=sft or stage=reward_model; it compares RL runs", file=sys.stderr)
        runs = [run for run in runs if run not in supervised]
        if not runs:
            print("rlhand-compare: error: no RL runs to compare", file=sys.stderr)
            return 2
    for run in runs:
        for note in run.notes:
            print(f"rlhand-compare: warning: {run.path}: {note}", file=sys.stderr)
    if args.group_by is None:
        keys = distinguishing_keys(runs)
    else:
        keys = [key.strip() for key in args.group_by.split(",") if key.strip()]
    groups = group_runs(runs, keys)
    paths = plot_comparison(groups, args.out, args.threshold, args.window)
    table = markdown_table(groups, args.threshold, args.window)
    if evaluations:
        table += "\n\n" + ab_tables(evaluations)
    return write_summary(table, args.out, paths, f" ({len(runs)} runs in {len(groups)} groups)")


def write_summary(table: str, out: Path, paths: list, counts: str = "") -> int:
    out.mkdir(parents=True, exist_ok=True)
    (out / "summary.md").write_text(table, encoding="utf-8")
    print(table)
    print(f"wrote {', '.join(str(p) for p in [*paths, out / 'summary.md'])}{counts}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
