"""The supervised stages at a real shape (docs/memory.md): SFT and a reward model on the
Qwen2.5-0.5B-shaped folder (its config, random weights, a 2,000-token BPE tokenizer; vocab 151,936),
with LoRA as memory=8gb sets it; the estimate printed before models load against the peak RSS.

    python scripts/supervised_real_shape.py --root /tmp/real_shape
"""

import argparse
import json
import random
import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from tests.real_shape import QWEN25, write_model_folder  # noqa: E402

ESTIMATE = re.compile(r"memory estimate: ([0-9.]+) GiB")
LORA = ["model.lora.enabled=true", "model.lora.rank=16", "model.gradient_checkpointing=true", "model.frozen_dtype=bfloat16", "trainer.autocast=bfloat16"]
RUNS = {
    "sft": ["stage=sft", "sft.batch_size=8", "sft.max_completion_tokens=128"],
    "reward_model": ["stage=reward_model", "rm.batch_size=8", "rm.max_completion_tokens=128"],
}


def words(rng: random.Random, n: int) -> str:
    return " ".join("".join(rng.choice("abcdefghij") for _ in range(rng.randint(2, 7))) for _ in range(n))


def write_data(root: Path) -> tuple[Path, Path]:
    rng = random.Random(0)
    demos, pairs = root / "demos.jsonl", root / "pairs.jsonl"
    demos.write_text("".join(json.dumps({"prompt": words(rng, rng.randint(8, 24)), "completion": words(rng, rng.randint(8, 24))}) + "\n" for _ in range(64)))
    pairs.write_text("".join(json.dumps({"prompt": words(rng, rng.randint(8, 24)), "chosen": words(rng, 12), "rejected": words(rng, 12)}) + "\n" for _ in range(64)))
    return demos, pairs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--root", type=Path, default=Path("/tmp/real_shape"))
    parser.add_argument("--steps", type=int, default=3)
    args = parser.parse_args()
    folder = args.root / "qwen2.5-0.5b"
    if not (folder / "config.json").exists():
        write_model_folder(folder, QWEN25["qwen2.5-0.5b"])
    demos, pairs = write_data(args.root)
    for name, overrides in RUNS.items():
        run_dir = args.root / "runs" / f"{name}"
        data = f"sft.path={demos}" if name == "sft" else f"rm.path={pairs}"
        cmd = [sys.executable, "-m", "rlhand.train", "model=hf", f"model.policy={folder}", data, *LORA, *overrides, f"trainer.max_steps={args.steps}", "logging=plain", f"hydra.run.dir={run_dir}", "trainer.save_final=false"]
        out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
        if out.returncode != 0:
            print(f"{name}: {out.stderr.strip().splitlines()[-1]}")
            continue
        rows = [json.loads(line) for line in (run_dir / "logs" / "metrics.jsonl").read_text().splitlines()]
        estimate = float(ESTIMATE.search(out.stderr).group(1))
        peak = max(r["memory/rss_peak_mb"] for r in rows) / 1024
        seconds = sorted(r["time/iteration_s"] for r in rows[1:] or rows)[len(rows[1:] or rows) // 2]
        print(json.dumps({"run": name, "estimate_gib": estimate, "peak_gib": round(peak, 2), "ratio": round(estimate / peak, 2), "s_per_step": round(seconds, 2)}))


if __name__ == "__main__":
    main()
