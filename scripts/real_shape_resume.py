"""kill -9 of every rank mid-run, then `resume=auto`, at a real shape: the resumed run must end bit
for bit like an uninterrupted one (docs/distributed.md).

    python scripts/real_shape_resume.py [--shape qwen2.5-0.5b] [--ranks 2] [--steps 4]

A LoRA run (memory=8gb) of the Qwen2.5-shaped folder that scripts/real_shape_runs.py writes, with
a checkpoint every iteration: once straight through, once killed (SIGKILL to torchrun's whole
process group) after its second checkpoint and rerun with resume=auto into the same folder. Prints
whether every logged figure (times and memory aside) and the final adapter weights are identical.
"""

import argparse
import hashlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from scripts.real_shape_runs import SHORT, folder_for  # noqa: E402
from tests.real_shape import write_prompts  # noqa: E402


def command(args, ranks: int, run_dir: Path, extra: list[str]) -> list[str]:
    bin_dir = Path(sys.executable).parent
    prompts = args.root / "prompts.jsonl"
    if not prompts.exists():
        write_prompts(prompts, 256, 24)
    overrides = [
        "model=hf", f"model.policy={folder_for(args.root, args.shape)}", f"task.path={prompts}", *SHORT, "memory=8gb", "model.quantization=none", "algo.grad_accum_steps=1",
        "trainer.threads=1", f"trainer.max_steps={args.steps}", "checkpoint.every=1", "checkpoint.keep=3", "trainer.save_final=true",
        f"hydra.run.dir={run_dir}", *extra,
    ]
    return [str(bin_dir / "torchrun"), f"--nproc-per-node={ranks}", "--standalone", "-m", "rlhand.train", *overrides]


def fingerprint(run_dir: Path) -> tuple[list[dict], str]:
    rows = [json.loads(line) for line in (run_dir / "logs" / "metrics.jsonl").read_text().splitlines()]
    rows = [{k: v for k, v in row.items() if not k.startswith(("time/", "memory/"))} for row in rows]
    digest = hashlib.sha256()
    for path in sorted((run_dir / "final").rglob("*.safetensors")):
        digest.update(path.read_bytes())
    return rows, digest.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="qwen2.5-0.5b")
    parser.add_argument("--ranks", type=int, default=2)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--root", type=Path, default=Path("/tmp/rlhand-real-shape"))
    args = parser.parse_args()
    env = {**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    stamp = int(time.time())
    straight, killed = args.root / "runs" / f"resume-straight-{stamp}", args.root / "runs" / f"resume-killed-{stamp}"
    started = time.perf_counter()
    subprocess.run(command(args, args.ranks, straight, []), check=True, capture_output=True, env=env, cwd=REPO)
    print(f"uninterrupted run: {time.perf_counter() - started:.0f} s", flush=True)
    proc = subprocess.Popen(command(args, args.ranks, killed, []), env=env, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    while not (killed / "checkpoints" / "step_2" / "manifest.json").exists():
        if proc.poll() is not None:
            raise SystemExit("the run ended before its second checkpoint")
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)  # torchrun and every rank at once
    proc.wait()
    survivors = sorted(p.name for p in (killed / "checkpoints").iterdir())
    print(f"killed after step 2's checkpoint; checkpoints left: {survivors}", flush=True)
    subprocess.run(command(args, args.ranks, killed, ["resume=auto"]), check=True, capture_output=True, env=env, cwd=REPO)
    (rows_a, weights_a), (rows_b, weights_b) = fingerprint(straight), fingerprint(killed)
    same_rows = rows_a == rows_b
    print(f"metrics identical over {len(rows_a)} steps: {same_rows}; final weights identical: {weights_a == weights_b}")
    if not same_rows:
        for i, (a, b) in enumerate(zip(rows_a, rows_b)):
            diff = [k for k in a if a[k] != b.get(k)]
            if diff:
                print(f"  step {i + 1}: {diff[:5]}")
    raise SystemExit(0 if same_rows and weights_a == weights_b else 1)


if __name__ == "__main__":
    main()
