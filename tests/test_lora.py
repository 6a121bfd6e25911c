"""Memory levers on real code paths: LoRA (PEFT) with the base as the reference, gradient
checkpointing, frozen models in bf16."""

import copy

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

from rlhand.config.schema import AlgoConfig
from rlhand.models.forward import response_logits, sequence_inputs, token_logprobs
from rlhand.reporting.metrics_file import read_metrics
from rlhand.stages import build_run
from rlhand.stages.ppo.advantages import assign_advantages
from tests.conftest import FAST, compose_cfg
from tests.helpers import make_update
from tests.test_rollout import make_rollout

LORA = FAST + ["model.lora.enabled=true", "model.lora.rank=4", "trainer.max_steps=3", "checkpoint.every=2"]


def comparable(rows):
    return [{k: v for k, v in row.items() if not k.startswith(("time/", "memory/"))} for row in rows]


def test_the_reference_is_the_base_with_adapters_off_and_the_first_step_is_on_policy(tmp_path):
    trainer = build_run(compose_cfg(LORA), tmp_path)
    assert trainer.stage.models.ref is None and trainer.stage.models.reference_is_base  # no second copy
    rollout = trainer.stage.collector.collect()
    inputs = sequence_inputs(rollout.prompt_ids, rollout.prompt_mask, rollout.response_ids, rollout.response_mask)
    with torch.no_grad():
        policy = token_logprobs(response_logits(trainer.stage.models.policy, inputs, 1.0), rollout.response_ids) * rollout.response_mask
    # Fresh adapters (B = 0) add exactly nothing: the base's log-probs are the policy's, bit for bit.
    assert torch.equal(policy, rollout.ref_logprobs)
    row = trainer.fit()[0]
    assert abs(row["kl/ref"]) < 1e-6  # not bitwise 0: behaviour log-probs come from the sampler's cached steps
    assert row["policy/ratio_first_minibatch"] == pytest.approx(1.0, abs=1e-5)


def test_only_adapters_train_and_the_merged_model_is_the_adapted_one(tmp_path):
    trainer = build_run(compose_cfg(LORA), tmp_path)
    policy = trainer.stage.models.policy
    before = {k: v.clone() for k, v in policy.state_dict().items()}
    trainer.fit()
    after = policy.state_dict()
    changed = {k for k in before if not torch.equal(before[k], after[k])}
    assert changed and all(".lora_" in k for k in changed)
    assert {k for k, p in policy.named_parameters() if p.requires_grad} == {k for k in after if ".lora_" in k and "weight" in k}
    assert any(".lora_B." in k for k in changed)
    critic = trainer.stage.models.critic.module
    trainable = {k for k, p in critic.named_parameters() if p.requires_grad}
    assert trainable and all(".lora_" in k or ".score." in k for k in trainable)
    # final/policy: the merged model, loaded without PEFT, computes the adapted policy's logits.
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "final" / "policy", attn_implementation="eager")
    rollout = trainer.stage.collector.collect()
    inputs = sequence_inputs(rollout.prompt_ids, rollout.prompt_mask, rollout.response_ids, rollout.response_mask)
    real = rollout.response_mask.bool()
    with torch.no_grad():
        adapted, loaded = response_logits(policy, inputs, 1.0), response_logits(merged.eval(), inputs, 1.0)
    assert (adapted[real] - loaded[real]).abs().max().item() < 1e-5
    # final/policy_adapter: PEFT's own folder, on the base the run started from.
    from peft import PeftModel

    base = copy.deepcopy(policy).unload()  # the base model, adapters removed unmerged
    import warnings

    with warnings.catch_warnings():  # PEFT 0.21 reads transformers' deprecated is_gradient_checkpointing
        warnings.filterwarnings("ignore", message=".is_gradient_checkpointing. is deprecated", category=FutureWarning)
        reloaded = PeftModel.from_pretrained(base, tmp_path / "final" / "policy_adapter").eval()
    with torch.no_grad():
        again = response_logits(reloaded, inputs, 1.0)
    assert (adapted[real] - again[real]).abs().max().item() < 1e-5
    assert AutoModelForSequenceClassification.from_pretrained(tmp_path / "final" / "critic").config.num_labels == 1


def test_a_lora_run_checkpoints_its_adapters_and_resumes_exactly(tmp_path):
    reference = build_run(compose_cfg(LORA), tmp_path / "ref")
    expected = reference.fit()
    from torch.distributed.checkpoint import FileSystemReader

    saved = FileSystemReader(str(tmp_path / "ref" / "checkpoints" / "step_2" / "weights")).read_metadata().state_dict_metadata
    weights = [k for k in saved if ".model." in k or k.split(".")[1] == "model"]
    # Adapters (and the critic's score head) with their AdamW states; the frozen base comes from its own folder.
    assert weights and all(".lora_" in k or ".score." in k for k in weights), weights[:5]
    resumed = build_run(compose_cfg(LORA + [f"resume={tmp_path / 'ref' / 'checkpoints' / 'step_2'}"]), tmp_path / "resumed")
    assert comparable(resumed.fit()) == comparable(expected)
    for part in ("policy", "critic", "policy_adapter"):
        for name in ("model.safetensors", "adapter_model.safetensors"):
            path = tmp_path / "ref" / "final" / part / name
            if path.exists():
                a, b = load_file(path), load_file(tmp_path / "resumed" / "final" / part / name)
                assert all(torch.equal(a[k], b[k]) for k in a), part


def test_a_shared_head_or_a_full_critic_beside_lora(tmp_path):
    shared = build_run(compose_cfg(LORA + ["model.critic_backbone=shared", "checkpoint.every=0"]), tmp_path / "shared")
    assert shared.stage.models.critic.module.policy is shared.stage.models.policy
    assert shared.fit()[-1]["grad/critic_norm"] > 0
    full = build_run(compose_cfg(LORA + ["model.lora.critic=full", "checkpoint.every=0"]), tmp_path / "full")
    assert all(p.requires_grad for p in full.stage.models.critic.module.parameters())
    full.fit()


def test_lora_dropout_stays_off():
    from rlhand.config import ConfigError

    with pytest.raises(ConfigError, match="model.lora.dropout: must be 0: every dropout is off"):
        compose_cfg(["model.lora.enabled=true", "model.lora.dropout=0.05"])


@pytest.mark.parametrize("critic_backbone", ["separate", "shared"])
def test_gradient_checkpointing_gives_the_plain_gradients(critic_backbone, monkeypatch):
    from transformers.models.gpt2 import modeling_gpt2

    from tests.helpers import tiny_models

    mlp_forward = modeling_gpt2.GPT2MLP.forward

    results = []
    for checkpointing in (False, True):
        models, _ = tiny_models(critic_backbone=critic_backbone, gradient_checkpointing=checkpointing)
        _, _, rollout = make_rollout()
        algo = AlgoConfig(name="t", rollout_batch_size=8, num_minibatches=1, grad_accum_steps=2, ent_coef=0.01, max_grad_norm=None)
        rollout, _ = assign_advantages(rollout, algo, kl_coef=0.05)
        update = make_update(models, algo)
        calls = []
        # The blocks' MLPs run once per micro-batch, and once more in the backward when checkpointed.
        monkeypatch.setattr(modeling_gpt2.GPT2MLP, "forward", lambda self, *a, **k: calls.append(1) or mlp_forward(self, *a, **k))
        update.minibatch_step(rollout, kl_coef=0.05, temperature=0.7)
        monkeypatch.setattr(modeling_gpt2.GPT2MLP, "forward", mlp_forward)
        assert not models.policy.training  # eval mode (the sampler's cache) is back after the step
        # 2 layers x 2 micro-batches x (policy + a separate critic's backbone), doubled by recomputation.
        forwards = 2 * 2 * (2 if critic_backbone == "separate" else 1)
        assert len(calls) == (2 * forwards if checkpointing else forwards)
        results.append([p.grad.clone() for m in (models.policy, models.critic.module) for p in m.parameters() if p.grad is not None])
    plain, checkpointed = results
    assert len(plain) == len(checkpointed)
    assert max((a - b).abs().max().item() for a, b in zip(plain, checkpointed)) < 1e-6


def test_frozen_models_in_bf16(tmp_path):
    trainer = build_run(compose_cfg(FAST + ["model.frozen_dtype=bfloat16", "reward=model", "trainer.max_steps=1"]), tmp_path)
    assert {p.dtype for p in trainer.stage.models.ref.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in trainer.stage.models.reward_model.parameters()} == {torch.bfloat16}
    assert {p.dtype for p in trainer.stage.models.policy.parameters()} == {torch.float32}
    assert torch.isfinite(torch.tensor(trainer.fit()[0]["kl/ref"]))
    assert read_metrics(tmp_path / "logs" / "metrics.jsonl")[0]["step"] == 1


@pytest.mark.parametrize("critic", ["lora", "shared"])
def test_frozen_dtype_applies_to_the_bases_under_lora(tmp_path, critic):
    """model.frozen_dtype under LoRA: the policy's and critic's frozen bases (and so the reference,
    the base with adapters off) in bf16, the adapters and a trained head in model.dtype; the run
    trains and final/policy is the merged model in model.dtype."""
    extra = ["model.critic_backbone=shared"] if critic == "shared" else []
    trainer = build_run(compose_cfg(LORA + ["model.frozen_dtype=bfloat16", "checkpoint.every=0", *extra]), tmp_path)
    for model in (trainer.stage.models.policy, trainer.stage.models.critic.module):
        for name, param in model.named_parameters():
            assert param.dtype == (torch.float32 if param.requires_grad else torch.bfloat16), name
    history = trainer.fit()
    assert all(torch.isfinite(torch.tensor(row["loss/total"])) for row in history)
    assert history[0]["policy/ratio_first_minibatch"] == pytest.approx(1.0, abs=0.02)  # bf16 rounding, sampler vs update
    merged = AutoModelForCausalLM.from_pretrained(tmp_path / "final" / "policy")
    assert {p.dtype for p in merged.parameters()} == {torch.float32}
