"""Generated text a person can read: at each validation, the first eval.samples held-out prompts
with their responses and scores go to logs/samples.jsonl (one JSON object per sample: step,
prompt, response, scores) and TensorBoard text; the console shows the first, truncated. A resumed
run drops the rows an interrupted run wrote past its checkpoint, as metrics.jsonl does."""

import json
import os
from pathlib import Path

SHOWN_CHARS = 120  # of a sample on the console


class SamplesFile:
    def __init__(self, path: Path, resumed_step: int):
        self.path = path
        if path.exists():
            # A resume keeps what its checkpoint's trajectory wrote: rows up to its step (none when it
            # starts again from step 0, whose validation before training runs again); a line cut by
            # a kill is dropped. Rewritten through a temporary file, so a second kill loses nothing.
            kept = [line for line in path.read_text(encoding="utf-8").splitlines() if resumed_step > 0 and 0 <= _step(line) <= resumed_step]
            tmp = path.with_suffix(".jsonl.tmp")
            tmp.write_text("".join(line + "\n" for line in kept), encoding="utf-8")
            os.replace(tmp, path)

    def write(self, step: int, samples: list[dict]) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            for sample in samples:
                handle.write(json.dumps({"step": step, **sample}, ensure_ascii=False) + "\n")


def _step(line: str) -> int:
    """A row's step; -1 for a line that is not a whole row (cut by a kill)."""
    try:
        return int(json.loads(line)["step"])
    except (ValueError, KeyError, TypeError):
        return -1


def console_line(sample: dict) -> str:
    scores = ", ".join(f"{k} {v:+.3f}" for k, v in sample["scores"].items())
    text = (sample["prompt"] + " | " + sample["response"]).replace("\n", "\\n")
    return f"sample: {text[:SHOWN_CHARS]}{'...' if len(text) > SHOWN_CHARS else ''}  ({scores})"


def markdown(samples: list[dict]) -> str:
    """TensorBoard's text panel: a table of the step's samples."""
    rows = ["| split | prompt | response | scores |", "|---|---|---|---|"]
    for s in samples:
        cells = [s.get("split", "val"), s["prompt"], s["response"], ", ".join(f"{k} {v:+.3f}" for k, v in s["scores"].items())]
        rows.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(rows)
