"""model=hf: the real from_pretrained path, on tiny models saved to a temp dir."""

import shutil

import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel

from rlhand.data.tokenizer import build_char_tokenizer
from rlhand.errors import ModelLoadError
from rlhand.models.forward import sequence_inputs, sequence_scores, token_values
from rlhand.stages import build_run
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
    trainer = build_run(compose_cfg(hf_overrides(saved_models)), tmp_path)
    assert trainer.stage.models.policy.config.n_embd == 32
    history = trainer.fit()
    assert history[0]["policy/ratio_first_minibatch"] == pytest.approx(1.0, abs=1e-5)


def test_reward_model_and_critic_initialised_from_it(saved_models, tmp_path):
    overrides = hf_overrides(saved_models, "reward=model", f"model.reward_model={saved_models / 'rm'}", "model.critic_init=reward_model")
    trainer = build_run(compose_cfg(overrides), tmp_path)
    rollout = trainer.stage.collector.collect()
    inputs = sequence_inputs(rollout.prompt_ids, rollout.prompt_mask, rollout.response_ids, rollout.response_mask)
    last = rollout.response_mask.sum(dim=1) - 1
    # critic_init=reward_model: the critic starts as a copy of the RM, so both heads read at the
    # last real token give the same number, and that number is the rollout's score.
    with torch.no_grad():
        rm_scores = sequence_scores(trainer.stage.models.reward_model, inputs, last)
        critic_at_last = sequence_scores(trainer.stage.models.critic.module, inputs, last)
    assert torch.allclose(rm_scores, critic_at_last, atol=1e-6)
    assert torch.allclose(rollout.raw_scores, rm_scores, atol=1e-5)
    assert not any(p.requires_grad for p in trainer.stage.models.reward_model.parameters())
    assert token_values(trainer.stage.models.critic.module, inputs).shape == rollout.response_ids.shape
    trainer.fit()


def broken_copy(saved_models, tmp_path, damage):
    folder = tmp_path / "policy"
    shutil.copytree(saved_models / "policy", folder)
    damage(folder)
    return folder


def truncate_weights(folder):
    with open(folder / "model.safetensors", "r+b") as handle:
        handle.truncate(handle.seek(0, 2) - 100)


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda f: shutil.rmtree(f), r"model.policy: .*/policy: no such folder"),
        (lambda f: (f / "config.json").unlink(), r"model.policy: .*/policy is not a transformers model folder \(no config.json\)"),
        (lambda f: (f / "model.safetensors").unlink(), r"model.policy: .*/policy has no weights"),
        (truncate_weights, r"model.policy: .*/policy/model.safetensors has \d+ bytes, its header describes \d+ \(truncated or damaged\)"),
        (lambda f: (f / "model.safetensors").write_bytes(b"abc"), r"model.safetensors is truncated \(3 bytes"),
        (lambda f: (f / "tokenizer.json").unlink() or (f / "tokenizer_config.json").unlink(), r"has no tokenizer files; set model.tokenizer"),
    ],
)
def test_a_broken_model_folder_is_named_before_any_model_loads(saved_models, tmp_path, monkeypatch, damage, message):
    folder = broken_copy(saved_models, tmp_path, damage)
    monkeypatch.setattr("rlhand.stages.ppo.setup.build_models", lambda *a, **k: pytest.fail("a model was built"))
    with pytest.raises(ModelLoadError, match=message) as err:
        build_run(compose_cfg(FAST + ["model=hf", f"model.policy={folder}"]), tmp_path / "run")
    assert "\n" not in str(err.value)


def test_an_unreachable_hub_id_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ModelLoadError, match=r"^model.policy: cannot load 'no-such-org/no-such-model': ") as err:
        build_run(compose_cfg(FAST + ["model=hf", "model.policy=no-such-org/no-such-model"]), tmp_path)
    assert "\n" not in str(err.value)


def test_shared_critic_on_a_loaded_policy(saved_models, tmp_path):
    trainer = build_run(compose_cfg(hf_overrides(saved_models, "model.critic_backbone=shared", "replay=standard", "replay.min_size=8")), tmp_path)
    assert trainer.stage.models.critic.module.score.in_features == 32  # the loaded policy's hidden size
    history = trainer.fit()
    assert history[0]["policy/ratio_first_minibatch"] == pytest.approx(1.0, abs=1e-5)
    assert history[-1]["replay/sampled"] > 0  # the replay recompute runs through the shared head too


def test_a_causal_lm_given_as_the_reward_model_is_named_as_one(saved_models, tmp_path, monkeypatch):
    monkeypatch.setattr("rlhand.stages.ppo.setup.build_models", lambda *a, **k: pytest.fail("a model was built"))
    overrides = hf_overrides(saved_models, "reward=model", f"model.reward_model={saved_models / 'policy'}", "model.critic_init=policy")
    with pytest.raises(ModelLoadError, match=r"^model.reward_model: .*/policy is a GPT2LMHeadModel, not a sequence classifier: a reward model is a \*ForSequenceClassification folder with num_labels=1$"):
        build_run(compose_cfg(overrides), tmp_path)


def test_lora_target_modules_are_checked_against_the_model_before_it_loads(tmp_path, monkeypatch):
    from rlhand.errors import UserError

    monkeypatch.setattr("rlhand.stages.ppo.setup.build_models", lambda *a, **k: pytest.fail("a model was built"))
    with pytest.raises(UserError, match=r"^model.lora.target_modules: GPT2LMHeadModel has no module named 'no_such_module'; its linear layers are named c_attn, c_fc, c_proj, lm_head$"):
        build_run(compose_cfg(FAST + ["model.lora.enabled=true", "model.lora.target_modules=[no_such_module,c_attn]"]), tmp_path)
