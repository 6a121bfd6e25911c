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
from rlhand.models.fit import GIB, check_fit, estimate_memory
from rlhand.trainer import setup
from rlhand.trainer.loop import Trainer
from tests.conftest import FAST, compose_cfg

EXE = shutil.which("rlhand-train") or str(Path(sys.executable).parent / "rlhand-train")
CPU = torch.device("cpu")


def estimate_for(overrides, world_size=1):
    cfg = compose_cfg(overrides)
    inputs = setup.prepare_inputs(cfg)
    return cfg, estimate_memory(cfg, inputs.tokenizer, [len(p) for p in inputs.prompt_ids], world_size, CPU)


@pytest.mark.parametrize("setting", [[], ["model.n_layer=4", "model.n_embd=256", "model.lora.enabled=true"]])
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
    assert 0.7 < estimate / measured < 1.3, (estimate, measured)


def test_a_config_that_cannot_fit_stops_before_any_model_loads(tmp_path, monkeypatch):
    monkeypatch.setattr("rlhand.trainer.setup.build_models", lambda *a, **k: pytest.fail("a model was built"))
    with pytest.raises(ConfigError, match=r"^memory: the estimate is 0\.[0-9] GiB per device, over the 0\.1 GiB available; the biggest item is "):
        Trainer(compose_cfg(FAST + ["trainer.device_memory_gb=0.1"]), tmp_path)
    # A 1.2B-parameter model cannot train on 8 GB even with the preset's LoRA and checkpointing.
    big = ["memory=8gb", "model.n_layer=24", "model.n_embd=2048", "model.n_head=16", "model.n_positions=64"]
    with pytest.raises(ConfigError, match=r"the biggest item is (policy|critic) weights \([0-9.]+ GiB\)") as err:
        Trainer(compose_cfg(big), tmp_path)
    assert "\n" not in str(err.value) and "trainer.fit_check=warn" in str(err.value)
    cfg, estimate = estimate_for(big + ["trainer.fit_check=warn"])
    assert estimate.total > 8 * GIB and check_fit(estimate, cfg).endswith("over the device's memory")


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
    from rlhand.models.build import _tiny_config

    with torch.device("meta"):
        policy = GPT2LMHeadModel(_tiny_config(compose_cfg(base).model, build_char_tokenizer()))
    assert {i.name: i.bytes for i in one.resident}["policy AdamW states"] == 8 * sum(p.numel() for p in policy.parameters())


def test_every_memory_preset_composes_to_plain_overrides():
    for name, grad_accum, lora in (("8gb", 8, True), ("16gb", 4, True), ("24gb", 4, False), ("80gb", 1, False)):
        cfg = compose_cfg([f"memory={name}"])
        assert cfg.trainer.device_memory_gb == float(name.removesuffix("gb"))
        assert cfg.algo.grad_accum_steps == grad_accum and cfg.model.lora.enabled is lora
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
    assert estimate_memory(compose_cfg(FAST + ["model=hf", "model.policy=no-org/no-model"]), None, [10], 1, CPU) is None
