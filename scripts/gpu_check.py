"""The GPU check: PPO at the README's real-checkpoint shapes on one GPU, as `rlhand-train` runs them,
measured. Run through scripts/gpu_check.sh; planned to finish within 9 minutes on one H200.

Runs (Qwen2.5-shaped models built from their configs: random weights, a small BPE tokenizer,
nothing downloaded; tests/real_shape.py), 64 prompts of ~64 tokens, up to 256 new tokens, a
function reward, the critic from the policy, 3 iterations each, in this order:
  full_05b        0.5B, every weight trained                  (memory=24gb)
  lora_05b        0.5B, QLoRA (NF4 bases) on policy and critic (memory=16gb)
  lora_15b        1.5B, QLoRA                                  (memory=16gb)
  vllm_lora_05b   0.5B, LoRA, generation.engine=vllm           (only where vLLM imports)
then the tests marked `cuda`. Each run is timed; one that would not finish inside the budget
(--budget, 540 s) is skipped and said so. Prints per-phase seconds, generated tokens/s, end-to-end
tokens/s, MFU of the update and of the scoring forwards, peak CUDA memory against the memory
estimate; writes the same as JSON (--json).

    python scripts/gpu_check.py [--json out.json] [--budget 540] [--tiny]   # --tiny: small shapes, any device
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.real_shape import QWEN2_SMALL, QWEN25, write_model_folder, write_prompts  # noqa: E402

H200_BF16_PEAK = 989e12  # dense bf16 FLOP/s of an H100 / H200 SXM
COMMON = [
    "model=hf", "model.critic_init=policy", "task=file", "reward.function._target_=tests.real_shape.length_reward",
    "algo.rollout_batch_size=64", "algo.num_minibatches=4", "algo.ppo_epochs=1", "trainer.max_steps=3", "logging=plain",
    "trainer.save_final=false", "trainer.fit_check=warn", "model.attn_implementation=sdpa",
]
# name: (shape, overrides, seconds it is planned to take on an H200 before its first iteration is known)
RUNS = {
    "full_05b": ("qwen2.5-0.5b", ["memory=24gb"], 120),
    "lora_05b": ("qwen2.5-0.5b", ["memory=16gb"], 100),
    "lora_15b": ("qwen2.5-1.5b", ["memory=16gb"], 160),
    "vllm_lora_05b": ("qwen2.5-0.5b", ["memory=16gb", "model.quantization=none", "generation.engine=vllm", "generation.gpu_memory_utilization=0.3"], 120),
}
ESTIMATE = re.compile(r"memory estimate: ([0-9.]+) GiB per device")


def run(name: str, policy: Path, prompts: Path, overrides: list[str], lengths: list[str], root: Path) -> dict:
    run_dir = root / name
    args = [*COMMON, f"model.policy={policy}", f"task.path={prompts}", *lengths, *overrides, f"hydra.run.dir={run_dir}"]
    out = subprocess.run([sys.executable, "-m", "rlhand.train", *args], capture_output=True, text=True, cwd=REPO)
    if out.returncode != 0:
        return {"run": name, "error": (out.stderr.strip().splitlines() or [f"exit {out.returncode}"])[-1]}
    rows = [json.loads(line) for line in (run_dir / "logs" / "metrics.jsonl").read_text().splitlines()]
    estimate = ESTIMATE.search(out.stderr)
    return {"run": name, "rows": rows, "estimate_gib": float(estimate.group(1)) if estimate else None}


def summarize(result: dict, n_params: int, trained_params: int, peak_flops: float) -> dict:
    """Medians over the iterations after the first (warm-up: kernel selection, allocator growth)."""
    rows = result["rows"][1:] or result["rows"]
    med = lambda key: sorted(r.get(key, 0.0) for r in rows)[len(rows) // 2]  # noqa: E731
    generated = med("response/generated_tokens")
    tokens = rows[0]["samples/generated"] / len(result["rows"]) * (64 + med("response/length_mean"))  # prompt + response per iteration
    update_s = med("time/update_forward_s") + med("time/update_backward_s") + med("time/optimizer_step_s")
    scoring_s = med("time/score_ref_s") + med("time/score_value_s") + med("time/score_policy_s")
    return {
        "run": result["run"],
        "iteration_s": med("time/iteration_s"),
        "phases_s": {k.removeprefix("time/").removesuffix("_s"): round(med(k), 3) for k in rows[0] if k.startswith("time/") and k.endswith("_s")},
        "generated_tokens_per_s": generated / max(med("time/generate_s"), 1e-9),
        "end_to_end_tokens_per_s": generated / med("time/iteration_s"),
        # forward + backward of policy and critic through all their weights (LoRA too), 1 epoch
        "mfu_update": 6 * 2 * n_params * tokens / max(update_s, 1e-9) / peak_flops,
        "mfu_scoring": 2 * 2 * n_params * tokens / max(scoring_s, 1e-9) / peak_flops,
        "cuda_peak_gib": max(r.get("memory/cuda_peak_mb", 0.0) for r in result["rows"]) / 1024 + 0.5,  # + the CUDA context
        "estimate_gib": result["estimate_gib"],
        "reward_mean": [r["reward/mean"] for r in result["rows"]],
        "ratio_first_minibatch": [r["policy/ratio_first_minibatch"] for r in result["rows"]],
        "trained_params": trained_params,
    }


def vllm_imports() -> bool:
    return subprocess.run([sys.executable, "-c", "import vllm"], capture_output=True).returncode == 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--budget", type=float, default=540.0, help="seconds for all the runs (the cuda tests come after)")
    parser.add_argument("--tiny", action="store_true", help="small shapes, 2 iterations, any device: checks the script itself")
    args = parser.parse_args()
    if not args.tiny and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device (torch.cuda.is_available() is False); --tiny checks the script on CPU")
    started = time.perf_counter()
    lengths = ["task.max_prompt_tokens=64", "generation.max_new_tokens=256"]
    shapes = {name: QWEN25[name] for name in ("qwen2.5-0.5b", "qwen2.5-1.5b")}
    if args.tiny:
        shapes = {name: QWEN2_SMALL for name in shapes}
        lengths = ["task.max_prompt_tokens=16", "generation.max_new_tokens=8", "algo.rollout_batch_size=8", "algo.num_minibatches=2", "trainer.max_steps=2"]
    table, skipped = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        prompts = write_prompts(root / "prompts.jsonl", 256, 48)
        folders, params = {}, {}
        for name, shape in shapes.items():
            folders[name] = write_model_folder(root / name, shape)
            with torch.device("meta"):
                from transformers import AutoConfig, AutoModelForCausalLM

                params[name] = sum(p.numel() for p in AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folders[name])).parameters())
        for name, (shape, overrides, planned) in RUNS.items():
            left = args.budget - (time.perf_counter() - started)
            if name.startswith("vllm") and not vllm_imports():
                skipped.append(f"{name}: vLLM does not import here")
                continue
            if planned > left and not args.tiny:
                skipped.append(f"{name}: planned {planned} s, {left:.0f} s left of the budget")
                continue
            run_started = time.perf_counter()
            result = run(name, folders[shape], prompts, overrides, lengths, root)
            print(f"{name}: {time.perf_counter() - run_started:.0f} s", file=sys.stderr, flush=True)
            if "error" in result:
                skipped.append(f"{name}: failed: {result['error']}")
                continue
            trained = params[shape] if "lora" not in name else 0
            table.append(summarize(result, params[shape], trained, H200_BF16_PEAK))
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:randomly", "tests"], capture_output=True, text=True, cwd=REPO)
    print("| run | s / iteration | generate s | update s | generated tok/s | end-to-end tok/s | MFU update | MFU scoring | peak CUDA GiB | estimate GiB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in table:
        update = sum(r["phases_s"].get(k, 0.0) for k in ("update_forward", "update_backward", "optimizer_step"))
        print(
            f"| {r['run']} | {r['iteration_s']:.1f} | {r['phases_s'].get('generate', 0):.1f} | {update:.1f} | {r['generated_tokens_per_s']:.0f} "
            f"| {r['end_to_end_tokens_per_s']:.0f} | {r['mfu_update']:.3f} | {r['mfu_scoring']:.3f} | {r['cuda_peak_gib']:.1f} | {r['estimate_gib']} |"
        )
    for line in skipped:
        print(f"skipped {line}")
    print(f"runs took {time.perf_counter() - started:.0f} s")
    print(tests.stdout.strip().splitlines()[-1] if tests.stdout.strip() else tests.stderr[-2000:])
    if args.json:
        args.json.write_text(json.dumps({"runs": table, "skipped": skipped, "cuda_tests": tests.stdout[-3000:], "device": _device()}, indent=1))
    if tests.returncode not in (0, 5):  # 5: no test ran (no GPU in --tiny mode)
        raise SystemExit("gpu_check: the cuda tests failed")


def _device() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
