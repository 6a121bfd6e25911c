"""Generated text a person can read: at each validation, the first eval.samples held-out prompts
with their responses and scores go to logs/samples.jsonl (one JSON object per sample: step,
prompt, response, scores) and TensorBoard text; the console shows the first, truncated. A resumed
run drops the rows an interrupted run wrote past its checkpoint, as metrics.jsonl does."""

import json
from pathlib import Path

SHOWN_CHARS = 120  # of a sample on the console


class SamplesFile:
    def __init__(self, path: Path, resumed_step: int):
        self.path = path
        if path.exists():  # a resume keeps what its checkpoint's trajectory wrote, a fresh run nothing
            kept = [line for line in path.read_text(encoding="utf-8").splitlines() if line.strip() and json.loads(line)["step"] <= resumed_step]
            path.write_text("".join(line + "\n" for line in kept), encoding="utf-8")

    def write(self, step: int, samples: list[dict]) -> None:
        with self.path.open("a", encoding="utf-8") as handle:
            for sample in samples:
                handle.write(json.dumps({"step": step, **sample}, ensure_ascii=False) + "\n")


def console_line(sample: dict) -> str:
    scores = ", ".join(f"{k} {v:+.3f}" for k, v in sample["scores"].items())
    text = (sample["prompt"] + " | " + sample["response"]).replace("\n", "\\n")
    return f"sample: {text[:SHOWN_CHARS]}{'...' if len(text) > SHOWN_CHARS else ''}  ({scores})"


def markdown(samples: list[dict]) -> str:
    """TensorBoard's text panel: a table of the step's samples."""
    rows = ["| prompt | response | scores |", "|---|---|---|"]
    for s in samples:
        cells = [s["prompt"], s["response"], ", ".join(f"{k} {v:+.3f}" for k, v in s["scores"].items())]
        rows.append("| " + " | ".join(c.replace("|", "\\|").replace("\n", " ") for c in cells) + " |")
    return "\n".join(rows)
