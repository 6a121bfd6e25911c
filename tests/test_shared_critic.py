"""model.critic_backbone=shared: a value head on the policy's backbone, one forward for both losses."""

import pytest
import torch
from hydra.errors import ConfigCompositionException
from safetensors.torch import load_file

from rlhand.config import ConfigError
from rlhand.errors import ModelLoadError
from rlhand.models.critic import policy_and_values
from rlhand.models.folders import load_weights
from rlhand.models.forward import response_logits, sequence_inputs, token_logprobs
from rlhand.models.value_head import WEIGHTS_FILE, SharedValueHead
from rlhand.reporting.metrics_file import read_metrics
from rlhand.rollout.sampler import sample_responses
from rlhand.stages import build_run
from rlhand.stages.ppo.setup import build_learners
from tests.conftest import FAST, compose_cfg
from tests.helpers import prompt_batch, tiny_models


def sampled_inputs(models, tokenizer, value_head=None):
    ids, mask = prompt_batch(tokenizer)
    torch.manual_seed(1)
    samples = sample_responses(
        models.policy, ids, mask, max_new_tokens=7, temperature=1.0, top_k=0, top_p=1.0,
        eos_ids=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id, value_head=value_head,
    )
    return samples, sequence_inputs(ids, mask, samples.response_ids, samples.response_mask)


def test_the_shared_critic_owns_only_its_head():
    models, _ = tiny_models(critic_backbone="shared")
    assert isinstance(models.critic.module, SharedValueHead) and models.critic.module.policy is models.policy
    assert [name for name, _ in models.critic.module.named_parameters()] == ["score.weight"]
    learners = build_learners(compose_cfg(FAST + ["model.critic_backbone=shared"]), models)
    critic_params = learners.critic.optimizer.param_groups[0]["params"]
    assert len(critic_params) == 1 and critic_params[0] is models.critic.module.score.weight
    policy_ids = {id(p) for p in learners.policy.optimizer.param_groups[0]["params"]}
    assert policy_ids == {id(p) for p in models.policy.parameters()}


def test_one_forward_gives_the_policy_logprobs_and_the_head_on_the_final_hidden_state():
    models, tokenizer = tiny_models(critic_backbone="shared")
    _, inputs = sampled_inputs(models, tokenizer)
    response = inputs.input_ids[:, inputs.prompt_len :]
    with torch.no_grad():
        out, values = policy_and_values(models.policy, models.critic, inputs, 0.7)
        expected_logprobs = token_logprobs(response_logits(models.policy, inputs, 0.7), response)
        hidden = models.policy.transformer(
            input_ids=inputs.input_ids, attention_mask=inputs.attention_mask, position_ids=inputs.position_ids
        ).last_hidden_state  # after the final layer norm
        expected_values = models.critic.module.score(hidden[:, inputs.prompt_len - 1 : -1]).squeeze(-1)
    real = inputs.attention_mask[:, inputs.prompt_len :].bool()  # padding-free forwards leave 0 after EOS
    assert torch.equal(out.logprobs[real], expected_logprobs[real])
    torch.testing.assert_close(values[real], expected_values[real], rtol=0, atol=1e-6)
    assert values.shape == inputs.input_ids[:, inputs.prompt_len :].shape and values.abs().sum() > 0


def test_the_sampler_reads_the_same_values_as_a_full_forward():
    models, tokenizer = tiny_models(critic_backbone="shared")
    samples, inputs = sampled_inputs(models, tokenizer, value_head=models.critic.module)
    with torch.no_grad():
        _, full = policy_and_values(models.policy, models.critic, inputs, 1.0)
    mask = samples.response_mask.bool()
    torch.testing.assert_close(samples.values[mask], full[mask], rtol=0, atol=1e-5)


@pytest.mark.parametrize("backbone", ["shared", "separate"])
def test_the_value_loss_reaches_the_policy_backbone_only_when_shared(backbone):
    models, tokenizer = tiny_models(critic_backbone=backbone)
    _, inputs = sampled_inputs(models, tokenizer)
    _, values = policy_and_values(models.policy, models.critic, inputs, 1.0)
    values.pow(2).sum().backward()
    backbone_grads = [p.grad for p in models.policy.transformer.parameters()]
    if backbone == "shared":
        assert all(g is not None for g in backbone_grads) and sum(g.abs().sum() for g in backbone_grads) > 0
    else:
        assert all(g is None for g in backbone_grads)
    assert models.critic.module.score.weight.grad.abs().sum() > 0


SHARED = FAST + ["model.critic_backbone=shared", "trainer.max_steps=3", "checkpoint.every=1", "trainer.threads=1"]


def test_a_shared_critic_run_saves_its_head_and_resumes_exactly(tmp_path):
    ref_dir, resumed_dir = tmp_path / "ref", tmp_path / "resumed"
    build_run(compose_cfg(SHARED), ref_dir).fit()
    head_file = ref_dir / "final" / "critic" / WEIGHTS_FILE
    assert list(load_file(head_file)) == ["score.weight"]
    models, _ = tiny_models(critic_backbone="shared")
    with pytest.raises(ModelLoadError, match=r"score.weight has shape \(1, 64\) there and \(1, 32\)"):  # another width does not fit
        load_weights(models.critic.module, ref_dir / "final" / "critic")
    resumed = build_run(compose_cfg(SHARED + [f"resume={ref_dir / 'checkpoints' / 'step_2'}"]), resumed_dir)
    assert resumed.step == 2
    resumed.fit()
    strip = lambda rows: [{k: v for k, v in r.items() if not k.startswith(("time/", "memory/"))} for r in rows]  # noqa: E731
    assert strip(read_metrics(resumed_dir / "logs" / "metrics.jsonl")) == strip(read_metrics(ref_dir / "logs" / "metrics.jsonl"))
    assert torch.equal(load_file(head_file)["score.weight"], load_file(resumed_dir / "final" / "critic" / WEIGHTS_FILE)["score.weight"])
    rows = read_metrics(ref_dir / "logs" / "metrics.jsonl")
    assert all(row["time/score_value_s"] < 0.01 for row in rows)  # values come from the sampler


def test_shared_critic_config_errors():
    with pytest.raises(ConfigError, match="model.critic:"):
        compose_cfg(["model=hf", "model.policy=x", "model.critic=y", "model.critic_backbone=shared"])
    with pytest.raises(ConfigError, match="model.critic_init"):
        compose_cfg(["model=hf", "model.policy=x", "model.critic_init=reward_model", "model.reward_model=r", "model.critic_backbone=shared"])
    with pytest.raises(ConfigCompositionException, match="model.critic_backbone=both"):
        compose_cfg(["model.critic_backbone=both"])
