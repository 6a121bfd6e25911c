"""rlhand-eval's A/B results found beside the runs (a folder with summary.json and samples.jsonl),
as markdown tables under the run table: each pair, by each scorer, its win rate with the bootstrap
95% interval, ties and the length-controlled win rate."""

import json
from pathlib import Path

from rlhand.evaluation.ab import ab_results

EVAL_FILES = ("summary.json", "samples.jsonl")  # what rlhand-eval writes into its --out folder


def find_evaluations(dirs: list[Path]) -> list[Path]:
    found = []
    for root in dirs:
        for summary in sorted([root / "summary.json", *root.rglob("summary.json")]):
            folder = summary.parent
            if summary.is_file() and all((folder / f).is_file() for f in EVAL_FILES) and folder not in found:
                found.append(folder)
    return found


def ab_tables(folders: list[Path]) -> str:
    sections = []
    for folder in folders:
        try:
            summary = json.loads((folder / "summary.json").read_text(encoding="utf-8"))
            pairs = summary["ab"]
        except (OSError, ValueError, KeyError):
            sections.append(f"### {folder}\n\nnot an rlhand-eval summary (unreadable or without 'ab')")
            continue
        lines = [
            f"### A/B: {folder} ({summary.get('prompts', '?')} prompts, seed {summary.get('seed', '?')})",
            "",
            "| pair | scorer | win rate | 95% interval | ties | length-controlled |",
            "|---|---|---|---|---|---|",
        ]
        for pair, scorer, win, low, high, ties, controlled in ab_results(pairs):
            lines.append(f"| {pair} | {scorer} | {win:.3f} | [{low:.3f}, {high:.3f}] | {ties:.2f} | {controlled:.3f} |")
        if not pairs:
            lines.append("| (one policy: nothing to compare) | | | | | |")
        sections.append("\n".join(lines))
    return "\n\n".join(sections)
