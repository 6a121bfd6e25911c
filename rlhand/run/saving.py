"""Policy and critic in transformers' format (safetensors), written atomically (final/, best/)."""

import json
import shutil
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from rlhand.checkpoint.atomic import atomic_dir
from rlhand.distributed.context import DistContext
from rlhand.distributed.sharding import full_state_dict
from rlhand.models.build import Models
from rlhand.models.folders import save_trained_model


def save_models(models: Models, tokenizer: PreTrainedTokenizerBase, target: Path, ctx: DistContext, meta: dict | None = None) -> Path:
    """target/policy and target/critic, each with the tokenizer, so from_pretrained loads either
    (with LoRA: the merged models, and the adapters in target/policy_adapter, target/critic_adapter);
    `meta` (e.g. the step and val/reward of a best model) goes to target/meta.json. Every rank takes
    part (sharded weights are gathered); rank 0 writes."""
    policy_state = full_state_dict(models.policy, ctx)
    critic_state = full_state_dict(models.critic.module, ctx) if models.has_critic else None
    if ctx.is_main:
        with atomic_dir(target) as tmp:
            save_trained_model(models.policy, tmp / "policy", policy_state, tokenizer)
            if critic_state is not None:  # a critic-free estimator has none
                models.critic.save(tmp / "critic", tokenizer, critic_state)
            if meta is not None:
                (tmp / "meta.json").write_text(json.dumps(meta, indent=1), encoding="utf-8")
    ctx.barrier()
    return target


def adopt_best(source_run: Path, target_run: Path, best_step: int) -> bool:
    """Copy another run's best/ into this run when it is the best model of the resumed trajectory
    (saved at the step the checkpoint names as best); False if it is not there."""
    source = source_run / "best"
    try:
        meta = json.loads((source / "meta.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    if meta.get("step") != best_step:
        return False
    with atomic_dir(target_run / "best") as tmp:
        shutil.copytree(source, tmp, dirs_exist_ok=True)
    return True
