"""A reward model with a tokenizer of its own scores the text, not the policy's ids
(rlhand/rewards/retokenize.py); with the policy's tokenizer the ids go straight through."""

import random

import pytest
import torch
from transformers import GPT2Config, GPT2ForSequenceClassification, GPT2LMHeadModel, PreTrainedTokenizerFast

from rlhand.config.load import ConfigError
from rlhand.data.tokenizer import CHARS, SPECIAL_TOKENS, build_char_tokenizer, char_tokenizer
from rlhand.rewards.model import ModelScorer
from rlhand.rewards.retokenize import RetokenizingScorer, same_tokenizer
from rlhand.stages import build_run
from tests.conftest import compose_cfg


def shuffled_char_tokenizer(seed=0) -> PreTrainedTokenizerFast:
    """One token per character as the built-in tokenizer, with other ids: the same text, other ids."""
    tokens = list(SPECIAL_TOKENS.values()) + CHARS
    random.Random(seed).shuffle(tokens)
    return char_tokenizer(tokens)


def reward_model(tokenizer):
    torch.manual_seed(0)
    config = GPT2Config(vocab_size=len(tokenizer), n_embd=32, n_layer=1, n_head=2, num_labels=1, pad_token_id=tokenizer.pad_token_id)
    return GPT2ForSequenceClassification(config).eval()


def score_of_text(model, tokenizer, text):
    ids = tokenizer(text)["input_ids"] + [tokenizer.eos_token_id]
    with torch.no_grad():
        return model(input_ids=torch.tensor([ids])).logits[0, 0].item()


def policy_batch(tokenizer, prompt, response):
    prompt_ids = torch.tensor([tokenizer(prompt)["input_ids"]])
    response_ids = torch.tensor([tokenizer(response, add_special_tokens=False)["input_ids"] + [tokenizer.eos_token_id]])
    return prompt_ids, torch.ones_like(prompt_ids), response_ids, torch.ones_like(response_ids), torch.tensor([True])


def test_both_paths_give_the_score_of_the_text():
    policy_tok, own_tok = build_char_tokenizer(), shuffled_char_tokenizer()
    assert same_tokenizer(policy_tok, build_char_tokenizer()) and not same_tokenizer(policy_tok, own_tok)
    batch = policy_batch(policy_tok, "qbkx=", "kbq")
    # Its own tokenizer: decoded, tokenized again, scored.
    own = reward_model(own_tok)
    expected = score_of_text(own, own_tok, "qbkx=kbq")
    assert RetokenizingScorer(own, policy_tok, own_tok, chat_template=False)(*batch).item() == pytest.approx(expected, abs=1e-5)
    # What the ids alone would give: another number (the silent path this replaces).
    assert abs(ModelScorer(own)(*batch).item() - expected) > 1e-3
    # The policy's tokenizer: the ids straight through are the text's.
    shared = reward_model(policy_tok)
    assert ModelScorer(shared)(*batch).item() == pytest.approx(score_of_text(shared, policy_tok, "qbkx=kbq"), abs=1e-5)


def save_folders(tmp_path, chat_template=None):
    policy_tok, own_tok = build_char_tokenizer(), shuffled_char_tokenizer()
    policy = GPT2LMHeadModel(GPT2Config(vocab_size=len(policy_tok), n_embd=32, n_layer=1, n_head=2, n_positions=128))
    policy.save_pretrained(tmp_path / "policy")
    policy_tok.save_pretrained(tmp_path / "policy")
    if chat_template:
        own_tok.chat_template = chat_template
    reward_model(own_tok).save_pretrained(tmp_path / "rm")
    own_tok.save_pretrained(tmp_path / "rm")
    return ["model=hf", f"model.policy={tmp_path / 'policy'}", "reward=model", f"model.reward_model={tmp_path / 'rm'}", "logging=plain", "trainer.max_steps=1",
            "algo.rollout_batch_size=8", "algo.num_minibatches=1", "generation.max_new_tokens=4"]  # fmt: skip


def test_a_run_with_a_reward_model_of_another_tokenizer_scores_texts_and_says_so(tmp_path):
    run = build_run(compose_cfg(save_folders(tmp_path)), tmp_path / "run")
    assert isinstance(run.stage.normalizer.inner, RetokenizingScorer) and not run.stage.normalizer.inner.chat_template
    assert "texts tokenized again for the reward model" in run.stage.describe()
    run.fit()


def test_the_reward_model_s_chat_template_renders_the_exchange(tmp_path):
    template = "{% for m in messages %}{{ m['role'][0] }}:{{ m['content'] }};{% endfor %}"
    overrides = save_folders(tmp_path, chat_template=template)
    scorer = build_run(compose_cfg(overrides), tmp_path / "run").stage.normalizer.inner
    assert scorer.chat_template
    assert scorer.texts(*policy_batch(scorer.policy_tokenizer, "ab=", "ba")) == ["u:ab=;a:ba;"]
    assert not build_run(compose_cfg(overrides + ["reward.chat_template=off"]), tmp_path / "run2").stage.normalizer.inner.chat_template


def test_chat_template_on_without_one_is_one_line(tmp_path):
    with pytest.raises(ConfigError, match=r"^reward.chat_template: on, but .*rm's tokenizer has no chat template$"):
        build_run(compose_cfg(save_folders(tmp_path) + ["reward.chat_template=on"]), tmp_path / "run")
