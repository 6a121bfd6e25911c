"""Tiny models and batches for tests: built from a config, nothing downloaded."""

import torch

from rlhand.config.schema import CriticBackbone, ModelConfig
from rlhand.data.sampler import left_pad
from rlhand.data.tokenizer import build_char_tokenizer
from rlhand.models.build import build_models


def tiny_models(need_ref=True, need_reward_model=False, seed=0, critic_backbone="separate", **model_fields):
    torch.manual_seed(seed)
    tokenizer = build_char_tokenizer()
    cfg = ModelConfig(
        name="tiny", n_layer=2, n_embd=32, n_head=4, n_positions=64, critic_backbone=CriticBackbone(critic_backbone), **model_fields
    )
    models = build_models(cfg, tokenizer, need_ref=need_ref, need_reward_model=need_reward_model, device=torch.device("cpu"))
    return models, tokenizer


def prompt_batch(tokenizer, texts=("abc=", "hello world=", "xy=")):
    return left_pad([tokenizer(t)["input_ids"] for t in texts], tokenizer.pad_token_id)
