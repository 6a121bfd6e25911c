"""The memory estimate printed before any model loads, the fit check, and the memory presets."""

import json
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from rlhand.config import ConfigError
from rlhand.distributed.layout import resolve_layout
from rlhand.models.fit import CPU_BASELINE, GIB, check_fit, estimate_memory
from rlhand.stages import build_run
from rlhand.stages.ppo import setup
from tests.conftest import FAST, compose_cfg

EXE = shutil.which("rlhand-train") or str(Path(sys.executable).parent / "rlhand-train")
# The resident GiB of a process that imported what rlhand-train imports before its estimate.
IMPORTED_RSS = (
    "import os, rlhand.train, rlhand.stages.ppo.stage; "
    "print(int(open('/proc/self/statm').read().split()[1]) * os.sysconf('SC_PAGE_SIZE') / 2**30)"
)
CPU = torch.device("cpu")


def estimate_for(overrides, world_size=1):
    cfg = compose_cfg(overrides)
    inputs = setup.prepare_inputs(cfg)
    return cfg, estimate_memory(cfg, inputs.tokenizer, [len(p) for p in inputs.prompt_ids], resolve_layout(cfg.trainer, world_size), CPU)


@pytest.mark.parametrize(
    "setting",
    [[], ["model.n_layer=4", "model.n_embd=256", "model.lora.enabled=true"], ["model.n_layer=4", "model.n_embd=256", "model.lora.enabled=true", "model.quantization=nf4"]],
)
def test_the_estimate_is_within_30_percent_of_the_measured_peak(tmp_path, setting):
    """Two of docs/memory.md's settings, each in a fresh process as a user runs it (peak RSS of its
    iterations against the line printed before any model loaded)."""
    out = subprocess.run(
        [EXE, *setting, "trainer.max_steps=2", "logging=plain", "trainer.save_final=false", "hydra.run.dir=run"],
        cwd=tmp_path, capture_output=True, text=True, timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    first = out.stderr.splitlines()[0]
    estimate = float(re.match(r"memory estimate: ([0-9.]+) GiB per device of [0-9.]+ GiB \(largest", first).group(1))
    rows = [json.loads(line) for line in (tmp_path / "run" / "logs" / "metrics.jsonl").read_text().splitlines()]
    measured = max(r["memory/rss_peak_mb"] for r in rows) / 1024
    # The estimate's constant baseline (0.36 GiB: torch, transformers, rlhand imported) against what
    # a process of this interpreter holds after those imports here: shared libraries count as the
    # kernel maps them, and a just-installed venv's count more (0.43 GiB measured on a fresh clone).
    imported = subprocess.run([sys.executable, "-c", IMPORTED_RSS], capture_output=True, text=True, timeout=120)
    baseline = max(CPU_BASELINE / GIB, float(imported.stdout.strip() or 0))
    estimate += baseline - CPU_BASELINE / GIB
    assert 0.7 < estimate / measured < 1.3, (estimate, measured, baseline)


def test_a_config_that_cannot_fit_stops_before_any_model_loads(tmp_path, monkeypatch):
    monkeypatch.setattr("rlhand.stages.ppo.setup.build_models", lambda *a, **k: pytest.fail("a model was built"))
    with pytest.raises(ConfigError, match=r"^memory: the estimate is 0\.[0-9] GiB per device, over the 0\.1 GiB available; the biggest item is "):
        build_run(compose_cfg(FAST + ["trainer.device_memory_gb=0.1"]), tmp_path)
    # A 2.4B-parameter model cannot train on 8 GB with LoRA on bf16 bases and checkpointing...
    big = ["memory=8gb", "model.quantization=none", "model.n_layer=48", "model.n_embd=2048", "model.n_head=16", "model.n_positions=64"]
    with pytest.raises(ConfigError, match=r"the biggest item is (policy|critic) weights \([0-9.]+ GiB\)") as err:
        build_run(compose_cfg(big), tmp_path)
    assert "\n" not in str(err.value) and "trainer.fit_check=warn" in str(err.value)
    cfg, estimate = estimate_for(big + ["trainer.fit_check=warn"])
    assert estimate.total > 8 * GIB and check_fit(estimate, cfg).endswith("over the device's memory")
    assert "model.quantization=nf4" in str(err.value)  # ...the error's levers name QLoRA, and with the preset's NF4 bases it fits
    assert estimate_for(big[:1] + big[2:])[1].total < 8 * GIB


def test_the_estimate_follows_the_levers():
    base = ["model.n_layer=8", "model.n_embd=512"]
    total = lambda overrides, n=1: estimate_for(base + overrides, n)[1].total  # noqa: E731
    plain = total([])
    assert total(["model.gradient_checkpointing=true"]) < plain
    assert total(["model.lora.enabled=true"]) < plain
    assert total(["model.critic_backbone=shared"]) < plain
    assert total(["model.frozen_dtype=bfloat16"]) < plain
    _, two = estimate_for(base, world_size=2)
    _, one = estimate_for(base)
    sharded = {i.name: i.bytes for i in two.resident}
    assert sharded["policy AdamW states"] == pytest.approx({i.name: i.bytes for i in one.resident}["policy AdamW states"] / 2)
    # AdamW keeps 8 bytes of each parameter (8 x 512: 25.8 M per model, counted on the meta device).
    from transformers import GPT2LMHeadModel

    from rlhand.data.tokenizer import build_char_tokenizer
    from rlhand.models.loaders import tiny_config

    with torch.device("meta"):
        policy = GPT2LMHeadModel(tiny_config(compose_cfg(base).model, build_char_tokenizer()))
    assert {i.name: i.bytes for i in one.resident}["policy AdamW states"] == 8 * sum(p.numel() for p in policy.parameters())


def test_every_memory_preset_composes_to_plain_overrides():
    for name, grad_accum, lora in (("8gb", 8, True), ("16gb", 4, True), ("24gb", 4, False), ("80gb", 1, False)):
        cfg = compose_cfg([f"memory={name}"])
        assert cfg.trainer.device_memory_gb == float(name.removesuffix("gb"))
        assert cfg.algo.grad_accum_steps == grad_accum and cfg.model.lora.enabled is lora
        assert cfg.model.quantization.value == ("nf4" if lora else "none")  # the LoRA presets' bases in NF4 (QLoRA)
    assert compose_cfg(["memory=8gb", "algo.grad_accum_steps=2"]).algo.grad_accum_steps == 2  # the command line wins
    assert compose_cfg(["algo=ppo_v2", "memory=16gb"]).replay.enabled


def test_a_saved_model_folder_is_estimated_from_its_config(tmp_path):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from rlhand.data.tokenizer import build_char_tokenizer

    tok = build_char_tokenizer()
    config = Qwen2Config(vocab_size=len(tok), hidden_size=64, intermediate_size=176, num_hidden_layers=2, num_attention_heads=4,
                         num_key_value_heads=2, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=tok.bos_token_id)
    Qwen2ForCausalLM(config).save_pretrained(tmp_path / "policy")
    tok.save_pretrained(tmp_path / "policy")
    _, estimate = estimate_for(FAST + ["model=hf", f"model.policy={tmp_path / 'policy'}"])
    params = sum(p.numel() for p in Qwen2ForCausalLM(config).parameters())
    assert {i.name: i.bytes for i in estimate.resident}["policy AdamW states"] == 8 * params
    assert {i.name: i.bytes for i in estimate.rollout}["generation KV cache"] > 0  # GQA: 2 of 4 heads cached
    assert estimate_memory(compose_cfg(FAST + ["model=hf", "model.policy=no-org/no-model"]), None, [10], resolve_layout(compose_cfg(FAST).trainer, 1), CPU) is None


def qwen_config_folder(tmp_path, **shape):
    """A folder with only a Qwen2 config.json: the estimate reads nothing else."""
    from tests.real_shape import QWEN2_SMALL, build_tokenizer, qwen2_config

    folder = tmp_path / "qwen"
    qwen2_config({**QWEN2_SMALL, **shape}, build_tokenizer()).save_pretrained(folder)
    return folder


def real_shape_estimate(folder, overrides, world_size=1, device=CPU):
    from rlhand.models.fit import estimate_from_shapes
    from rlhand.models.shapes import model_shapes

    cfg = compose_cfg(["model=hf", f"model.policy={folder}", "model.critic_init=policy", "task=file", "task.path=unused.jsonl",
                       "reward.function._target_=tests.real_shape.length_reward", *overrides])
    shapes = model_shapes(cfg, None)
    return cfg, shapes, estimate_from_shapes(cfg, shapes, [30] * 8, resolve_layout(cfg.trainer, world_size), device)


def items(estimate):
    return {i.name: i.bytes for i in estimate.resident + estimate.update + estimate.rollout}


def test_a_gated_mlp_stores_2h_plus_8i_per_token_and_sdpa_keeps_no_scores(tmp_path):
    """SwiGLU keeps its input (h), gate and up outputs, the activation and the product (4 I): in
    16-bit bytes 2h + 8I per token and layer, beside attention's 11h and the norms' 4h. transformers'
    default attention (sdpa) keeps no (heads x sequence) scores; eager does."""
    folder = qwen_config_folder(tmp_path)
    base = ["algo.rollout_batch_size=8", "algo.num_minibatches=1", "task.max_prompt_tokens=30", "generation.max_new_tokens=10",
            "trainer.autocast=bfloat16"]
    _, shapes, estimate = real_shape_estimate(folder, base)
    policy = shapes["policy"]
    assert policy.gated_mlp and policy.attention == "sdpa"
    h, i, layers = 128, 352, 2
    tokens = 8 * (30 + 10)
    assert items(estimate)["policy activations"] == layers * tokens * (15 * h + 2 * h + 8 * i)
    _, _, eager = real_shape_estimate(folder, base + ["model.attn_implementation=eager"])
    assert items(eager)["policy activations"] == layers * tokens * (15 * h + 2 * h + 8 * i + 5 * 4 * 40)


def test_update_logits_are_one_chunk_of_response_positions(tmp_path):
    """Only the response's positions reach the output layer (logits_to_keep), a chunk at a time:
    3 float32 copies of min(response tokens of a micro-batch, chunk) x V."""
    folder = qwen_config_folder(tmp_path)
    base = ["algo.rollout_batch_size=8", "algo.num_minibatches=1", "task.max_prompt_tokens=30", "generation.max_new_tokens=10"]
    _, _, whole = real_shape_estimate(folder, base)
    assert items(whole)["policy logits"] == 8 * 10 * 32_000 * 4 * 3  # not 8 x 40 positions
    _, _, chunked = real_shape_estimate(folder, base + ["trainer.logits_chunk_mb=1"])
    assert items(chunked)["policy logits"] == (2**20 // (4 * 32_000)) * 32_000 * 4 * 3


def test_fsdp_gathers_the_policy_in_the_autocast_dtype(tmp_path):
    folder = qwen_config_folder(tmp_path)
    cfg, shapes, fp32 = real_shape_estimate(folder, [], world_size=2)
    _, _, bf16 = real_shape_estimate(folder, ["trainer.autocast=bfloat16"], world_size=2)
    gathered = shapes["policy"].params + shapes["policy"].block_params  # the whole model, and one block's all-gather buffer
    assert items(fp32)["policy gathered for sampling"] == gathered * 4
    assert items(bf16)["policy gathered for sampling"] == gathered * 2
    assert shapes["policy"].block_params == sum(p.numel() for p in _qwen_block(folder).parameters())


def test_a_vllm_engine_counts_its_reservation_and_weight_push(tmp_path):
    folder = qwen_config_folder(tmp_path)
    gpu = torch.device("cuda")  # only read for its type: trainer.device_memory_gb gives the size
    common = ["generation.engine=vllm", "trainer.device_memory_gb=80", "generation.gpu_memory_utilization=0.3"]
    _, _, sleeping = real_shape_estimate(folder, common, device=gpu)
    assert {i.name: i.bytes for i in sleeping.rollout}["vLLM reservation"] == 0.3 * 80 * GIB
    _, _, awake = real_shape_estimate(folder, common + ["generation.vllm_sleep=false"], device=gpu)
    assert {i.name: i.bytes for i in awake.resident}["vLLM reservation"] == 0.3 * 80 * GIB
    _, shapes, cpu = real_shape_estimate(folder, ["generation.engine=vllm"])
    assert items(cpu)["vLLM engine weights"] == shapes["policy"].params * 4 and items(cpu)["vLLM weight push"] > 0


def test_the_biggest_item_can_be_the_process_itself(tmp_path):
    """On a device smaller than the process, the error names the baseline, not a tiny model item."""
    with pytest.raises(ConfigError, match=r"the biggest item is process baseline \(0\.4 GiB\)\. Lighter: nothing in the config"):
        build_run(compose_cfg(FAST + ["trainer.device_memory_gb=0.01"]), tmp_path)


def _qwen_block(folder):
    from transformers import AutoConfig, AutoModelForCausalLM

    with torch.device("meta"):
        return AutoModelForCausalLM.from_config(AutoConfig.from_pretrained(folder)).model.layers[0]


@pytest.mark.parametrize("preset, lora", [("8gb", True), ("16gb", True), ("24gb", False), ("80gb", False)])
def test_the_readme_real_checkpoint_command_fits_every_preset(tmp_path, preset, lora):
    """The README's command for a real checkpoint (a Qwen2.5-0.5B policy, the critic from it, 256
    prompt + 256 new tokens, 64 responses per iteration) passes its own fit check under each preset;
    before chunked logits and scoring micro-batches every preset refused it ("scoring logits 18.5 GiB")."""
    from tests.real_shape import QWEN25, build_tokenizer, qwen2_config

    folder = tmp_path / "qwen05"
    qwen2_config(QWEN25["qwen2.5-0.5b"], build_tokenizer()).save_pretrained(folder)
    overrides = [f"memory={preset}", "task.max_prompt_tokens=256", "generation.max_new_tokens=256", f"model.lora.enabled={str(lora).lower()}"]
    from rlhand.models.fit import estimate_from_shapes

    cfg, shapes, _ = real_shape_estimate(folder, overrides)
    estimate = estimate_from_shapes(cfg, shapes, [256] * 64, resolve_layout(cfg.trainer, 1), CPU)  # every prompt at the limit
    assert estimate.total <= cfg.trainer.device_memory_gb * GIB, estimate.line()
    check_fit(estimate, cfg)  # no error


def test_a_component_s_and_validation_s_reward_models_are_counted_whole_on_every_rank(tmp_path):
    from rlhand.models.shapes import model_shapes

    folder = qwen_config_folder(tmp_path)
    cfg = compose_cfg(FAST + [f"+reward.components.rm.model={folder}", "+reward.components.rm.weight=1", f"+eval.scorers.gold.model={folder}", "eval.every=1"])
    shapes = model_shapes(cfg, setup.prepare_inputs(compose_cfg(FAST)).tokenizer)
    scored = {name: shape.params for name, shape in shapes.items() if name.startswith("scorer ")}
    assert set(scored) == {"scorer reward.components.rm", "scorer eval.scorers.gold"} and min(scored.values()) > 0
    two_ranks = estimate_from_shapes_of(cfg, shapes, world_size=2)
    assert two_ranks["scorer eval.scorers.gold weights"] == 4 * scored["scorer eval.scorers.gold"]  # fp32, not sharded


def estimate_from_shapes_of(cfg, shapes, world_size):
    from rlhand.models.fit import estimate_from_shapes

    return items(estimate_from_shapes(cfg, shapes, [10] * 8, resolve_layout(cfg.trainer, world_size), CPU))
