"""PPO iterations at real model shapes on this machine: the memory estimate against the measured
peak, and seconds per phase (docs/memory.md, docs/distributed.md).

    python scripts/real_shape_runs.py                       # every run below (~20 min on 2 cores)
    python scripts/real_shape_runs.py lora_05b full_05b     # some of them
    python scripts/real_shape_runs.py --list

Each run writes a Qwen2.5-shaped folder (its config, random weights, a small BPE tokenizer:
tests/real_shape.py; nothing downloaded) once under --root, then runs `rlhand-train` (or torchrun
with 2 ranks) for a few iterations in a fresh process. Measured: the largest per-iteration peak RSS
(memory/rss_peak_mb; with ranks the largest rank's) and the median seconds per phase over the
iterations after the first.
"""

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.real_shape import QWEN25, write_model_folder, write_prompts  # noqa: E402

ESTIMATE = re.compile(r"memory estimate: ([0-9.]+) GiB per device")
# 8 prompts of ~32 tokens, 32 new tokens, one minibatch, one epoch: short lengths that a 0.5B model
# with a critic trains at on 24 GB with LoRA. The reward model of these runs is a function.
SHORT = [
    "task=file", "task.max_prompt_tokens=32", "generation.max_new_tokens=32", "algo.rollout_batch_size=8", "algo.num_minibatches=1",
    "algo.ppo_epochs=1", "algo.grad_accum_steps=1", "model.critic_init=policy", "reward.function._target_=tests.real_shape.length_reward",
    "trainer.save_final=false", "logging=plain", "trainer.fit_check=warn", "trainer.threads=2",
]
RUNS = {
    # name: (shape, extra overrides, ranks, iterations)
    # memory=8gb sets model.quantization=nf4 since 2026-12-05; model.quantization=none keeps the runs measured before.
    "lora_05b": ("qwen2.5-0.5b", ["memory=8gb", "model.quantization=none", "algo.grad_accum_steps=1"], 1, 3),
    "qlora_05b": ("qwen2.5-0.5b", ["memory=8gb", "algo.grad_accum_steps=1"], 1, 3),
    "qlora_05b_fp32": ("qwen2.5-0.5b", ["model.lora.enabled=true", "model.quantization=nf4"], 1, 3),
    "full_05b_int8_ref": ("qwen2.5-0.5b", ["model.gradient_checkpointing=true", "model.frozen_dtype=bfloat16", "model.frozen_quantization=int8"], 1, 2),
    "qlora_15b": ("qwen2.5-1.5b", ["memory=8gb", "algo.grad_accum_steps=1"], 1, 2),
    "lora_05b_bf16": ("qwen2.5-0.5b", ["model.lora.enabled=true", "model.frozen_dtype=bfloat16", "trainer.autocast=bfloat16"], 1, 3),
    "lora_05b_fp32": ("qwen2.5-0.5b", ["model.lora.enabled=true"], 1, 3),
    "full_05b": ("qwen2.5-0.5b", ["model.gradient_checkpointing=true", "model.frozen_dtype=bfloat16"], 1, 2),
    "lora_15b": ("qwen2.5-1.5b", ["memory=8gb", "model.quantization=none", "algo.grad_accum_steps=1"], 1, 2),
    "lora_05b_2ranks": ("qwen2.5-0.5b", ["memory=8gb", "model.quantization=none", "algo.grad_accum_steps=1", "trainer.threads=1"], 2, 3),
    # generation.engine=vllm: run these with --python .venv-vllm/bin/python (make install-vllm)
    "vllm_lora_05b_adapters": ("qwen2.5-0.5b", ["memory=8gb", "model.quantization=none", "algo.grad_accum_steps=1", "generation.engine=vllm", "generation.vllm_lora=adapters"], 1, 3),
    "vllm_lora_05b_merged": ("qwen2.5-0.5b", ["memory=8gb", "model.quantization=none", "algo.grad_accum_steps=1", "generation.engine=vllm", "generation.vllm_lora=merged"], 1, 3),
    "full_05b_2ranks": ("qwen2.5-0.5b", ["model.gradient_checkpointing=true", "model.frozen_dtype=bfloat16", "trainer.threads=1"], 2, 2),
}


def folder_for(root: Path, shape: str) -> Path:
    folder = root / shape
    if not (folder / "config.json").exists():
        write_model_folder(folder, QWEN25[shape])
    return folder


def run(name: str, root: Path, extra: list[str], python: str) -> dict:
    shape, overrides, ranks, steps = RUNS[name]
    policy = folder_for(root, shape)
    prompts = root / "prompts.jsonl"
    if not prompts.exists():
        write_prompts(prompts, 256, 24)
    run_dir = root / "runs" / f"{name}-{int(time.time())}"
    args = ["model=hf", f"model.policy={policy}", f"task.path={prompts}", *SHORT, *overrides, f"trainer.max_steps={steps}", f"hydra.run.dir={run_dir}", *extra]
    bin_dir = Path(python).parent
    if ranks > 1:
        cmd = [str(bin_dir / "torchrun"), "--nproc-per-node", str(ranks), "-m", "rlhand.train", *args]
    else:
        cmd = [python, "-m", "rlhand.train", *args]
    started = time.perf_counter()
    out = subprocess.run(cmd, capture_output=True, text=True, cwd=REPO, env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin", "HF_HUB_OFFLINE": "1"})
    wall = time.perf_counter() - started
    if out.returncode != 0:
        return {"run": name, "error": out.stderr.strip().splitlines()[-1] if out.stderr.strip() else f"exit {out.returncode}"}
    rows = [json.loads(line) for line in (run_dir / "logs" / "metrics.jsonl").read_text().splitlines()]
    later = rows[1:] or rows
    med = lambda key: sorted(r.get(key, 0.0) for r in later)[len(later) // 2]  # noqa: E731
    phases = {k.removeprefix("time/").removesuffix("_s"): round(med(k), 2) for k in rows[0] if k.startswith("time/") and k.endswith("_s")}
    estimate = ESTIMATE.search(out.stderr)
    return {
        "run": name,
        "shape": shape,
        "ranks": ranks,
        "estimate_gib": float(estimate.group(1)) if estimate else None,
        "peak_gib": max(r["memory/rss_peak_mb"] for r in rows) / 1024,
        "iteration_s": med("time/iteration_s"),
        "phases_s": phases,
        "wall_s": wall,
        "reward": [r["reward/mean"] for r in rows],
        "ratio_first_minibatch": rows[0].get("policy/ratio_first_minibatch"),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", help=", ".join(RUNS))
    parser.add_argument("--root", type=Path, default=Path("/tmp/rlhand-real-shape"))
    parser.add_argument("--python", default=sys.executable, help="the venv to run in (e.g. .venv-vllm/bin/python)")
    parser.add_argument("--json", type=Path)
    parser.add_argument("--list", action="store_true")
    parser.add_argument("--extra", default="", help="overrides added to every run")
    args = parser.parse_args()
    if args.list:
        print("\n".join(f"{name}: {RUNS[name]}" for name in RUNS))
        return
    args.root.mkdir(parents=True, exist_ok=True)
    results = []
    print("| run | ranks | estimate GiB | measured peak GiB | est / measured | s / iteration | phases (s) |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for name in args.runs or RUNS:
        r = run(name, args.root, args.extra.split(), args.python)
        results.append(r)
        if "error" in r:
            print(f"| {name} | failed: {r['error']} |", flush=True)
            continue
        phases = ", ".join(f"{k} {v}" for k, v in r["phases_s"].items() if v >= 0.05 and k not in ("iteration", "rollout", "update"))
        ratio = r["estimate_gib"] / r["peak_gib"] if r["estimate_gib"] else float("nan")
        print(
            f"| {name} | {r['ranks']} | {r['estimate_gib']} | {r['peak_gib']:.2f} | {ratio:.2f} | {r['iteration_s']:.1f} | {phases} |",
            flush=True,
        )
    if args.json:
        args.json.write_text(json.dumps(results, indent=1))


if __name__ == "__main__":
    main()
