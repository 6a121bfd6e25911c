"""generation.engine=vllm: a vLLM engine in each training process (colocated, tensor_parallel_size=1).

Life of the engine:
- built once, in-process (no engine subprocess), from the policy's config alone (vLLM's dummy
  weights: nothing is written to or read from disk), then given every weight by the first `sync`;
- before every generation that follows an update, what training changed is pushed into it in
  place (`sync`, rlhand/rollout/weight_push.py), a transformer block at a time in the engine's
  dtype: every trained weight and the output layer; with LoRA the adapters themselves where vLLM
  supports LoRA for the architecture (generation.vllm_lora; Qwen2 and Llama do, GPT-2 does not; by
  default on CUDA only), else the adapted layers merged. The prefix cache is reset with every push, so no KV entry
  computed by older weights is reused;
- on CUDA (generation.vllm_sleep) it sleeps between generations: level 1 frees the KV cache and
  moves its weights to host memory, so the update has the GPU (the TRL colocate pattern). A push
  wakes the weights only, a generation then the KV cache;
- closed at the end of the run. vLLM's shutdown destroys torch's default process group, which in
  a torchrun job is the trainer's own, so there it waits for rlhand's last barrier
  (rlhand/distributed/context.py shutdown).

Samples: each prompt without its left padding, its own seed (drawn from the trainer's random
stream, so a resumed run draws the same seeds), stopped at rlhand's EOS only (the model's
generation_config is ignored, as the hf loop ignores it), and the log-prob of each sampled token
under the distribution it was sampled from (logprobs_mode=processed_logprobs: temperature, top-k
and top-p applied); the trainer adds back the kept mass of top-k / top-p (rlhand/core/sampling.py)
and recomputes the proximal log-probs (rlhand/rollout/collect.py).

vLLM alters process-wide state while it starts and samples: it reseeds torch's global generators
and replaces torch.set_num_threads with a no-op on CPU. Both are put back around every call here.
"""

import functools
import os
import shutil
import tempfile
from contextlib import contextmanager
from pathlib import Path

import torch
from torch import nn

from rlhand.checkpoint.rng import capture_rng, restore_rng
from rlhand.config.schema import Autocast, TrainConfig, VLLMLora
from rlhand.distributed import context
from rlhand.distributed.context import DistContext
from rlhand.distributed.layout import engine_executor
from rlhand.models.build import Models
from rlhand.models.lora import is_lora
from rlhand.rollout.sampler import Samples
from rlhand.rollout.vllm_model import (
    VLLM_LORA_RANKS,
    check_head_size,
    cpu_kv_cache_bytes,
    output_layer_name,
    supports_lora,
    write_engine_config,
)
from rlhand.rollout.weight_push import trained_names, weight_buckets, write_adapter


def _reload(worker, weights) -> None:
    """Runs in the vLLM worker: load (name, tensor) pairs into its model, in place."""
    worker.reload_weights(weights_iterator=iter(weights))


class VLLMEngine:
    exact = False
    truncated_logprobs = True  # processed_logprobs: after temperature, top-k and top-p

    def __init__(self, cfg: TrainConfig, models: Models, device: torch.device, ctx: DistContext, max_len: int, max_rows: int):
        from vllm import LLM

        self.cfg, self.device, self.ctx = cfg, device, ctx
        policy = models.policy
        self.base = policy.get_base_model() if is_lora(policy) else policy
        check_head_size(self.base.config, device)
        self.output = (output_layer_name(self.base), self.base.get_output_embeddings())
        gen = cfg.generation
        # LoRA: the engine applies the adapters itself where vLLM supports LoRA for this model (a
        # folder of a few MB per update), else it takes the adapted layers merged.
        wanted = gen.vllm_lora is VLLMLora.adapters or (gen.vllm_lora is VLLMLora.auto and device.type == "cuda")
        self.adapters = is_lora(policy) and wanted and supports_lora(self.base)
        self.pushed = trained_names(policy, self.output[0])
        self.synced = False  # it starts with placeholder weights: the first sync pushes every weight
        self.sleeps = device.type == "cuda" and gen.vllm_sleep
        self.awake = {"weights", "kv_cache"}
        self.adapter_dir = Path(tempfile.mkdtemp(prefix="rlhand-lora-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None)) if self.adapters else None
        lora = {}
        if self.adapters:
            rank = policy.peft_config["default"].r
            lora = {"enable_lora": True, "max_loras": 1, "max_lora_rank": next(r for r in VLLM_LORA_RANKS if r >= rank)}
        with tempfile.TemporaryDirectory(prefix="rlhand-vllm-") as folder:
            write_engine_config(self.base, folder)
            memory = (
                {"gpu_memory_utilization": gen.gpu_memory_utilization}
                if device.type == "cuda"
                else {"kv_cache_memory_bytes": cpu_kv_cache_bytes(self.base.config, max_rows, max_len, self.dtype)}
            )
            with process_state_kept():
                self.llm = LLM(
                    model=folder,
                    load_format="dummy",  # no weights from disk: the first sync pushes all of them
                    skip_tokenizer_init=True,  # token ids in and out
                    generation_config="vllm",  # not the model's: rlhand's sampling settings only
                    dtype=self.dtype,
                    seed=cfg.seed,
                    max_model_len=max_len,
                    max_num_seqs=max(1, max_rows),
                    tensor_parallel_size=1,
                    # One engine per process: inside torchrun it joins the trainer's process group
                    # (each rank its own engine, TRL's colocate mode); alone it runs in-process.
                    distributed_executor_backend=engine_executor(ctx.world_size),
                    enforce_eager=device.type != "cuda",
                    enable_sleep_mode=self.sleeps,
                    logprobs_mode="processed_logprobs",
                    **memory,
                    **lora,
                )
        self._sleep()

    @property
    def dtype(self) -> str:
        autocast = self.cfg.trainer.autocast
        if autocast is not Autocast.off and self.device.type == "cuda":
            return autocast.value
        return str(next(self.base.parameters()).dtype).removeprefix("torch.")

    def sync(self, policy: nn.Module) -> float:
        """Push what the last update changed: a block of weights at a time in the engine's dtype
        (rlhand/rollout/weight_push.py), or with LoRA adapters only the adapter folder."""
        import time

        started = time.perf_counter()
        with process_state_kept():
            self._wake(["weights"])  # not its KV cache yet: generate wakes that
            if not (self.synced and self.adapters):
                buckets = weight_buckets(
                    policy, output=self.output, dtype=getattr(torch, self.dtype), only=self.pushed if self.synced else None, merge_lora=not self.adapters
                )
                for bucket in buckets:
                    self.llm.collective_rpc(functools.partial(_reload, weights=bucket))
            if self.adapters:
                from vllm.lora.request import LoRARequest

                write_adapter(policy, self.adapter_dir)
                self.lora_request = LoRARequest("rlhand-policy", 1, str(self.adapter_dir), load_inplace=True)
                self.llm.llm_engine.add_lora(self.lora_request)
            self.llm.reset_prefix_cache()  # its entries were computed by the previous weights
        self.synced = True
        return time.perf_counter() - started

    def generate(self, prompt_ids, prompt_mask, gen, *, eos_ids, pad_id, generator=None) -> Samples:
        from vllm import SamplingParams
        from vllm.inputs import TokensPrompt

        if not self.synced:
            raise RuntimeError("the vLLM engine was asked to generate before its weights were synced")
        rows = [ids[mask.bool()].tolist() for ids, mask in zip(prompt_ids.cpu(), prompt_mask.cpu())]
        stops = [eos_ids] if isinstance(eos_ids, int) else list(eos_ids)
        seeds = torch.randint(0, 2**31 - 1, (len(rows),), generator=generator, device=generator.device if generator is not None else "cpu")
        params = [
            SamplingParams(
                temperature=gen.temperature,
                top_k=gen.top_k if gen.top_k > 0 else -1,
                top_p=gen.top_p,
                max_tokens=gen.max_new_tokens,
                logprobs=0,  # the sampled token's own
                stop_token_ids=stops,
                ignore_eos=True,  # stop at rlhand's EOS ids only (the tokenizer's and generation_config's), not at what vLLM adds
                seed=int(seed),
                detokenize=False,
            )
            for seed in seeds.tolist()
        ]
        with process_state_kept():
            self._wake(["weights", "kv_cache"])
            outputs = self.llm.generate(
                [TokensPrompt(prompt_token_ids=row) for row in rows], params, use_tqdm=False, lora_request=self.lora_request if self.adapters else None
            )
            self._sleep()
        return samples_from_outputs([out.outputs[0] for out in outputs], eos_ids=stops, pad_id=pad_id, device=prompt_ids.device)

    def _wake(self, tags: list[str]) -> None:
        """Wake the parts in `tags` that sleep (on CUDA with generation.vllm_sleep): the weights for
        a push, then the KV cache to generate; waking everything at once would map the weights again."""
        missing = [tag for tag in tags if tag not in self.awake]
        if self.sleeps and missing:
            self.llm.wake_up(missing)
        self.awake.update(missing)

    def _sleep(self) -> None:
        if self.sleeps and self.awake:
            self.llm.sleep(level=1)  # KV cache freed, weights to host memory (level 2 would drop the frozen ones)
            self.awake.clear()

    def close(self) -> None:
        """Shut the engine down. In a torchrun job that destroys the process group the trainer
        shares with it, so it waits for rlhand's shutdown (after its last barrier)."""
        llm, self.llm = getattr(self, "llm", None), None
        if getattr(self, "adapter_dir", None) is not None:
            shutil.rmtree(self.adapter_dir, ignore_errors=True)
        if llm is not None:
            context.before_leaving(lambda: _shutdown(llm))


def _shutdown(llm) -> None:
    with process_state_kept():
        llm.llm_engine.engine_core.shutdown()


def samples_from_outputs(outputs, *, eos_ids, pad_id: int, device: torch.device) -> Samples:
    """vLLM's CompletionOutputs (token ids ending with EOS when one was sampled, one log-prob dict
    per token) as Samples, each row padded to the longest response."""
    stops = {eos_ids} if isinstance(eos_ids, int) else set(eos_ids)
    width = max(1, max(len(out.token_ids) for out in outputs))
    batch = len(outputs)
    ids = torch.full((batch, width), pad_id, dtype=torch.long)
    mask = torch.zeros(batch, width, dtype=torch.long)
    logprobs = torch.zeros(batch, width)
    ended = torch.zeros(batch, dtype=torch.bool)
    for row, out in enumerate(outputs):
        tokens = list(out.token_ids)
        n = len(tokens)
        if n:
            ids[row, :n] = torch.tensor(tokens)
            mask[row, :n] = 1
            logprobs[row, :n] = torch.tensor([step[token].logprob for step, token in zip(out.logprobs, tokens)])
            ended[row] = tokens[-1] in stops
    return Samples(response_ids=ids.to(device), response_mask=mask.to(device), logprobs=logprobs.to(device), ended=ended.to(device))


@contextmanager
def process_state_kept():
    """Undo what vLLM does to process-wide state while starting and sampling: it reseeds torch's
    generators (the trainer's random stream must not see the engine) and, on CPU, replaces
    torch.set_num_threads with a no-op."""
    rng, set_threads, threads = capture_rng(), torch.set_num_threads, torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads = set_threads
        torch.set_num_threads(threads)
        restore_rng(rng)


