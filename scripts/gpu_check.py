"""The GPU check: PPO on a Qwen2-0.5B-shaped model built from a config (nothing downloaded), as
`rlhand-train` runs it, measured. About 8 minutes on one H200; run through scripts/gpu_check.sh.

Three runs of 3 PPO iterations each, 128 prompts x 256 new tokens, bf16 compute, a random reward
model of the same shape:
  full    policy and a separate critic, every weight trained
  lora    LoRA adapters on both (the reference is the base)
  shared  a value head on the policy instead of a critic
Then the tests marked `cuda`. Prints per-phase seconds, generated tokens/s, end-to-end tokens/s,
MFU of the update and scoring phases, peak CUDA memory, and the memory estimate against it; writes
the same as JSON (--json).

    python scripts/gpu_check.py [--json out.json] [--tiny]   # --tiny: small shapes, any device (tests the script)
"""

import argparse
import json
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

H100_BF16_PEAK = 989e12  # dense bf16 FLOP/s of an H100 / H200 SXM
QWEN2_05B = dict(hidden_size=896, intermediate_size=4864, num_hidden_layers=24, num_attention_heads=14, num_key_value_heads=2,
                 vocab_size=151936, max_position_embeddings=4096, tie_word_embeddings=True, rope_theta=1000000.0)
TINY = dict(hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            vocab_size=1000, max_position_embeddings=512, tie_word_embeddings=True)


def build_models(root: Path, shape: dict) -> tuple[Path, Path, int, int]:
    """A policy and a reward model of `shape`, random, saved in bf16 with the char tokenizer (its 102
    ids are all the prompts use; the models may sample any of theirs, and no reward decodes text)."""
    from transformers import Qwen2Config, Qwen2ForCausalLM, Qwen2ForSequenceClassification

    from rlhand.data.tokenizer import build_char_tokenizer

    tok = build_char_tokenizer()
    config = Qwen2Config(**shape, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    torch.manual_seed(0)
    policy = Qwen2ForCausalLM(config).to(torch.bfloat16)
    reward = Qwen2ForSequenceClassification(Qwen2Config(**shape, num_labels=1, pad_token_id=tok.pad_token_id)).to(torch.bfloat16)
    for name, model in (("policy", policy), ("reward", reward)):
        model.save_pretrained(root / name)
        tok.save_pretrained(root / name)
    n_policy = sum(p.numel() for p in policy.parameters())
    n_reward = sum(p.numel() for p in reward.parameters())
    return root / "policy", root / "reward", n_policy, n_reward


def run(name: str, overrides: list[str], root: Path) -> dict:
    run_dir = root / name
    # `python -m rlhand.train`: on a GPU machine rlhand may be on PYTHONPATH, not installed.
    out = subprocess.run([sys.executable, "-m", "rlhand.train", *overrides, f"hydra.run.dir={run_dir}"], capture_output=True, text=True)
    if out.returncode != 0:
        print(out.stderr[-4000:], file=sys.stderr)
        raise SystemExit(f"gpu_check: the {name} run failed")
    rows = [json.loads(line) for line in (run_dir / "logs" / "metrics.jsonl").read_text().splitlines()]
    estimate = re.search(r"memory estimate: ([0-9.]+) GiB", out.stderr)
    return {"rows": rows, "estimate_gib": float(estimate.group(1)) if estimate else None}


def summarize(name: str, result: dict, n_policy: int, n_reward: int, trained: int, peak_flops: float, prompt_tokens: int) -> dict:
    """Medians over the iterations after the first (warm-up: kernel selection, allocator growth)."""
    rows = result["rows"][1:] or result["rows"]
    med = lambda key: sorted(r.get(key, 0.0) for r in rows)[len(rows) // 2]  # noqa: E731
    generated = med("response/generated_tokens")
    batch = rows[0]["samples/generated"]
    real_tokens = batch * (prompt_tokens + med("response/length_mean"))
    epochs_tokens = real_tokens * 4  # ppo_epochs: every token is trained on once per epoch
    update_s = med("time/update_forward_s") + med("time/update_backward_s") + med("time/optimizer_step_s")
    update_flops = 6 * trained * epochs_tokens  # forward + backward of the trained models (+ attention below)
    scoring_s = med("time/score_ref_s") + med("time/score_value_s") + med("time/score_reward_s")
    scoring_flops = 2 * (n_policy + n_reward + (n_policy if name != "shared" else 0)) * real_tokens
    return {
        "run": name,
        "iteration_s": med("time/iteration_s"),
        "phases_s": {k.removeprefix("time/").removesuffix("_s"): med(k) for k in rows[0] if k.startswith("time/") and k.endswith("_s")},
        "generated_tokens_per_s": generated / max(med("time/generate_s"), 1e-9),
        "end_to_end_tokens_per_s": generated / med("time/iteration_s"),
        "mfu_update": update_flops / max(update_s, 1e-9) / peak_flops,
        "mfu_scoring": scoring_flops / max(scoring_s, 1e-9) / peak_flops,
        "cuda_peak_gib": max(r.get("memory/cuda_peak_mb", 0.0) for r in result["rows"]) / 1024,
        "estimate_gib": result["estimate_gib"],
        "reward_mean": [r["reward/mean"] for r in result["rows"]],
        "ratio_first_minibatch": [r["policy/ratio_first_minibatch"] for r in result["rows"]],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path)
    parser.add_argument("--tiny", action="store_true", help="small shapes, 2 iterations, any device: checks the script itself")
    args = parser.parse_args()
    if not args.tiny and not torch.cuda.is_available():
        raise SystemExit("gpu_check: no CUDA device (torch.cuda.is_available() is False); --tiny checks the script on CPU")
    shape, prompts, new_tokens, steps = (TINY, 16, 16, 2) if args.tiny else (QWEN2_05B, 128, 256, 3)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        policy, reward, n_policy, n_reward = build_models(root, shape)
        common = [
            "model=hf", f"model.policy={policy}", "reward=model", f"model.reward_model={reward}", "model.critic_init=policy",
            "task=random_text", f"task.num_prompts={prompts * 2}", "task.prompt_chars=63", "task.max_prompt_tokens=64",  # 64 with BOS
            f"algo.rollout_batch_size={prompts}", "algo.num_minibatches=4", f"generation.max_new_tokens={new_tokens}",
            "generation.temperature=1.0", f"trainer.max_steps={steps}", "trainer.autocast=bfloat16", "model.frozen_dtype=bfloat16",
            "model.attn_implementation=sdpa", "logging=plain", "trainer.save_final=false", "trainer.fit_check=warn",
        ]
        runs = {
            "full": (common, 2 * n_policy),
            "lora": (common + ["model.lora.enabled=true"], None),
            "shared": (common + ["model.critic_backbone=shared"], n_policy),
        }
        table = []
        for name, (overrides, trained) in runs.items():
            result = run(name, overrides, root)
            # LoRA: the trained weights are few, but the forward and backward run through all of them.
            table.append(summarize(name, result, n_policy, n_reward, trained or 2 * n_policy, H100_BF16_PEAK, 64))
    tests = subprocess.run([sys.executable, "-m", "pytest", "-q", "-m", "cuda", "-p", "no:randomly", "tests"], capture_output=True, text=True)
    print("| run | s / iteration | generate s | update s | generated tok/s | end-to-end tok/s | MFU update | MFU scoring | peak CUDA GiB | estimate GiB |")
    print("| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |")
    for r in table:
        update = sum(r["phases_s"].get(k, 0.0) for k in ("update_forward", "update_backward", "optimizer_step"))
        print(
            f"| {r['run']} | {r['iteration_s']:.1f} | {r['phases_s'].get('generate', 0):.1f} | {update:.1f} | {r['generated_tokens_per_s']:.0f} "
            f"| {r['end_to_end_tokens_per_s']:.0f} | {r['mfu_update']:.3f} | {r['mfu_scoring']:.3f} | {r['cuda_peak_gib']:.1f} | {r['estimate_gib']} |"
        )
    print(tests.stdout.strip().splitlines()[-1] if tests.stdout.strip() else tests.stderr[-2000:])
    if args.json:
        args.json.write_text(json.dumps({"runs": table, "cuda_tests": tests.stdout[-3000:], "device": _device()}, indent=1))
    if tests.returncode not in (0, 5):  # 5: no test ran (no GPU in --tiny mode)
        raise SystemExit("gpu_check: the cuda tests failed")


def _device() -> str:
    return torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu"


if __name__ == "__main__":
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    main()
