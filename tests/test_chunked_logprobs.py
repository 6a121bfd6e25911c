"""The output layer a chunk of positions at a time, and scoring in micro-batches, give what the
whole-logits, whole-batch computation gives, with and without padding-free packing, LoRA and a
shared critic, on GPT-2 and on a real architecture (Qwen2: GQA, tied embeddings, a 32,000-token
vocabulary): log-probs, entropies and values to 1e-6; every gradient to 2e-6 of its largest entry.

The gradients are float32 sums in different orders, and each path is itself that far from the
same network computed in float64 (measured on this test's Qwen2: 0.9-1.0e-6 of scale without LoRA,
2.2-2.3e-6 with it, for both paths alike; the two differ by 1.0e-6 at most)."""

import pytest
import torch

from rlhand.config.schema import CriticBackbone, GenerationConfig, LoraSettings, ModelConfig, ModelSource
from rlhand.core.losses import entropy_from_logits
from rlhand.models.build import build_models
from rlhand.models.critic import policy_and_values
from rlhand.models.forward import ForwardLimits, policy_forward, response_logits, sequence_inputs, token_logprobs
from rlhand.models.scoring import in_parts, rows_per_part
from rlhand.reporting.timer import PhaseTimer
from rlhand.rewards import ModelScorer
from rlhand.rollout.collect import collect_rollout
from rlhand.rollout.sampler import sample_responses
from tests.helpers import plan_for
from tests.real_shape import QWEN2_SMALL, build_tokenizer, write_model_folder


@pytest.fixture(scope="module")
def qwen_folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("qwen-small")
    policy = write_model_folder(root / "policy", QWEN2_SMALL, dtype=torch.float32)
    reward = write_model_folder(root / "rm", QWEN2_SMALL, reward_model=True, dtype=torch.float32, seed=1)
    return policy, reward


def qwen_models(folders, *, remove_padding=True, lora=False, critic_backbone="separate", need_reward_model=False):
    policy, reward = folders
    cfg = ModelConfig(
        name="hf", source=ModelSource.hf, policy=str(policy), reward_model=str(reward), critic_init="policy",
        critic_backbone=CriticBackbone(critic_backbone), remove_padding=remove_padding, attn_implementation="sdpa",
        lora=LoraSettings(enabled=lora, rank=4),
    )
    tokenizer = build_tokenizer()
    torch.manual_seed(0)
    models = build_models(cfg, tokenizer, plan_for(cfg, True, need_reward_model), torch.device("cpu"))
    if lora:  # adapters that do something (PEFT starts B at 0)
        with torch.no_grad():
            for name, p in models.policy.named_parameters():
                if "lora_B" in name:
                    p.normal_(std=0.05)
    return models, tokenizer


def batch(models, tokenizer, texts=("hello world =", "a b c d e f g =", "xyz =", "one two three four ="), new_tokens=24):
    """Left-padded prompts of four lengths and 24 sampled tokens each (a random 32,000-token model
    does not sample its EOS): 96 positions predict a response token."""
    from rlhand.data.sampler import left_pad

    ids, mask = left_pad([tokenizer(t)["input_ids"] for t in texts], tokenizer.pad_token_id)
    torch.manual_seed(3)
    samples = sample_responses(models.policy, ids, mask, max_new_tokens=new_tokens, temperature=1.0, top_k=0, top_p=1.0, eos_ids=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id)
    assert (mask == 0).any() and samples.response_mask.all()
    return sequence_inputs(ids, mask, samples.response_ids, samples.response_mask), samples.response_mask.bool()


def grads(model):
    return {name: p.grad.clone() for name, p in model.named_parameters() if p.grad is not None}


def forward_and_backward(models, inputs, real, chunk_bytes):
    for module in models.modules():
        module.zero_grad(set_to_none=True)
    out, values = policy_and_values(models.policy, models.critic, inputs, 0.7, entropy=True, chunk_bytes=chunk_bytes)
    weights = torch.linspace(-1, 1, real.numel()).view_as(real)
    (out.logprobs * weights)[real].sum().backward(retain_graph=True)
    policy_grads = grads(models.policy)
    entropy = out.entropy
    return out.logprobs.detach(), entropy.detach(), values.detach(), policy_grads


@pytest.mark.parametrize("remove_padding", [True, False])
@pytest.mark.parametrize("variant", ["plain", "lora", "shared"])
def test_qwen2_chunked_equals_whole(qwen_folders, remove_padding, variant):
    models, tokenizer = qwen_models(
        qwen_folders, remove_padding=remove_padding, lora=variant == "lora", critic_backbone="shared" if variant == "shared" else "separate"
    )
    inputs, real = batch(models, tokenizer)
    # Packed: 3 chunks of the 96 real positions; padded: 4 chunks of 25 (the output layer also sees
    # the position after each response). Chunks of 16 rows or more: with fewer (9 here), BLAS takes
    # a kernel that sums the 32,000-long products of the backward less accurately (~4e-6 of scale).
    rows = 32 if remove_padding else 25
    chunk_bytes = rows * 4 * QWEN2_SMALL["vocab_size"]
    whole = forward_and_backward(models, inputs, real, None)
    chunked = forward_and_backward(models, inputs, real, chunk_bytes)
    for a, b in zip(chunked[:3], whole[:3]):
        torch.testing.assert_close(a[real], b[real], rtol=0, atol=1e-6)
    assert whole[3], "no gradient reached the policy"
    for name, want in whole[3].items():
        torch.testing.assert_close(chunked[3][name], want, rtol=0, atol=2e-6 * want.abs().max().item(), msg=name)
    # and the whole-logits path is the model's own logits
    expected = token_logprobs(response_logits(models.policy, inputs, 0.7), inputs.input_ids[:, inputs.prompt_len :])
    torch.testing.assert_close(whole[0][real], expected[real].detach(), rtol=0, atol=1e-5)


def test_entropy_gradient_chunked_equals_whole_on_gpt2():
    from tests.helpers import prompt_batch, tiny_models

    models, tokenizer = tiny_models()
    ids, mask = prompt_batch(tokenizer)
    samples = sample_responses(models.policy, ids, mask, max_new_tokens=6, temperature=1.0, top_k=0, top_p=1.0, eos_ids=1, pad_id=0)
    inputs = sequence_inputs(ids, mask, samples.response_ids, samples.response_mask)
    real = samples.response_mask.bool()
    results = []
    for chunk_bytes in (None, 16 * 4 * len(tokenizer)):
        models.policy.zero_grad(set_to_none=True)
        out = policy_forward(models.policy, inputs, 0.9, entropy=True, entropy_grad=True, chunk_bytes=chunk_bytes)
        (out.entropy[real].sum() - out.logprobs[real].sum()).backward()
        results.append((out.entropy.detach(), grads(models.policy)))
    logits = response_logits(models.policy, inputs, 0.9)
    torch.testing.assert_close(results[0][0][real], entropy_from_logits(logits)[real].detach(), rtol=0, atol=1e-6)
    torch.testing.assert_close(results[1][0][real], results[0][0][real], rtol=0, atol=1e-6)
    for name, want in results[0][1].items():
        torch.testing.assert_close(results[1][1][name], want, rtol=0, atol=2e-6 * want.abs().max().item(), msg=name)


def test_rows_per_part():
    assert rows_per_part(64, 512, 16384) == 32
    assert rows_per_part(64, 512, None) == 64
    assert rows_per_part(64, 100_000, 16384) == 1  # never 0 rows
    assert rows_per_part(3, 10, 16384) == 3


def test_in_parts_concatenates_rows_in_order():
    ids = torch.arange(40).view(10, 4)
    inputs = sequence_inputs(ids[:, :2], torch.ones(10, 2, dtype=torch.long), ids[:, 2:], torch.ones(10, 2, dtype=torch.long))
    seen = []

    def fn(part):
        seen.append(part.input_ids.shape[0])
        return part.input_ids[:, 0].clone(), None

    first, second = in_parts(fn, inputs, max_tokens=12)  # 3 rows of 4 tokens per part
    assert seen == [3, 3, 3, 1] and torch.equal(first, ids[:, 0]) and second is None


def test_scoring_in_micro_batches_equals_the_whole_batch(qwen_folders):
    models, tokenizer = qwen_models(qwen_folders, need_reward_model=True)
    from rlhand.data.sampler import left_pad

    ids, mask = left_pad([tokenizer(t)["input_ids"] for t in ("one two =", "three =", "four five six =", "seven =")], tokenizer.pad_token_id)
    gen = GenerationConfig(max_new_tokens=6)
    rollouts = []
    for limits in (ForwardLimits(), ForwardLimits(logit_chunk_bytes=4 * 4 * QWEN2_SMALL["vocab_size"], score_max_tokens=20)):
        models.limits = limits
        torch.manual_seed(5)
        scorer = ModelScorer(models.reward_model, limits.score_max_tokens)
        rollouts.append(collect_rollout(models, scorer, ids, mask, gen, eos_ids=tokenizer.eos_token_id, pad_id=tokenizer.pad_token_id, timer=PhaseTimer(torch.device("cpu"))))
    whole, parts = rollouts
    assert torch.equal(whole.response_ids, parts.response_ids)
    real = whole.response_mask.bool()
    for name in ("ref_logprobs", "values"):
        torch.testing.assert_close(getattr(parts, name)[real], getattr(whole, name)[real], rtol=0, atol=1e-6, msg=name)
    torch.testing.assert_close(parts.raw_scores, whole.raw_scores, rtol=0, atol=1e-6)
