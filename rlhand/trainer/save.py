"""Final models in transformers' format (safetensors), written atomically."""

import os
import shutil
from pathlib import Path

from transformers import PreTrainedTokenizerBase
from transformers.utils import logging as hf_logging

from rlhand.models.build import Models


def save_final(models: Models, tokenizer: PreTrainedTokenizerBase, target: Path) -> Path:
    """Write policy/ and critic/ (each with the tokenizer) to a temp folder, then rename it into place,
    so a crash mid-save never leaves a half-written `target` or destroys an older one."""
    hf_logging.disable_progress_bar()
    tmp = target.with_name(target.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    for name, model in (("policy", models.policy), ("critic", models.critic)):
        model.save_pretrained(tmp / name, safe_serialization=True)
        tokenizer.save_pretrained(tmp / name)
    if target.exists():
        old = target.with_name(target.name + ".old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
        os.replace(tmp, target)
        shutil.rmtree(old)
    else:
        os.replace(tmp, target)
    return target
