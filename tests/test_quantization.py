"""Quantized models through bitsandbytes (rlhand/models/quantize.py): QLoRA on an NF4 base whose
reference is the quantized base with its adapters off, an exported policy that loads without the
library and equals the trained one, checkpoints of the adapters alone that resume exactly,
gradient checkpointing over a quantized base, int8 frozen models, and bad settings in one line."""

import json
import subprocess
import sys

import pytest
import torch

from rlhand.config.load import ConfigError
from rlhand.errors import UserError
from rlhand.models.forward import policy_forward, sequence_inputs
from rlhand.reporting.metrics_file import read_metrics
from rlhand.stages import build_run
from tests.conftest import FAST, compose_cfg

pytest.importorskip("bitsandbytes")

QLORA = FAST + ["model.lora.enabled=true", "model.quantization=nf4"]


def comparable(rows):
    return [{k: v for k, v in r.items() if not k.startswith(("time/", "memory/"))} for r in rows]


def batch(run):
    tok = run.stage.inputs.tokenizer
    prompt = torch.tensor([tok("abc=")["input_ids"], tok("xyz=")["input_ids"]])
    response = torch.tensor([tok("cba", add_special_tokens=False)["input_ids"], tok("zyx", add_special_tokens=False)["input_ids"]])
    return sequence_inputs(prompt, torch.ones_like(prompt), response, torch.ones_like(response))


def test_the_reference_is_the_quantized_base_so_the_first_kl_is_zero(tmp_path):
    run = build_run(compose_cfg(QLORA + ["trainer.max_steps=1"]), tmp_path)
    models = run.stage.models
    base = models.policy.get_base_model()
    assert type(base.transformer.h[0].attn.c_attn.base_layer).__name__ == "Linear4bit"
    assert models.ref is None and models.reference_is_base  # no second copy: the base, adapters off
    inputs = batch(run)
    with torch.no_grad():
        policy = policy_forward(models.policy, inputs, 1.0).logprobs
        with models.reference() as ref:
            reference = policy_forward(ref, inputs, 1.0).logprobs
    assert torch.equal(policy, reference)  # LoRA's B starts at 0: the same quantized forward, exactly
    (row,) = run.fit()
    # Sampled log-probs (KV cache) against a full forward: the same up to float rounding.
    assert abs(row["kl/ref"]) < 1e-5


@pytest.mark.parametrize("kind", ["nf4", "int8"])
def test_the_exported_policy_loads_without_bitsandbytes_and_equals_the_trained_one(tmp_path, kind):
    run = build_run(compose_cfg(FAST + ["model.lora.enabled=true", f"model.quantization={kind}", "trainer.max_steps=3", "algo.lr=1e-2"]), tmp_path / "run")
    run.fit()
    inputs = batch(run)
    with torch.no_grad():
        trained = policy_forward(run.stage.models.policy, inputs, 1.0).logprobs
    final = tmp_path / "run" / "final"
    assert (final / "policy_adapter" / "adapter_model.safetensors").is_file()
    # PEFT's adapter folder for the plain GPT-2 (Conv1D layers), which the quantized one trained as linear layers.
    assert json.loads((final / "policy_adapter" / "adapter_config.json").read_text())["fan_in_fan_out"] is True
    torch.save({"input_ids": inputs.input_ids, "attention_mask": inputs.attention_mask}, tmp_path / "inputs.pt")
    # A fresh process where bitsandbytes cannot be imported: the merged folder is a plain model.
    script = f"""
import sys, torch
sys.modules["bitsandbytes"] = None
from transformers import AutoModelForCausalLM
model = AutoModelForCausalLM.from_pretrained({str(final / "policy")!r}).eval()
assert type(model.transformer.h[0].attn.c_attn).__name__ == "Conv1D" and model.dtype == torch.float32
batch = torch.load({str(tmp_path / "inputs.pt")!r})
with torch.no_grad():
    logits = model(**batch).logits.float()
torch.save(logits, {str(tmp_path / "logits.pt")!r})
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    logits = torch.load(tmp_path / "logits.pt")
    prompt_len = inputs.prompt_len
    exported = torch.log_softmax(logits[:, prompt_len - 1 : -1], dim=-1).gather(-1, inputs.input_ids[:, prompt_len:, None]).squeeze(-1)
    # Merged in fp32 from the dequantized weights: what the quantized layers compute, to rounding
    # (LLM.int8 computes in fp16 on a CPU and keeps outlier features apart: a looser bound).
    assert (exported - trained).abs().max().item() < (1e-4 if kind == "nf4" else 2e-2)
    # And the training moved the policy away from its start (the comparison has something to compare).
    with torch.no_grad(), run.stage.models.reference() as ref:
        assert (policy_forward(ref, inputs, 1.0).logprobs - trained).abs().max().item() > 1e-3


def test_checkpoints_hold_the_adapters_alone_and_resume_exactly(tmp_path):
    steps = QLORA + ["trainer.max_steps=4", "checkpoint.every=2", "algo.lr=1e-2"]
    build_run(compose_cfg(steps), tmp_path / "whole").fit()
    checkpoint = tmp_path / "whole" / "checkpoints" / "step_2"
    from torch.distributed.checkpoint import FileSystemReader

    keys = list(FileSystemReader(str(checkpoint / "weights")).read_metadata().state_dict_metadata)
    assert any("lora_A" in k for k in keys) and not any("base_layer.weight" in k or "absmax" in k for k in keys)
    build_run(compose_cfg(steps + [f"resume={checkpoint}"]), tmp_path / "resumed").fit()
    whole, resumed = (read_metrics(tmp_path / run / "logs" / "metrics.jsonl") for run in ("whole", "resumed"))
    assert comparable(resumed) == comparable(whole)
    from safetensors.torch import load_file

    for name in ("policy", "critic"):
        a, b = (load_file(tmp_path / run / "final" / name / "model.safetensors") for run in ("whole", "resumed"))
        assert all(torch.equal(a[k], b[k]) for k in a)


def test_gradient_checkpointing_over_a_quantized_base_gives_the_same_steps(tmp_path):
    plain = build_run(compose_cfg(QLORA + ["trainer.save_final=false"]), tmp_path / "plain").fit()
    checkpointed = build_run(compose_cfg(QLORA + ["trainer.save_final=false", "model.gradient_checkpointing=true"]), tmp_path / "ckpt").fit()
    for a, b in zip(plain, checkpointed):
        for key in ("loss/policy", "loss/value", "reward/mean", "grad/policy_norm", "grad/critic_norm"):
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), key


def test_an_int8_reference_copy_scores_near_the_policy(tmp_path):
    run = build_run(compose_cfg(FAST + ["model.frozen_quantization=int8", "trainer.max_steps=1", "trainer.save_final=false"]), tmp_path)
    assert type(run.stage.models.ref.transformer.h[0].mlp.c_fc).__name__ == "Linear8bitLt"
    (row,) = run.fit()
    # LLM.int8 weights (fp16 activations on a CPU): the reference is the policy to within its rounding.
    assert 0 < abs(row["kl/ref"]) < 0.05


@pytest.mark.parametrize(
    "overrides, message",
    [
        (["model.quantization=nf4"], r"^model.quantization: nf4 quantizes the frozen base under LoRA: needs model.lora.enabled=true"),
        (["model.lora.enabled=true", "model.frozen_quantization=int8"], r"^model.frozen_quantization: this run has no frozen model of its own to quantize"),
        (["model.lora.enabled=true", "model.quantization=nf4", "generation.engine=vllm"], r"^model.quantization: a quantized training base with generation.engine=vllm is not supported"),
    ],
)
def test_bad_quantization_settings_are_one_line(overrides, message):
    with pytest.raises(ConfigError, match=message):
        compose_cfg(FAST + overrides)


def test_fsdp_and_a_missing_library_are_one_line_before_models_load(tmp_path, monkeypatch):
    from rlhand.config.schema import LoraSettings, ModelConfig, Quantization
    from rlhand.distributed.layout import Layout, Parallel, check_quantized_layout

    model = ModelConfig(name="t", quantization=Quantization.nf4, lora=LoraSettings(enabled=True))
    with pytest.raises(ConfigError, match=r"^model.quantization: nf4 weights cannot be sharded by FSDP2; set trainer.strategy=ddp"):
        check_quantized_layout(model, Layout(2, 2, Parallel.fsdp, False))
    monkeypatch.setitem(sys.modules, "bitsandbytes", None)  # import fails as where it is not installed
    monkeypatch.setattr("rlhand.stages.ppo.setup.build_models", lambda *a, **k: pytest.fail("a model was built"))
    with pytest.raises(UserError, match=r"^model.quantization: nf4 needs bitsandbytes \(pip install 'rlhand\[quantization\]'\)"):
        build_run(compose_cfg(QLORA), tmp_path)


def test_the_estimate_counts_quantized_weights(tmp_path):
    from tests.test_memory_fit import estimate_for, items

    def weights(overrides):
        return items(estimate_for(FAST + ["model.n_layer=4", "model.n_embd=256", "model.lora.enabled=true", *overrides])[1])

    plain, nf4 = weights([]), weights(["model.quantization=nf4"])
    from rlhand.models.shapes import model_shapes
    from rlhand.stages.ppo import setup

    cfg = compose_cfg(FAST + ["model.n_layer=4", "model.n_embd=256", "model.lora.enabled=true"])
    linears = model_shapes(cfg, setup.prepare_inputs(cfg).tokenizer)["policy"].quantizable
    assert linears == 4 * 12 * 256 * 256  # GPT-2's block: c_attn 3h², attn c_proj h², c_fc and mlp c_proj 4h² each
    saved = plain["policy weights"] - nf4["policy weights"]
    assert saved == pytest.approx(linears * (4 - (0.5 + 1 / 64 + 4 / (64 * 256))))
    assert nf4["dequantized layer weight"] == 4 * 256 * 256 * 4 and "dequantized layer weight" not in plain


@pytest.mark.parametrize(
    "stage, saved",
    [
        (["stage=sft", "sft.batch_size=8", "sft.num_examples=64"], "policy"),
        (["stage=reward_model", "rm.batch_size=8", "rm.num_pairs=64"], "reward_model"),
    ],
)
def test_the_supervised_stages_train_a_quantized_base_and_export_it_plain(tmp_path, stage, saved):
    history = build_run(compose_cfg([*stage, "trainer.max_steps=3", "logging=plain", "model.lora.enabled=true", "model.quantization=nf4"]), tmp_path).fit()
    assert len(history) == 3 and all(torch.isfinite(torch.tensor(row["train/loss"])) for row in history)
    from safetensors.torch import load_file

    weights = load_file(tmp_path / "final" / saved / "model.safetensors")
    assert weights["transformer.h.0.attn.c_attn.weight"].shape == (64, 192)  # GPT-2's own [in, out] layout, dequantized
    assert not any("absmax" in k or "quant" in k for k in weights)


def two_rank_qlora_worker(run_dir: str):
    """A QLoRA run on this rank of two (trainer.strategy=auto: DDP, FSDP2 cannot shard NF4)."""
    from rlhand.distributed import context

    run = build_run(compose_cfg(QLORA + ["trainer.max_steps=2", "algo.lr=1e-2"]), __import__("pathlib").Path(run_dir))
    history = run.fit()
    adapters = {k: v.detach().clone() for k, v in run.stage.models.policy.named_parameters() if v.requires_grad}
    gathered = context.current().all_gather_object(adapters)
    return {"strategy": run.env.layout.strategy.value, "rows": len(history), "same": all(torch.equal(gathered[0][k], gathered[1][k]) for k in adapters)}


def test_two_ranks_train_a_quantized_base_with_ddp(tmp_path):
    from tests.distributed import run_ranks

    for result in run_ranks(two_rank_qlora_worker, str(tmp_path / "run")):
        assert result == {"strategy": "ddp", "rows": 2, "same": True}  # the ranks' adapters stay one model
