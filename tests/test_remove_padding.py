"""model.remove_padding: forwards on the real tokens only give the padded forwards' results."""

import json

import pytest
import torch

from rlhand.config import ConfigError
from rlhand.models import forward, unpadded
from rlhand.models.critic import policy_and_values
from rlhand.models.forward import response_logits, sequence_inputs, sequence_scores, token_values
from rlhand.reporting.metrics_file import read_metrics
from rlhand.rollout.sampler import sample_responses
from rlhand.stages import build_run
from tests.conftest import FAST, compose_cfg
from tests.helpers import prompt_batch, tiny_models


def padded_and_packed(attn="eager", **kwargs):
    """The same tiny models twice: plain padded forwards, and marked for packing."""
    models, tokenizer = tiny_models(need_reward_model=True, remove_padding=False, attn_implementation=attn, **kwargs)
    packed, _ = tiny_models(need_reward_model=True, remove_padding=True, attn_implementation=attn, **kwargs)
    for plain, fast in zip(models.modules(), packed.modules()):
        fast.load_state_dict(plain.state_dict())
    return models, packed, tokenizer


def batch(models, tokenizer):
    """Left-padded prompts of different lengths and responses cut at different EOS positions."""
    ids, mask = prompt_batch(tokenizer)
    torch.manual_seed(3)
    samples = sample_responses(
        models.policy, ids, mask, max_new_tokens=9, temperature=1.0, top_k=0, top_p=1.0,
        eos_ids=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id,
    )
    response_ids, response_mask = samples.response_ids.clone(), samples.response_mask.clone()
    response_ids[0, 3], response_mask[0, 4:] = tokenizer.eos_token_id, 0  # one response ends early
    response_ids[0, 4:] = tokenizer.pad_token_id
    assert (mask == 0).any() and (response_mask == 0).any() and response_mask[1:].all()
    return sequence_inputs(ids, mask, response_ids, response_mask), response_mask.bool()


@pytest.mark.parametrize("attn", ["eager", "sdpa"])
def test_packed_forwards_equal_the_padded_ones_at_every_real_position(attn):
    models, packed, tokenizer = padded_and_packed(attn)
    inputs, real = batch(models, tokenizer)
    last = real.sum(dim=1) - 1
    with torch.no_grad():
        pairs = [
            (response_logits(models.policy, inputs, 0.7), response_logits(packed.policy, inputs, 0.7)),
            (response_logits(models.ref, inputs, 0.7), response_logits(packed.ref, inputs, 0.7)),
            (token_values(models.critic.module, inputs), token_values(packed.critic.module, inputs)),
        ]
        scores = sequence_scores(models.reward_model, inputs, last), sequence_scores(packed.reward_model, inputs, last)
    for plain, fast in pairs:
        torch.testing.assert_close(fast[real], plain[real], rtol=0, atol=1e-5)
        assert fast[~real].abs().max() == 0  # padding positions are never computed
    torch.testing.assert_close(scores[1], scores[0], rtol=0, atol=1e-5)
    assert unpadded.base_attention(packed.policy) == attn  # the model's own attention underneath


def test_packed_gradients_equal_the_padded_ones():
    models, packed, tokenizer = padded_and_packed()
    inputs, real = batch(models, tokenizer)
    for m in (models, packed):
        out, values = policy_and_values(m.policy, m.critic, inputs, 1.0)
        (out.logprobs[real].mean() + values[real].pow(2).mean()).backward()
    for plain, fast in ((models.policy, packed.policy), (models.critic.module, packed.critic.module)):
        for (name, a), b in zip(plain.named_parameters(), fast.parameters()):
            torch.testing.assert_close(b.grad, a.grad, rtol=1e-4, atol=1e-6, msg=name)


def test_shared_head_reads_the_packed_hidden_states():
    models, packed, tokenizer = padded_and_packed(critic_backbone="shared")
    packed.critic.module.load_state_dict(models.critic.module.state_dict())
    inputs, real = batch(models, tokenizer)
    with torch.no_grad():
        (plain, plain_values), (out, values) = (
            policy_and_values(m.policy, m.critic, inputs, 1.0) for m in (models, packed)
        )
    torch.testing.assert_close(out.logprobs[real], plain.logprobs[real], rtol=0, atol=1e-5)
    torch.testing.assert_close(values[real], plain_values[real], rtol=0, atol=1e-6)


def test_a_batch_without_padding_takes_the_plain_forward():
    _, packed, tokenizer = padded_and_packed()
    ids = torch.tensor([tokenizer("ab=")["input_ids"]] * 2)
    inputs = sequence_inputs(ids, torch.ones_like(ids), ids, torch.ones_like(ids))
    packings = []
    original = unpadded.Packing.from_mask
    unpadded.Packing.from_mask = classmethod(lambda cls, mask: packings.append(1) or original(mask))
    try:
        response_logits(packed.policy, inputs, 1.0)
    finally:
        unpadded.Packing.from_mask = original
    assert packings == []


def test_training_with_and_without_padding_removal_logs_the_same_run(tmp_path, monkeypatch):
    packed_forwards = []
    original = forward.packed_attention

    def counted(*args):
        packed_forwards.append(1)
        return original(*args)

    monkeypatch.setattr(forward, "packed_attention", counted)
    # Prompts of different lengths: every batch has left padding to remove, whatever is sampled.
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(json.dumps({"prompt": "abcdefgh"[: 1 + i % 8] + "="}) + "\n" for i in range(32)))
    runs = {}
    for flag in ("true", "false"):
        overrides = FAST + ["task=file", f"task.path={prompts}", "reward=letters", f"model.remove_padding={flag}"]
        build_run(compose_cfg(overrides), tmp_path / flag).fit()
        runs[flag] = read_metrics(tmp_path / flag / "logs" / "metrics.jsonl")
        if flag == "true":
            assert len(packed_forwards) > 8  # rollout scoring and every update minibatch ran packed
    assert len(runs["true"]) == len(runs["false"]) == 2
    for on, off in zip(runs["true"], runs["false"]):
        for key in ("reward/mean", "loss/policy", "loss/value", "kl/ref", "value/explained_variance", "policy/ratio"):
            assert on[key] == pytest.approx(off[key], rel=1e-4, abs=1e-6), key


def test_a_model_that_bypasses_the_attention_interface_is_refused():
    models, _ = tiny_models(remove_padding=False)
    for block in models.policy.transformer.h:  # an attention that never asks transformers' registry
        block.attn.forward = lambda hidden_states, *args, **kwargs: (torch.zeros_like(hidden_states), None)
    with pytest.raises(ValueError, match="does not route attention through transformers' AttentionInterface"):
        unpadded.enable(models.policy)


def test_a_sliding_window_model_is_refused():
    models, _ = tiny_models(remove_padding=False)
    models.policy.config.sliding_window = 4  # its mask would differ from the causal one rebuilt here
    with pytest.raises(ValueError, match="model.remove_padding: gpt2 uses sliding-window attention"):
        unpadded.enable(models.policy)


def test_unsupported_attention_is_a_config_error():
    with pytest.raises(ConfigError, match="model.remove_padding"):
        compose_cfg(FAST + ["model.attn_implementation=flash_attention_2"])
    compose_cfg(FAST + ["model.attn_implementation=flash_attention_2", "model.remove_padding=false"])


def test_the_packed_row_holds_every_real_token_and_rounds_up_with_pads():
    mask = torch.tensor([[0, 1, 1, 1, 0], [1, 1, 0, 0, 0], [1, 1, 1, 1, 1]])
    packing = unpadded.Packing.from_mask(mask)
    real = mask.flatten().nonzero().squeeze(1)
    assert len(packing.rows) == min(len(real) + (-len(real) % unpadded.ROW_MULTIPLE), mask.numel())
    assert set(real.tolist()) <= set(packing.rows.tolist())
    assert torch.equal(packing.rows[packing.slot[mask.bool()]], real)  # slot finds each real token
    seen, real = packing.mask[:, 0], mask.bool()  # (B, query, key)
    both_real = real[:, :, None] & real[:, None, :]
    causal = torch.ones(5, 5, dtype=torch.bool).tril()
    assert torch.equal(seen & both_real, causal & both_real)  # real tokens: plain causal attention
    assert not (seen & real[:, :, None] & ~real[:, None, :]).any()  # and never a pad, rounding pads included
