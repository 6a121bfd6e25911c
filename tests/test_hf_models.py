"""model=hf: the real from_pretrained path, on tiny models saved to a temp dir."""

import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

from rlhand.data.tokenizer import build_char_tokenizer
from rlhand.models.forward import sequence_inputs, sequence_scores, token_values
from rlhand.trainer.loop import Trainer
from tests.conftest import FAST, compose_cfg


@pytest.fixture(scope="module")
def saved_models(tmp_path_factory):
    root = tmp_path_factory.mktemp("hf")
    tok = build_char_tokenizer()
    cfg = dict(vocab_size=len(tok), n_positions=64, n_embd=32, n_layer=2, n_head=4, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id)
    torch.manual_seed(0)
    GPT2LMHeadModel(GPT2Config(**cfg)).save_pretrained(root / "policy")
    GPT2ForSequenceClassification(GPT2Config(**cfg, num_labels=1)).save_pretrained(root / "rm")
    for name in ("policy", "rm"):
        tok.save_pretrained(root / name)
    return root


def hf_overrides(root, *extra):
    return FAST + ["model=hf", f"model.policy={root / 'policy'}", "trainer.save_final=false", *extra]


def test_policy_from_path_with_function_reward(saved_models, tmp_path):
    trainer = Trainer(compose_cfg(hf_overrides(saved_models)), tmp_path)
    assert trainer.models.policy.config.n_embd == 32
    history = trainer.fit()
    assert history[0]["policy/ratio_first_minibatch"] == pytest.approx(1.0, abs=1e-5)


def test_reward_model_and_critic_initialised_from_it(saved_models, tmp_path):
    overrides = hf_overrides(saved_models, "reward=model", f"model.reward_model={saved_models / 'rm'}", "model.critic_init=reward_model")
    trainer = Trainer(compose_cfg(overrides), tmp_path)
    rollout = trainer.collect()
    inputs = sequence_inputs(rollout.prompt_ids, rollout.prompt_mask, rollout.response_ids, rollout.response_mask)
    last = rollout.response_mask.sum(dim=1) - 1
    # critic_init=reward_model: the critic starts as a copy of the RM, so both heads read at the
    # last real token give the same number, and that number is the rollout's score.
    with torch.no_grad():
        rm_scores = sequence_scores(trainer.models.reward_model, inputs, last)
        critic_at_last = sequence_scores(trainer.models.critic, inputs, last)
    assert torch.allclose(rm_scores, critic_at_last, atol=1e-6)
    assert torch.allclose(rollout.raw_scores, rm_scores, atol=1e-5)
    assert not any(p.requires_grad for p in trainer.models.reward_model.parameters())
    assert token_values(trainer.models.critic, inputs).shape == rollout.response_ids.shape
    trainer.fit()


def test_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(OSError):
        Trainer(compose_cfg(FAST + ["model=hf", f"model.policy={tmp_path / 'missing'}"]), tmp_path)


def test_shared_critic_on_a_loaded_policy(saved_models, tmp_path):
    trainer = Trainer(compose_cfg(hf_overrides(saved_models, "model.critic_backbone=shared", "replay=standard", "replay.min_size=8")), tmp_path)
    assert trainer.models.critic.score.in_features == 32  # the loaded policy's hidden size
    history = trainer.fit()
    assert history[0]["policy/ratio_first_minibatch"] == pytest.approx(1.0, abs=1e-5)
    assert history[-1]["replay/sampled"] > 0  # the replay recompute runs through the shared head too
